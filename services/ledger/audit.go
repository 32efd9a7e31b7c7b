package ledger

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// auditGrace is how long before the latest checkpoint a projection row
// may be and still count as not yet sealed (in flight to the ledger)
// rather than inserted.
const auditGrace = 30 * time.Second

// AuditProblem is one discrepancy found by Audit.
type AuditProblem struct {
	// What: checkpoint, root, leaf, changed, removed or inserted.
	What   string `json:"what"`
	Table  string `json:"table,omitempty"`
	ID     string `json:"id,omitempty"`
	Detail string `json:"detail"`
}

func (p AuditProblem) String() string {
	s := p.What
	if p.Table != "" {
		s += " " + p.Table
	}
	if p.ID != "" {
		s += " " + p.ID
	}
	return s + ": " + p.Detail
}

// AuditReport is the outcome of auditing one tenant's log.
type AuditReport struct {
	Tenant    string         `json:"tenant"`
	TreeSize  uint64         `json:"treeSize"`
	Events    int            `json:"eventsChecked"`
	Decisions int            `json:"decisionsChecked"`
	Pending   int            `json:"pendingRows"`
	Problems  []AuditProblem `json:"problems"`
}

// AuditOptions say what the audit trusts: the checkpoint key and the
// origin prefix of the deployment's logs.
type AuditOptions struct {
	VerifierKey string
	Origin      string
}

// AuditTenants lists the tenants that have a log.
func AuditTenants(ctx context.Context, ch driver.Conn) ([]string, error) {
	rows, err := ch.Query(ctx, "SELECT DISTINCT tenant_id FROM ledger_checkpoints ORDER BY tenant_id")
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// Audit recomputes a tenant's log from the ledger's own tables and checks
// it against the latest signed checkpoint (catching a changed, removed,
// inserted or reordered leaf), then recomputes the leaf of every row of
// the events and decisions projections and compares it with the ledger
// (catching a changed, removed or inserted row). Rows newer than the
// checkpoint, or up to auditGrace older, are counted as pending (in
// flight to the ledger), not reported.
func Audit(ctx context.Context, ch driver.Conn, tenant string, o AuditOptions) (AuditReport, error) {
	rep := AuditReport{Tenant: tenant, Problems: []AuditProblem{}}
	fail := func(what, table, id, format string, args ...any) {
		rep.Problems = append(rep.Problems, AuditProblem{What: what, Table: table, ID: id, Detail: fmt.Sprintf(format, args...)})
	}
	var size uint64
	var note string
	var atMS int64
	row := ch.QueryRow(ctx, "SELECT tree_size, note, at_ms FROM ledger_checkpoints WHERE tenant_id = ? ORDER BY tree_size DESC, version DESC LIMIT 1", tenant)
	if err := row.Scan(&size, &note, &atMS); err != nil {
		return rep, fmt.Errorf("audit %s: read checkpoint: %w", tenant, err)
	}
	cp, err := evidence.OpenCheckpoint([]byte(note), o.Origin+"/"+tenant, o.VerifierKey)
	if err != nil {
		fail("checkpoint", "ledger_checkpoints", "", "latest checkpoint does not verify: %v", err)
		return rep, nil
	}
	if cp.Size != size {
		fail("checkpoint", "ledger_checkpoints", "", "row says size %d, its signed note %d", size, cp.Size)
	}
	rep.TreeSize = cp.Size
	pendingAfter := atMS - auditGrace.Milliseconds()

	// 1. The ledger's leaves against the signed root and the level-0 tiles.
	rows, err := ch.Query(ctx, `SELECT idx, argMax(record_key, version), argMax(leaf_hash, version), argMax(canonical, version)
		FROM ledger_leaves WHERE tenant_id = ? AND idx < ? GROUP BY idx ORDER BY idx`, tenant, cp.Size)
	if err != nil {
		return rep, fmt.Errorf("audit %s: read leaves: %w", tenant, err)
	}
	rng := factory.NewEmptyRange(0)
	leafOf := map[string][]byte{} // record key → leaf hash the ledger committed
	computed := make([][]byte, 0, cp.Size)
	next := uint64(0)
	for rows.Next() {
		var idx uint64
		var key, leafHex, canon string
		if err := rows.Scan(&idx, &key, &leafHex, &canon); err != nil {
			rows.Close()
			return rep, fmt.Errorf("audit %s: read leaves: %w", tenant, err)
		}
		if idx != next {
			fail("leaf", "ledger_leaves", fmt.Sprint(next), "leaves %d..%d are missing", next, idx-1)
			next = idx
		}
		next++
		leaf := evidence.LeafHash([]byte(canon))
		if stored, _ := hex.DecodeString(leafHex); !bytes.Equal(stored, leaf) {
			fail("leaf", "ledger_leaves", fmt.Sprint(idx), "record %s: stored leaf hash %s does not match its record bytes (%s)", key, leafHex, hex.EncodeToString(leaf))
		}
		if _, err := evidence.ParseCanonical([]byte(canon)); err != nil {
			fail("leaf", "ledger_leaves", fmt.Sprint(idx), "record %s: %v", key, err)
		}
		_ = rng.Append(leaf, nil)
		computed = append(computed, leaf)
		leafOf[key] = leaf
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return rep, fmt.Errorf("audit %s: read leaves: %w", tenant, err)
	}
	if next != cp.Size {
		fail("leaf", "ledger_leaves", fmt.Sprint(next), "leaves %d..%d are missing", next, cp.Size-1)
	}
	root, _ := rng.GetRootHash(nil)
	if rng.End() == 0 {
		root = evidence.EmptyRoot()
	}
	if rng.End() != cp.Size || !bytes.Equal(root, cp.Hash) {
		fail("root", "ledger_leaves", "", "the stored leaves hash to %s over %d leaves, the signed checkpoint says %s over %d: a leaf was changed, removed, inserted or reordered",
			evidence.HashString(root), rng.End(), evidence.HashString(cp.Hash), cp.Size)
		// Point at the culprits: leaves that differ from the tiles the
		// tree was built from.
		st := store{ch: ch}
		need := map[tileID]int{}
		for t := uint64(0); t*TileWidth < uint64(len(computed)); t++ {
			need[tileID{0, t}] = TileWidth
		}
		tiles, err := st.tiles(ctx, tenant, need)
		if err == nil {
			for i, l := range computed {
				t := tiles[tileID{0, uint64(i) / TileWidth}]
				off := (i % TileWidth) * hashSize
				if off+hashSize <= len(t) && !bytes.Equal(t[off:off+hashSize], l) {
					fail("leaf", "ledger_leaves", fmt.Sprint(i), "leaf differs from the committed tree (changed or moved)")
				}
			}
		}
	}

	// 2. The projections against the ledger.
	checked := map[string]bool{}
	compare := func(table, key string, leaf []byte, newer bool) {
		checked[key] = true
		want, ok := leafOf[key]
		switch {
		case !ok && newer:
			rep.Pending++
		case !ok:
			fail("inserted", table, key, "row is not in the ledger")
		case !bytes.Equal(want, leaf):
			fail("changed", table, key, "row hashes to leaf %s, the ledger committed %s", evidence.HashString(leaf), evidence.HashString(want))
		}
	}
	erows, err := ch.Query(ctx, `SELECT event_id, agent_id, session_id, category, schema_version, source_ms, received_ms, previous_hash,
		payload, sdk, framework, agent_version, key_id FROM events FINAL WHERE tenant_id = ?`, tenant)
	if err != nil && !isMissingTable(err) {
		return rep, fmt.Errorf("audit %s: read events: %w", tenant, err)
	}
	read := map[string]bool{}
	if err == nil {
		read["events"] = true
		for erows.Next() {
			b := EventBody{Tenant: tenant}
			var payload string
			if err := erows.Scan(&b.EventID, &b.AgentID, &b.SessionID, &b.Category, &b.SchemaVersion, &b.SourceMS, &b.ReceivedMS,
				&b.PreviousHash, &payload, &b.SDK, &b.Framework, &b.AgentVersion, &b.KeyID); err != nil {
				erows.Close()
				return rep, fmt.Errorf("audit %s: read events: %w", tenant, err)
			}
			rep.Events++
			key := evidence.KindEvent + ":" + b.EventID
			b.Payload = json.RawMessage(payload)
			env, err := EventEnvelope(b)
			var canon []byte
			if err == nil {
				canon, err = env.Canonical()
			}
			if err != nil {
				checked[key] = true
				fail("changed", "events", key, "row no longer forms a record: %v", err)
				continue
			}
			compare("events", key, evidence.LeafHash(canon), b.ReceivedMS > pendingAfter)
		}
		erows.Close()
		if err := erows.Err(); err != nil {
			return rep, fmt.Errorf("audit %s: read events: %w", tenant, err)
		}
	}
	drows, err := ch.Query(ctx, `SELECT decision_id, agent_id, session_id, outcome, pack_hash, at_ms, record FROM decisions FINAL WHERE tenant_id = ?`, tenant)
	if err != nil && !isMissingTable(err) {
		return rep, fmt.Errorf("audit %s: read decisions: %w", tenant, err)
	}
	if err == nil {
		read["decisions"] = true
		for drows.Next() {
			var id, agent, session, outcome, pack, record string
			var at int64
			if err := drows.Scan(&id, &agent, &session, &outcome, &pack, &at, &record); err != nil {
				drows.Close()
				return rep, fmt.Errorf("audit %s: read decisions: %w", tenant, err)
			}
			rep.Decisions++
			key := evidence.KindDecision + ":" + id
			env, err := DecisionEnvelope(tenant, []byte(record))
			var canon []byte
			if err == nil {
				canon, err = env.Canonical()
			}
			if err != nil {
				checked[key] = true
				fail("changed", "decisions", key, "record column no longer forms a record: %v", err)
				continue
			}
			// The queried columns must say what the sealed record says.
			var d struct {
				ID      string `json:"decisionId"`
				AgentID string `json:"agentId"`
				Session string `json:"sessionId"`
				Result  struct {
					Outcome  string `json:"decision"`
					PackHash string `json:"packHash"`
				} `json:"result"`
			}
			_ = json.Unmarshal([]byte(record), &d)
			if d.ID != id || d.AgentID != agent || d.Session != session || d.Result.Outcome != outcome || d.Result.PackHash != pack {
				fail("changed", "decisions", key, "columns (outcome %q, pack %q, agent %q, session %q) differ from the sealed record", outcome, pack, agent, session)
			}
			compare("decisions", key, evidence.LeafHash(canon), at > pendingAfter)
		}
		drows.Close()
		if err := drows.Err(); err != nil {
			return rep, fmt.Errorf("audit %s: read decisions: %w", tenant, err)
		}
	}
	var removed []string
	for key := range leafOf {
		if checked[key] {
			continue
		}
		switch {
		case len(key) > len(evidence.KindEvent) && key[:len(evidence.KindEvent)+1] == evidence.KindEvent+":":
			removed = append(removed, "events\x00"+key)
		case len(key) > len(evidence.KindDecision) && key[:len(evidence.KindDecision)+1] == evidence.KindDecision+":":
			removed = append(removed, "decisions\x00"+key)
		}
	}
	sort.Strings(removed)
	for _, r := range removed {
		i := bytes.IndexByte([]byte(r), 0)
		if !read[r[:i]] {
			continue
		}
		fail("removed", r[:i], r[i+1:], "the ledger committed this record but the projection has no row")
	}
	return rep, nil
}

package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// cacheTiles keeps committed tile contents for proofs, with the upper
// nodes of complete tiles (those in uppers were computed by the appends).
func (s *Service) cacheTiles(tenant string, tiles, uppers map[tileID][]byte) {
	s.tileMu.Lock()
	defer s.tileMu.Unlock()
	if len(s.tiles)+len(tiles) > s.cfg.TileCache {
		clear(s.tiles)
	}
	for id, h := range tiles {
		if t := withUpper(h, uppers[id]); len(t) != len(h) {
			s.tiles[tenantTile{tenant, id}] = t // a copy already
		} else {
			s.tiles[tenantTile{tenant, id}] = slices.Clone(h)
		}
	}
}

// readTiles returns the tiles in need, from memory or one query. A tile
// read from ClickHouse is cut to what the committed tree of size holds,
// so nothing a crashed batch left behind is ever cached or served.
func (s *Service) readTiles(ctx context.Context, tenant string, size uint64, need map[tileID]int) (map[tileID][]byte, error) {
	out := make(map[tileID][]byte, len(need))
	miss := map[tileID]int{}
	s.tileMu.Lock()
	for id, n := range need {
		if t, ok := s.tiles[tenantTile{tenant, id}]; ok && len(t) >= n*hashSize {
			out[id] = t
		} else {
			miss[id] = n
		}
	}
	s.tileMu.Unlock()
	if len(miss) == 0 {
		return out, nil
	}
	got, err := s.store.tiles(ctx, tenant, miss)
	if err != nil {
		return nil, err
	}
	s.tileMu.Lock()
	defer s.tileMu.Unlock()
	if len(s.tiles)+len(got) > s.cfg.TileCache {
		clear(s.tiles)
	}
	for id, t := range got {
		committed := size >> (id.level * TileHeight)
		n := uint64(0)
		if committed > id.index*TileWidth {
			n = min(committed-id.index*TileWidth, TileWidth)
		}
		t = withUpper(t[:min(uint64(len(t)), n*hashSize)], nil)
		out[id] = t
		s.tiles[tenantTile{tenant, id}] = t
	}
	return out, nil
}

// proofFor builds the hashes of a proof recipe over a tree of size.
func (s *Service) proofFor(ctx context.Context, tenant string, size uint64, nodes proof.Nodes) ([][]byte, error) {
	tiles, err := s.readTiles(ctx, tenant, size, tilesFor(nodes.IDs))
	if err != nil {
		return nil, err
	}
	return buildProof(nodes, tiles)
}

// Checkpoint is a tenant's latest signed checkpoint.
type Checkpoint struct {
	Origin     string `json:"origin"`
	TreeSize   uint64 `json:"treeSize"`
	RootHash   string `json:"rootHash"`
	Checkpoint string `json:"checkpoint"`
	PublicKey  string `json:"publicKey"`
}

// LatestCheckpoint returns the tenant's latest checkpoint; a log with no
// leaves yet has size 0, the empty root and no signed note.
func (s *Service) LatestCheckpoint(ctx context.Context, tenant string) (Checkpoint, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return Checkpoint{}, chx.ReadError("ledger", err)
	}
	return Checkpoint{Origin: s.Origin(tenant), TreeSize: st.size, RootHash: evidence.HashString(st.root), Checkpoint: string(st.checkpoint), PublicKey: s.keys.VerifierKey}, nil
}

// InclusionProof proves leaf idx against the tenant's latest checkpoint.
func (s *Service) InclusionProof(ctx context.Context, tenant string, idx uint64) ([][]byte, *logState, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return nil, nil, chx.ReadError("ledger", err)
	}
	if idx >= st.size {
		return nil, st, apperr.NotFound("leaf %d is not in the log (size %d)", idx, st.size)
	}
	nodes, err := proof.Inclusion(idx, st.size)
	if err != nil {
		return nil, st, err
	}
	p, err := s.proofFor(ctx, tenant, st.size, nodes)
	if err != nil {
		return nil, st, chx.ReadError("ledger", err)
	}
	return p, st, nil
}

// Consistency is a consistency proof between two tree sizes, with the
// signed checkpoints of both sizes when they were published.
type Consistency struct {
	Origin         string   `json:"origin"`
	From           uint64   `json:"from"`
	To             uint64   `json:"to"`
	Proof          []string `json:"proof"`
	FromCheckpoint string   `json:"fromCheckpoint,omitempty"`
	ToCheckpoint   string   `json:"toCheckpoint,omitempty"`
	PublicKey      string   `json:"publicKey"`
}

// ConsistencyProof proves that the tree of size to extends the tree of
// size from. to = 0 means the latest size.
func (s *Service) ConsistencyProof(ctx context.Context, tenant string, from, to uint64) (Consistency, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return Consistency{}, chx.ReadError("ledger", err)
	}
	if to == 0 {
		to = st.size
	}
	if from > to || to > st.size {
		return Consistency{}, apperr.Validation(fmt.Sprintf("need 0 <= from <= to <= %d (the latest tree size)", st.size),
			apperr.FieldError{Path: "to", Code: "out_of_range", Message: fmt.Sprintf("from=%d to=%d, tree size %d", from, to, st.size)})
	}
	nodes, err := proof.Consistency(from, to)
	if err != nil {
		return Consistency{}, err
	}
	p, err := s.proofFor(ctx, tenant, to, nodes)
	if err != nil {
		return Consistency{}, chx.ReadError("ledger", err)
	}
	out := Consistency{Origin: s.Origin(tenant), From: from, To: to, Proof: evidence.EncodeProof(p), PublicKey: s.keys.VerifierKey}
	for _, c := range []struct {
		size uint64
		dst  *string
	}{{from, &out.FromCheckpoint}, {to, &out.ToCheckpoint}} {
		if c.size == 0 {
			continue
		}
		if c.size == st.size {
			*c.dst = string(st.checkpoint)
			continue
		}
		n, err := s.store.checkpointAt(ctx, tenant, c.size)
		if err != nil {
			return Consistency{}, chx.ReadError("ledger", err)
		}
		*c.dst = string(n)
	}
	return out, nil
}

// LineageRecord is one anchored record with its inclusion proof.
type LineageRecord struct {
	LedgerIndex uint64   `json:"ledgerIndex"`
	Kind        string   `json:"kind"`
	RecordID    string   `json:"recordId"`
	LeafHash    string   `json:"leafHash"`
	MerklePath  []string `json:"merklePath"`
}

// Lineage is the KLA audit-proof shape (lineageId, anchored, ledgerIndex,
// rootHash, merklePath) plus the leaf hash, tree size and signed
// checkpoint. For a session, the top-level proof is its first record's
// and Records proves every record.
type Lineage struct {
	LineageID string `json:"lineageId"`
	Anchored  bool   `json:"anchored"`
	// LedgerIndex and RootHash are null, not absent, while the record is
	// not anchored (KLA's shape always has them).
	LedgerIndex *uint64         `json:"ledgerIndex"`
	RootHash    *string         `json:"rootHash"`
	MerklePath  []string        `json:"merklePath"`
	LeafHash    string          `json:"leafHash,omitempty"`
	Kind        string          `json:"kind,omitempty"`
	TreeSize    uint64          `json:"treeSize"`
	Origin      string          `json:"origin"`
	Checkpoint  string          `json:"checkpoint,omitempty"`
	PublicKey   string          `json:"publicKey"`
	Records     []LineageRecord `json:"records,omitempty"`
}

// Lineage proves an event id, decision id or session id. An id the
// projections know but the log has not integrated yet is anchored:false;
// an id nobody knows is not found.
func (s *Service) Lineage(ctx context.Context, tenant, id string) (Lineage, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return Lineage{}, chx.ReadError("ledger", err)
	}
	out := Lineage{LineageID: id, MerklePath: []string{}, TreeSize: st.size, Origin: s.Origin(tenant), PublicKey: s.keys.VerifierKey}
	// A trace id is looked up after the session: a trace that is its own
	// session (no gen_ai.conversation.id) answers as the session, with
	// the verdicts on its spans; one inside a conversation as its spans.
	keys := []string{evidence.KindEvent + ":" + id, evidence.KindDecision + ":" + id, "session:" + id}
	// A record id this process knows to be committed is proven from
	// memory: its leaf index from the id index, its leaf hash and proof
	// from the tiles. An event or decision id is looked up before a
	// session in the slow path too, so the answer is the same.
	for _, k := range keys[:2] {
		idx, ok := s.ids.get(tenant, k)
		if !ok || idx >= st.size {
			continue
		}
		leaf, p, err := s.proveLeaf(ctx, tenant, st, idx)
		if err != nil {
			return out, err
		}
		kind, _, _ := strings.Cut(k, ":")
		root := evidence.HashString(st.root)
		path := evidence.EncodeProof(p)
		out.Anchored, out.RootHash, out.Checkpoint = true, &root, string(st.checkpoint)
		out.LedgerIndex, out.LeafHash, out.MerklePath, out.Kind = &idx, evidence.HashString(leaf), path, kind
		return out, nil
	}
	if isTraceID(id) {
		keys = append(keys, traceKey(id))
	}
	found, rows, err := s.store.lookup(ctx, tenant, st.size, keys)
	if err != nil {
		return out, chx.ReadError("ledger", err)
	}
	var idxs []uint64
	for _, k := range keys {
		if len(found[k]) > 0 {
			idxs = found[k]
			break
		}
	}
	if len(idxs) == 0 {
		known, err := s.known(ctx, tenant, id)
		if err != nil {
			return out, chx.ReadError("ledger", err)
		}
		if !known {
			return out, apperr.NotFound("lineage record %q not found", id)
		}
		return out, nil
	}
	recs, err := s.prove(ctx, tenant, st, idxs, rows)
	if err != nil {
		return out, err
	}
	root := evidence.HashString(st.root)
	out.Anchored, out.RootHash, out.Checkpoint = true, &root, string(st.checkpoint)
	first := recs[0]
	out.LedgerIndex, out.LeafHash, out.MerklePath, out.Kind = &first.rec.LedgerIndex, first.rec.LeafHash, first.rec.MerklePath, first.rec.Kind
	byID := len(found[evidence.KindEvent+":"+id]) > 0 || len(found[evidence.KindDecision+":"+id]) > 0
	if byID && len(recs) == 1 {
		// Verified against its leaf row by lookup: the next proof of
		// this id is served from memory.
		s.ids.add(tenant, []*leafRow{{key: first.rec.Kind + ":" + id, idx: first.rec.LedgerIndex}})
	}
	if len(recs) > 1 || !byID {
		out.Kind = "session"
		if len(found["session:"+id]) == 0 {
			out.Kind = "trace"
		}
		for _, r := range recs {
			out.Records = append(out.Records, r.rec)
		}
	}
	return out, nil
}

// Anchored reports whether an event or decision id is in the tenant's
// log under its latest checkpoint (a cheaper Lineage without the proof).
func (s *Service) Anchored(ctx context.Context, tenant, id string) (bool, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return false, err
	}
	keys := []string{evidence.KindEvent + ":" + id, evidence.KindDecision + ":" + id}
	for _, k := range keys {
		if idx, ok := s.ids.get(tenant, k); ok && idx < st.size {
			return true, nil
		}
	}
	found, _, err := s.store.lookup(ctx, tenant, st.size, keys)
	return len(found) > 0, err
}

// proveLeaf returns leaf idx's hash, read from its level-0 tile, and its
// inclusion proof against st, reading the tiles once.
func (s *Service) proveLeaf(ctx context.Context, tenant string, st *logState, idx uint64) ([]byte, [][]byte, error) {
	nodes, err := proof.Inclusion(idx, st.size)
	if err != nil {
		return nil, nil, err
	}
	leafID := compact.NewNodeID(0, idx)
	tiles, err := s.readTiles(ctx, tenant, st.size, tilesFor(append(slices.Clip(nodes.IDs), leafID)))
	if err != nil {
		return nil, nil, chx.ReadError("ledger", err)
	}
	leaf, err := nodeHash(leafID, tiles[tileID{level: 0, index: idx / TileWidth}])
	if err != nil {
		return nil, nil, chx.ReadError("ledger", err)
	}
	p, err := buildProof(nodes, tiles)
	if err != nil {
		return nil, nil, chx.ReadError("ledger", err)
	}
	return leaf, p, nil
}

type proven struct {
	rec       LineageRecord
	canonical []byte
	proof     [][]byte
}

// prove builds inclusion proofs against st for leaves idxs, whose rows
// are given.
func (s *Service) prove(ctx context.Context, tenant string, st *logState, idxs []uint64, leaves map[uint64]leafRow) ([]proven, error) {
	out := make([]proven, 0, len(idxs))
	for _, i := range idxs {
		l, ok := leaves[i]
		if !ok {
			return nil, fmt.Errorf("ledger: leaf %d of %s is missing", i, tenant)
		}
		nodes, err := proof.Inclusion(i, st.size)
		if err != nil {
			return nil, err
		}
		p, err := s.proofFor(ctx, tenant, st.size, nodes)
		if err != nil {
			return nil, chx.ReadError("ledger", err)
		}
		out = append(out, proven{
			rec:       LineageRecord{LedgerIndex: i, Kind: l.kind, RecordID: l.id, LeafHash: evidence.HashString(l.leaf), MerklePath: evidence.EncodeProof(p)},
			canonical: l.canonical, proof: p,
		})
	}
	return out, nil
}

// known reports whether the projections hold id as an event, decision or
// session of tenant (an id the ledger has not integrated yet).
func (s *Service) known(ctx context.Context, tenant, id string) (bool, error) {
	ctx, cancel := chx.QueryContext(ctx, 5*time.Second)
	defer cancel()
	qs := []string{
		"SELECT count() FROM events WHERE tenant_id = ? AND (event_id = ? OR session_id = ?)",
		"SELECT count() FROM decisions WHERE tenant_id = ? AND (decision_id = ? OR session_id = ?)",
	}
	second := id
	if isTraceID(id) {
		// The spans of a trace inside a conversation, by their payload
		// (18.16 has no JSON functions; the projection keeps the payload
		// as ingest compacted it, so the member is written exactly so).
		qs = append(qs, "SELECT count() FROM events WHERE tenant_id = ? AND (session_id = ? OR position(payload, ?) > 0)")
		second = `"traceId":"` + id + `"`
	}
	for i, q := range qs {
		arg := id
		if i == 2 {
			arg = second
		}
		var n uint64
		if err := s.deps.CH.QueryRow(ctx, q, tenant, id, arg).Scan(&n); err != nil {
			if isMissingTable(err) {
				continue
			}
			return false, err
		}
		if n > 0 {
			return true, nil
		}
	}
	return false, nil
}

// Evidence builds a session's self-contained evidence bundle.
func (s *Service) Evidence(ctx context.Context, tenant, session string) (evidence.Bundle, error) {
	st, err := s.state(ctx, tenant)
	if err != nil {
		return evidence.Bundle{}, chx.ReadError("ledger", err)
	}
	found, rows, err := s.store.lookup(ctx, tenant, st.size, []string{"session:" + session})
	if err != nil {
		return evidence.Bundle{}, chx.ReadError("ledger", err)
	}
	idxs := found["session:"+session]
	if len(idxs) == 0 {
		if known, err := s.known(ctx, tenant, session); err != nil {
			return evidence.Bundle{}, chx.ReadError("ledger", err)
		} else if !known {
			return evidence.Bundle{}, apperr.NotFound("session %q not found", session)
		}
	}
	recs, err := s.prove(ctx, tenant, st, idxs, rows)
	if err != nil {
		return evidence.Bundle{}, err
	}
	b := evidence.Bundle{
		Format: evidence.BundleFormat, Tenant: tenant, SessionID: session, Origin: s.Origin(tenant),
		PublicKey: s.keys.VerifierKey, Checkpoint: string(st.checkpoint), TreeSize: st.size, RootHash: evidence.HashString(st.root),
		RecordCount: len(recs), PolicyPackHashes: []string{}, Records: []evidence.BundleRecord{}, GeneratedAt: time.Now().UTC(),
	}
	packs := map[string]bool{}
	leaves := make([][]byte, len(recs))
	for i, r := range recs {
		leaves[i], _ = evidence.ParseHash(r.rec.LeafHash)
		b.Records = append(b.Records, evidence.BundleRecord{
			LedgerIndex: r.rec.LedgerIndex, Kind: r.rec.Kind, ID: r.rec.RecordID, LeafHash: r.rec.LeafHash,
			Record: json.RawMessage(r.canonical), InclusionProof: r.rec.MerklePath,
		})
		if r.rec.Kind == evidence.KindDecision {
			var d struct {
				Record struct {
					Result struct {
						PackHash string `json:"packHash"`
					} `json:"result"`
				} `json:"record"`
			}
			if json.Unmarshal(r.canonical, &d) == nil && d.Record.Result.PackHash != "" && !packs[d.Record.Result.PackHash] {
				packs[d.Record.Result.PackHash] = true
				b.PolicyPackHashes = append(b.PolicyPackHashes, d.Record.Result.PackHash)
			}
		}
	}
	slices.Sort(b.PolicyPackHashes)
	man, err := evidence.SignManifest(s.keys.Signer, evidence.Manifest{
		Origin: b.Origin, Session: session, Count: len(recs), TreeSize: st.size, Digest: evidence.ManifestDigest(idxs, leaves),
	})
	if err != nil {
		return evidence.Bundle{}, err
	}
	b.Manifest = string(man)
	return b, nil
}

package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// waitEvidence waits until the session's bundle holds n records.
func (s *testStack) waitEvidence(key, session string, n int) evidence.Bundle {
	s.t.Helper()
	var b evidence.Bundle
	eventually(s.t, catchUp, func() (bool, string) {
		r := s.get(key, "/v1/sessions/"+session+"/evidence")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		b = evidence.Bundle{}
		r.decode(s.t, &b)
		return b.RecordCount == n, fmt.Sprintf("session %s has %d sealed records, want %d", session, b.RecordCount, n)
	})
	return b
}

// ledgerAudit runs `vigil ledger audit` for tenant against the stack's
// ClickHouse, pinning the verifier key vkey.
func (e *env) ledgerAudit(vkey, tenant string) (string, error) {
	var out bytes.Buffer
	err := runLedgerAudit(context.Background(), []string{"--clickhouse-dsn", e.db.DSN, "--key", vkey, "--tenant", tenant}, &out)
	return out.String(), err
}

// waitAuditClean waits until the audit of tenant reports nothing (records
// the ledger has not integrated yet are pending, not failures).
func (e *env) waitAuditClean(vkey, tenant string) {
	e.t.Helper()
	eventually(e.t, catchUp, func() (bool, string) {
		s, err := e.ledgerAudit(vkey, tenant)
		return err == nil, s
	})
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestLedgerEndToEnd(t *testing.T) {
	e := newEnv(t)
	viewer := e.key("default", auth.RoleViewer)
	now := time.Now().Add(-time.Minute)
	events := []map[string]any{ev("agent-l", "sess-l", now), ev("agent-l", "sess-l", now.Add(time.Second)), ev("agent-l", "sess-l", now.Add(2*time.Second)), ev("agent-l", "sess-m", now)}
	e.postBatch(e.owner, events)
	// Each event is sealed, and so is the verdict the policy service
	// recorded for it.
	b := e.waitEvidence(viewer, "sess-l", 6)
	e.waitSession(viewer, "sess-l", 3)

	// `vigil ledger key` prints the key the server signs with.
	var keyDoc struct {
		PublicKey string `json:"publicKey"`
	}
	e.get(viewer, "/v1/ledger/key").decode(t, &keyDoc)
	var out bytes.Buffer
	if err := runLedgerKey([]string{"--signing-key", base64.StdEncoding.EncodeToString(testSigningSeed)}, &out); err != nil {
		t.Fatal(err)
	}
	vkey := strings.TrimSpace(out.String())
	if vkey == "" || vkey != keyDoc.PublicKey || vkey != b.PublicKey {
		t.Fatalf("vigil ledger key %q, server %q, bundle %q", vkey, keyDoc.PublicKey, b.PublicKey)
	}

	// The KLA proof of one event verifies with the library's verifier
	// against the signed checkpoint.
	var l ledger.Lineage
	r := e.get(viewer, "/v1/lineage/"+events[0]["eventId"].(string)+"/verify")
	expect(t, r, http.StatusOK, "lineage")
	r.decode(t, &l)
	cp, err := evidence.OpenCheckpoint([]byte(l.Checkpoint), l.Origin, vkey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := evidence.ParseHash(l.LeafHash)
	path, _ := evidence.DecodeProof(l.MerklePath)
	if !l.Anchored || l.LedgerIndex == nil || proof.VerifyInclusion(rfc6962.DefaultHasher, *l.LedgerIndex, cp.Size, leaf, path, cp.Hash) != nil {
		t.Fatalf("lineage does not verify: %+v", l)
	}
	checkEnvelope(t, e.get(viewer, "/v1/lineage/"+newUUID()+"/verify"), http.StatusNotFound, "NOT_FOUND", "not_found", nil)
	other := e.key("other", auth.RoleOwner)
	checkEnvelope(t, e.get(other, "/v1/sessions/sess-l/evidence"), http.StatusNotFound, "NOT_FOUND", "not_found", nil)

	// `vigil verify` offline: the bundle as served passes; tampered copies
	// fail and say why.
	dir := t.TempDir()
	good := filepath.Join(dir, "bundle.json")
	writeJSON(t, good, b)
	out.Reset()
	if err := runVerify(context.Background(), []string{"--key", vkey, good}, nil, &out); err != nil {
		t.Fatalf("vigil verify: %v\n%s", err, out.String())
	}
	cases := []struct {
		name   string
		tamper func(b *evidence.Bundle)
		want   string
	}{
		{"record removed", func(b *evidence.Bundle) { b.Records = b.Records[1:] }, "count mismatch"},
		{"record changed", func(b *evidence.Bundle) {
			b.Records[0].Record = json.RawMessage(strings.Replace(string(b.Records[0].Record), "agent-l", "agent-x", 1))
		}, "record bytes changed"},
		{"order changed", func(b *evidence.Bundle) {
			b.Records[0].LedgerIndex, b.Records[1].LedgerIndex = b.Records[1].LedgerIndex, b.Records[0].LedgerIndex
		}, "bad proof"},
	}
	for _, tc := range cases {
		t.Run("verify/"+tc.name, func(t *testing.T) {
			var tb evidence.Bundle
			data, _ := json.Marshal(b)
			_ = json.Unmarshal(data, &tb)
			tc.tamper(&tb)
			p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".json")
			writeJSON(t, p, tb)
			var out bytes.Buffer
			if err := runVerify(context.Background(), []string{"--key", vkey, p}, nil, &out); err == nil {
				t.Fatalf("tampered bundle verified:\n%s", out.String())
			}
			if !strings.Contains(out.String(), tc.want) {
				t.Fatalf("output does not say %q:\n%s", tc.want, out.String())
			}
		})
	}

	// `vigil ledger audit` against the projections: clean first, then each
	// tampering is reported.
	e.waitSession(viewer, "sess-m", 1)
	audit := func() (string, error) { return e.ledgerAudit(vkey, "default") }
	e.waitAuditClean(vkey, "default")
	ctx := context.Background()
	ev0 := events[0]["eventId"].(string)
	ev1 := events[1]["eventId"].(string)
	steps := []struct {
		name   string
		tamper string
		args   []any
		want   string
	}{
		{"event row changed", `INSERT INTO events (tenant_id, event_id, agent_id, session_id, category, schema_version, source_time, source_ms, received_ms, previous_hash, tool_name, response_status, payload, sdk, framework, agent_version, key_id, stream_seq)
			SELECT tenant_id, event_id, agent_id, session_id, category, schema_version, source_time, source_ms, received_ms, previous_hash, tool_name, response_status, '{"toolName":"rm -rf"}', sdk, framework, agent_version, key_id, stream_seq + 1000
			FROM events WHERE event_id = ?`, []any{ev0}, "changed events event:" + ev0},
		{"event row inserted", `INSERT INTO events (tenant_id, event_id, agent_id, session_id, category, schema_version, source_time, source_ms, received_ms, previous_hash, tool_name, response_status, payload, sdk, framework, agent_version, key_id, stream_seq)
			SELECT tenant_id, '00000000-0000-4000-8000-000000000001', agent_id, session_id, category, schema_version, source_time, source_ms, received_ms - 60000, previous_hash, tool_name, response_status, payload, sdk, framework, agent_version, key_id, stream_seq
			FROM events WHERE event_id = ?`, []any{ev1}, "inserted events event:00000000-0000-4000-8000-000000000001"},
		{"ledger leaf reordered", `INSERT INTO ledger_leaves (tenant_id, idx, record_key, kind, record_id, session_id, leaf_hash, canonical, stream, stream_seq, integrated_ms, version)
			SELECT tenant_id, if(idx = 1, 2, 1), record_key, kind, record_id, session_id, leaf_hash, canonical, stream, stream_seq, integrated_ms, version + 1
			FROM ledger_leaves WHERE tenant_id = 'default' AND idx IN (1, 2)`, nil, "root ledger_leaves"},
		{"ledger leaf hash replaced", `INSERT INTO ledger_leaves (tenant_id, idx, record_key, kind, record_id, session_id, leaf_hash, canonical, stream, stream_seq, integrated_ms, version)
			SELECT tenant_id, idx, record_key, kind, record_id, session_id, '` + strings.Repeat("00", 32) + `', canonical, stream, stream_seq, integrated_ms, version + 2
			FROM ledger_leaves WHERE tenant_id = 'default' AND idx = 3`, nil, "leaf ledger_leaves 3: record"},
	}
	for _, st := range steps {
		if err := e.db.Conn.Exec(ctx, st.tamper, st.args...); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		s, err := audit()
		if err == nil || !strings.Contains(s, st.want) {
			t.Fatalf("%s: audit (err %v) does not report %q:\n%s", st.name, err, st.want, s)
		}
	}
	// A removed projection row (a mutation, applied in the background).
	ev3 := events[3]["eventId"].(string)
	if err := e.db.Conn.Exec(ctx, "ALTER TABLE events DELETE WHERE event_id = ?", ev3); err != nil {
		t.Fatal(err)
	}
	eventually(t, catchUp, func() (bool, string) {
		s, _ := audit()
		return strings.Contains(s, "removed events event:"+ev3), s
	})
}

package policy

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// FuzzEncodeRecordIsMarshal holds publish's pooled encoding to the bytes
// json.Marshal wrote for the same records (the ledger seals these bytes),
// through one reused buffer as the pool reuses them: strings with HTML,
// line separators and invalid UTF-8, maps, and a shorter record after a
// longer one.
func FuzzEncodeRecordIsMarshal(f *testing.F) {
	f.Add("t1", "<script>&amp;</script>", "\u2028\u2029", []byte{0xff, 'a'}, 3.5, true)
	f.Add("", "", "", []byte(nil), 0.0, false)
	f.Add("acme", "x", "y\n\"z\\", []byte("\x00\x1f"), 1e21, true)
	var buf bytes.Buffer
	f.Fuzz(func(t *testing.T, tenant, tool, ctxv string, raw []byte, num float64, judge bool) {
		rec := rules.DecisionRecord{ID: rules.NewDecisionID(), Tenant: tenant, AgentID: tool, SessionID: ctxv, At: time.Unix(1700000000, 123456789).UTC(),
			Input: rules.Input{Agent: rules.AgentState{ID: tool, JudgeEnabled: judge},
				Action:  rules.Action{Kind: "tool_call", Tool: tool, Target: string(raw), Metadata: map[string]any{"source": ctxv, "n": num}},
				Context: map[string]any{ctxv: string(raw), "list": []any{tool, num, judge, nil}}},
			Decision: rules.Decision{Outcome: rules.Warn, ReasonCodes: []string{tool, ctxv}, PackHash: string(raw)}}
		rej := rules.RejectedRequest{ID: rec.ID, Op: "rejected", Tenant: tenant, Tool: tool, Reason: ctxv,
			Fields: []apperr.FieldError{{Path: string(raw), Message: tool}}, At: rec.At}
		for _, v := range []any{rec, rej, rec} {
			want, werr := json.Marshal(v)
			got, gerr := encodeRecord(&buf, v)
			if (werr == nil) != (gerr == nil) {
				t.Fatalf("Marshal error %v, encodeRecord error %v", werr, gerr)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("encodeRecord\n%s\nMarshal\n%s", got, want)
			}
		}
	})
}

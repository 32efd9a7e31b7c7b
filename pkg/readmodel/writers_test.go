package readmodel_test

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/anomaly"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/readmodel"
)

// TestDecisionRowsMatchDeclaration: both writers of the decisions table
// (policy's decisions, risk's anomaly verdicts, through
// rules.DecisionRow) put each value under the declared column it belongs
// to. A column added to the declaration, or moved, without the row
// following fails here rather than as dead letters in a deployment.
func TestDecisionRowsMatchDeclaration(t *testing.T) {
	at := time.Date(2026, 3, 4, 5, 6, 7, 890e6, time.UTC)
	decision := rules.DecisionRecord{
		ID: "dec-1", Tenant: "acme", AgentID: "bot", SessionID: "s-1", Source: "evaluate", EventID: "ev-1",
		Input: rules.Input{Action: rules.Action{Kind: "http", Tool: "fetch", Target: "example.com", Publisher: "acme-tools",
			Metadata: map[string]any{"source": "egress"}}},
		Decision:  rules.Decision{Outcome: rules.Block, ReasonCodes: []string{"DENY"}, PackHash: "sha256:abc"},
		Signature: "sig", At: at,
	}
	raw, err := json.Marshal(anomaly.Anomaly{ID: "anm-1", Tenant: "acme", AgentID: "bot", SessionID: "s-1", Type: "new_tool",
		Signature: "sig-a", DecisionID: "dec-1", OccurredAt: at, Action: rules.Action{Kind: "tool_call", Tool: "shell"}})
	if err != nil {
		t.Fatal(err)
	}
	verdict, verdictRecord, err := anomaly.VerdictRecord(raw)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		row  []any
		want map[string]any
	}{
		{"policy decision", rules.DecisionRow(decision, []byte(`{"id":"dec-1"}`)), map[string]any{
			"tenant_id": "acme", "decision_id": "dec-1", "agent_id": "bot", "session_id": "s-1", "source": "evaluate",
			"event_id": "ev-1", "outcome": "block", "pack_hash": "sha256:abc", "action_kind": "http", "tool": "fetch",
			"target": "example.com", "publisher": "acme-tools", "signature": "sig", "at_time": at.Truncate(time.Second),
			"at_ms": at.UnixMilli(), "record": []byte(`{"id":"dec-1"}`), "observed_source": "egress",
		}},
		{"anomaly verdict", rules.DecisionRow(verdict, verdictRecord), map[string]any{
			"tenant_id": "acme", "decision_id": "anm-1", "source": anomaly.SourceBaseline, "outcome": "warn",
			"action_kind": "tool_call", "tool": "shell", "signature": "sig-a", "at_ms": at.UnixMilli(),
			"record": verdictRecord, "observed_source": "",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := readmodel.Decisions.CheckRow(tt.row); err != nil {
				t.Fatal(err)
			}
			for i, col := range readmodel.Decisions.Columns {
				want, ok := tt.want[col]
				if !ok {
					continue
				}
				// The record goes in as the bytes given (the driver
				// copies []byte and string alike).
				if got := tt.row[i]; !reflect.DeepEqual(got, want) {
					t.Errorf("column %s = %#v, want %#v", col, got, want)
				}
			}
		})
	}
}

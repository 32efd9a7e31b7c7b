package policy

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

var decisionColumns = []string{
	"tenant_id", "decision_id", "agent_id", "session_id", "source", "event_id", "outcome", "reason_codes",
	"pack_hash", "action_kind", "tool", "target", "publisher", "signature", "at_time", "at_ms", "record",
	"observed_source",
}

func projectDecision(m jetstream.Msg) (chx.Rows, error) {
	var r rules.DecisionRecord
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		return nil, fmt.Errorf("%w: decode decision: %v", chx.ErrPoison, err)
	}
	a := r.Input.Action
	return chx.Rows{{
		r.Tenant, r.ID, r.AgentID, r.SessionID, r.Source, r.EventID, r.Decision.Outcome.String(), r.Decision.ReasonCodes,
		r.Decision.PackHash, a.Kind, a.Tool, a.Target, a.Publisher, r.Signature, r.At.Truncate(1e9), r.At.UnixMilli(), string(m.Data()),
		observedSource(a),
	}}, nil
}

// observedSource is how the action was observed, as its reporter says in
// metadata.source (Kaizen's "egress", "sdk", …), for GET /v1/verdicts?source=.
func observedSource(a rules.Action) string {
	s, _ := a.Metadata["source"].(string)
	if len(s) > 64 {
		return ""
	}
	return s
}

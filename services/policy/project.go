package policy

import (
	"encoding/json"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// projectDecision is the decisions row of a decision recorded on POLICY.
func projectDecision(m jetstream.Msg) (chx.Rows, error) {
	var r rules.DecisionRecord
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		return nil, fmt.Errorf("%w: decode decision: %v", chx.ErrPoison, err)
	}
	return chx.Rows{rules.DecisionRow(r, m.Data())}, nil
}

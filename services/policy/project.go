package policy

import (
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// projectDecision is the decisions row of a decision recorded on POLICY.
func projectDecision(m jetstream.Msg) (chx.Rows, error) {
	// Only the row's fields are decoded (the same row as decoding the
	// whole record, pkg/policy FuzzDecodeDecisionRow), at half the cost.
	row, err := rules.DecodeDecisionRow(m.Data())
	if err != nil {
		return nil, fmt.Errorf("%w: decode decision: %v", chx.ErrPoison, err)
	}
	return chx.Rows{row}, nil
}

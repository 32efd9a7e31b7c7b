package policy

import (
	"slices"
	"testing"
)

func TestMCPToolReviewBuiltin(t *testing.T) {
	for _, c := range []struct {
		name   string
		review any
		want   string
	}{
		{"new", ReasonToolNew, ReasonToolNew},
		{"changed", ReasonToolChanged, ReasonToolChanged},
		{"quarantine", ReasonMCPServerQuarantined, ReasonMCPServerQuarantined},
		{"unknown code", "ALLOW_ME", ReasonToolNew},
		{"missing", nil, ReasonToolNew},
	} {
		a := Action{Kind: KindMCPToolReview, Tool: "echo", Publisher: "shop", Metadata: map[string]any{}}
		if c.review != nil {
			a.Metadata["review"] = c.review
		}
		d := (*Pack)(nil).Evaluate(Input{Tenant: "t", Action: a}, OrgPolicy{})
		if d.Outcome != RequireApproval || !slices.Equal(d.ReasonCodes, []string{c.want}) || d.OnExpiry != "rejected" || d.ApprovalTimeout != MCPReviewTimeout {
			t.Errorf("%s: %+v", c.name, d)
		}
	}
	if d := (*Pack)(nil).Evaluate(Input{Tenant: "t", Action: Action{Kind: "tool_call", Tool: "echo"}}, OrgPolicy{}); d.Outcome != Allow {
		t.Errorf("a tool call without rules: %v", d.Outcome)
	}
}

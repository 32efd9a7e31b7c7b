package policy

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

const quorumPolicy = `
id: payouts
name: payouts
rules:
  - id: payout
    when: action.tool == "payout"
    outcome: require_approval
    approvalTimeout: 1h
    approvals:
      required: 2
      groups: [finance]
      escalate: {after: 10m, to: [security]}
  - id: big-payout
    when: action.tool == "payout" && context.amount > 1000
    outcome: require_approval
    approvals: {groups: [cfo]}
  - id: log
    when: action.tool == "payout"
    outcome: warn
`

func TestApprovalsCarriedByDecision(t *testing.T) {
	p := mustPack(t, quorumPolicy)
	tests := []struct {
		name   string
		amount float64
		want   []ApprovalRequirement
	}{
		{"one rule", 10, []ApprovalRequirement{
			{PolicyID: "payouts", RuleID: "payout", Required: 2, Groups: []string{"finance"}, EscalateAfter: 10 * time.Minute, EscalateTo: []string{"security"}},
		}},
		{"both rules: both must be met", 5000, []ApprovalRequirement{
			{PolicyID: "payouts", RuleID: "payout", Required: 2, Groups: []string{"finance"}, EscalateAfter: 10 * time.Minute, EscalateTo: []string{"security"}},
			{PolicyID: "payouts", RuleID: "big-payout", Required: 1, Groups: []string{"cfo"}},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(Input{Action: Action{Tool: "payout"}, Context: map[string]any{"amount": tt.amount}}, OrgPolicy{})
			if d.Outcome != RequireApproval || !reflect.DeepEqual(d.Approvals, tt.want) {
				t.Fatalf("decision %s approvals %+v, want %+v", d.Outcome, d.Approvals, tt.want)
			}
		})
	}
	if d := p.Evaluate(Input{Action: Action{Tool: "other"}}, OrgPolicy{}); len(d.Approvals) != 0 {
		t.Fatalf("a non-matching action carries approvals %+v", d.Approvals)
	}
}

func TestInvalidApprovals(t *testing.T) {
	rule := func(extra string) string {
		return "name: x\nrules:\n  - id: a\n    when: 'true'\n    outcome: require_approval\n" + extra
	}
	tests := []struct {
		name, src, path, contains string
	}{
		{"not require_approval", "name: x\nrules:\n  - id: a\n    when: 'true'\n    outcome: block\n    approvals: {required: 2}\n", "rules[0].approvals", "require_approval rules only"},
		{"too many", rule("    approvals: {required: 11}\n"), "rules[0].approvals.required", "between 1 and 10"},
		{"negative", rule("    approvals: {required: -1}\n"), "rules[0].approvals.required", "between 1 and 10"},
		{"bad group", rule("    approvals: {groups: [Finance Team]}\n"), "rules[0].approvals.groups[0]", "lower-case"},
		{"duplicate group", rule("    approvals: {groups: [finance, finance]}\n"), "rules[0].approvals.groups[1]", "named twice"},
		{"unknown field", rule("    approvals: {quorum: 2}\n"), "rules[0].approvals.quorum", "quorum"},
		{"escalate from anyone", rule("    approvals: {escalate: {after: 1m, to: [security]}}\n"), "rules[0].approvals.escalate", "needs approvals.groups"},
		{"bad after", rule("    approvals: {escalate: {after: soon, to: [security]}}\n"), "rules[0].approvals.escalate.after", "positive duration"},
		{"after past the default timeout", rule("    approvals: {escalate: {after: 20m, to: [security]}}\n"), "rules[0].approvals.escalate.after", "shorter than the approval timeout (15m0s)"},
		{"after past the timeout", rule("    approvalTimeout: 5m\n    approvals: {escalate: {after: 5m, to: [security]}}\n"), "rules[0].approvals.escalate.after", "shorter than the approval timeout (5m0s)"},
		{"escalate nowhere", rule("    approvals: {escalate: {after: 1m}}\n"), "rules[0].approvals.escalate.to", "at least one group"},
		{"bad escalation group", rule("    approvals: {escalate: {after: 1m, to: ['']}}\n"), "rules[0].approvals.escalate.to[0]", "lower-case"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantInvalid(t, tt.src, tt.path, tt.contains) })
	}
}

func TestValidateGroups(t *testing.T) {
	tests := []struct {
		groups []string
		ok     bool
	}{
		{nil, true},
		{[]string{"finance", "security"}, true},
		{[]string{"finance", "finance"}, false},
		{[]string{"Finance"}, false},
		{make([]string, MaxReviewerGroups+1), false},
	}
	for _, tt := range tests {
		if err := ValidateGroups(tt.groups, "groups"); (err == nil) != tt.ok {
			t.Errorf("%v: %v", tt.groups, err)
		}
	}
}

// BenchmarkEvaluateApprovals is one decision matching a require_approval
// rule of the 100-rule pack, without and with an approvals block on the
// rule (what the block adds to a decision: copying one requirement).
func BenchmarkEvaluateApprovals(b *testing.B) {
	in := Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: "tool_43", Arguments: map[string]any{"amount": 5000.0}}, Context: map[string]any{}}
	withBlock := strings.ReplaceAll(hundredRules(), "outcome: require_approval\n",
		"outcome: require_approval\n    approvals: {required: 2, groups: [finance], escalate: {after: 5m, to: [security]}}\n")
	for _, bc := range []struct{ name, src string }{{"none", hundredRules()}, {"block", withBlock}} {
		b.Run(bc.name, func(b *testing.B) {
			p := mustPack(b, bc.src)
			if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != RequireApproval || (bc.name == "block") != (len(d.Approvals) == 1) {
				b.Fatalf("got %s with %d approvals blocks", d.Outcome, len(d.Approvals))
			}
			b.ReportAllocs()
			for b.Loop() {
				p.Evaluate(in, OrgPolicy{})
			}
		})
	}
}

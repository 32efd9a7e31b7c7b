package policy

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
)

const refunds = `
id: refunds
name: Refund limits
rules:
  - id: big-refund
    when: action.tool == "issue_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
    approvalTimeout: 30m
  - id: huge-refund
    when: action.tool == "issue_refund" && context.amount > 100000
    outcome: block
    reasonCodes: [AMOUNT_FAR_OVER_THRESHOLD]
  - id: shell
    when: action.tool in ["shell", "exec"]
    outcome: warn
  - id: repeat-offender
    when: session.blocks >= 3
    outcome: block
    reasonCodes: [REPEATED_BLOCKS]
`

func mustPack(t testing.TB, docs ...string) *Pack {
	t.Helper()
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	var vs []Versioned
	for i, src := range docs {
		d, err := Parse([]byte(src))
		if err != nil {
			t.Fatalf("parse: %v", err)
		}
		if d.ID == "" {
			d.ID = fmt.Sprintf("p%d", i)
		}
		comp, err := c.Compile(d)
		if err != nil {
			t.Fatalf("compile: %v", err)
		}
		vs = append(vs, Versioned{Version: uint64(i + 1), Compiled: comp})
	}
	signer, _ := NewSigner(make([]byte, 32))
	p, err := NewPack("acme", vs, signer)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestEvaluatePrecedenceAndReasons(t *testing.T) {
	p := mustPack(t, refunds)
	tests := []struct {
		name    string
		in      Input
		org     OrgPolicy
		want    Outcome
		reasons []string
	}{
		{"no rule matches", Input{Action: Action{Tool: "lookup"}}, OrgPolicy{}, Allow, []string{ReasonDefaultAllow}},
		{"small refund", Input{Action: Action{Tool: "issue_refund"}, Context: map[string]any{"amount": 10.0}}, OrgPolicy{}, Allow, []string{ReasonDefaultAllow}},
		{"big refund", Input{Action: Action{Tool: "issue_refund"}, Context: map[string]any{"amount": 1250.0}}, OrgPolicy{}, RequireApproval, []string{"AMOUNT_OVER_THRESHOLD"}},
		{"huge refund: block wins, milder reasons follow", Input{Action: Action{Tool: "issue_refund"}, Context: map[string]any{"amount": 200000}}, OrgPolicy{}, Block, []string{"AMOUNT_FAR_OVER_THRESHOLD", "AMOUNT_OVER_THRESHOLD"}},
		{"in-list index", Input{Action: Action{Tool: "exec"}}, OrgPolicy{}, Warn, []string{"RULE_SHELL"}},
		{"general rule applies to any tool", Input{Action: Action{Tool: "lookup"}, Session: Session{Blocks: 3}}, OrgPolicy{}, Block, []string{"REPEATED_BLOCKS"}},
		{"halt blocks what a rule would allow, HALTED first", Input{Halt: &HaltState{ID: "halt_1", Scope: HaltTenant, Reason: "incident"}, Agent: AgentState{Paused: true}, Action: Action{Tool: "issue_refund"}, Context: map[string]any{"amount": 10.0}}, OrgPolicy{}, Block, []string{ReasonHalted, ReasonAgentPaused}},
		{"paused agent", Input{Agent: AgentState{Paused: true}, Action: Action{Tool: "lookup"}}, OrgPolicy{}, Block, []string{ReasonAgentPaused}},
		{"org blocklist tool", Input{Action: Action{Tool: "rm"}}, OrgPolicy{Mode: OrgBlocklist, Tools: []string{"rm"}}, Block, []string{ReasonOrgBlockedTool}},
		{"org blocklist destination with port and wildcard", Input{Action: Action{Tool: "http", Target: "https://api.evil.com:443/x"}}, OrgPolicy{Mode: OrgBlocklist, Destinations: []string{"*.evil.com"}}, Block, []string{ReasonOrgBlockedDestination}},
		{"org allowlist miss", Input{Action: Action{Tool: "rm"}}, OrgPolicy{Mode: OrgAllowlist, Tools: []string{"lookup"}}, Block, []string{ReasonOrgNotAllowlisted}},
		{"org allowlist hit", Input{Action: Action{Tool: "lookup"}}, OrgPolicy{Mode: OrgAllowlist, Tools: []string{"lookup"}}, Allow, []string{ReasonDefaultAllow}},
		{"org allowlist: an action naming nothing listed is not admitted", Input{Action: Action{Target: "https://x.example/"}}, OrgPolicy{Mode: OrgAllowlist, Tools: []string{"lookup"}}, Block, []string{ReasonOrgNotAllowlisted}},
		{"org allowlist: a checked destination admits", Input{Action: Action{Target: "https://api.stripe.com/"}}, OrgPolicy{Mode: OrgAllowlist, Tools: []string{"lookup"}, Destinations: []string{"api.stripe.com"}}, Allow, []string{ReasonDefaultAllow}},
		{"org allowlist with empty lists admits", Input{Action: Action{Tool: "rm"}}, OrgPolicy{Mode: OrgAllowlist}, Allow, []string{ReasonDefaultAllow}},
		{"org off ignores lists", Input{Action: Action{Tool: "rm"}}, OrgPolicy{Mode: OrgOff, Tools: []string{"rm"}}, Allow, []string{ReasonDefaultAllow}},
		{"undeclared tool and destination warn", Input{Agent: AgentState{Declared: true, Tools: []string{"lookup"}, Destinations: []string{"api.stripe.com"}}, Action: Action{Tool: "issue_refund", Target: "api.paypal.com:443"}, Context: map[string]any{"amount": 1}}, OrgPolicy{}, Warn, []string{ReasonUndeclaredTool, ReasonUndeclaredDestination}},
		{"declared tool passes", Input{Agent: AgentState{Declared: true, Tools: []string{"lookup"}}, Action: Action{Tool: "lookup"}}, OrgPolicy{}, Allow, []string{ReasonDefaultAllow}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(tt.in, tt.org)
			if d.Outcome != tt.want || !slices.Equal(d.ReasonCodes, tt.reasons) {
				t.Fatalf("got %s %v, want %s %v (matches %+v, errors %v)", d.Outcome, d.ReasonCodes, tt.want, tt.reasons, d.Matches, d.Errors)
			}
			if d.PackHash != p.Hash || !strings.HasPrefix(d.PackHash, "sha256:") {
				t.Fatalf("pack hash %q", d.PackHash)
			}
		})
	}
}

// readme is the policy of the README and of issue 12's reproductions.
const readme = `
id: refunds
name: Refund approvals
rules:
  - id: big-refund
    when: action.tool == "execute_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
`

func TestFailClosed(t *testing.T) {
	p := mustPack(t, readme)
	refund := func(ctx map[string]any) Input { return Input{Action: Action{Tool: "execute_refund"}, Context: ctx} }
	tests := []struct {
		name    string
		in      Input
		want    Outcome
		reasons []string
		errs    int
	}{
		{"amount as a string", refund(map[string]any{"amount": "5000"}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"amount as a list", refund(map[string]any{"amount": []any{5000.0}}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"amount as a map", refund(map[string]any{"amount": map[string]any{"v": 5000.0}}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"amount null", refund(map[string]any{"amount": nil}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"amount a bool", refund(map[string]any{"amount": true}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"amount missing", refund(map[string]any{}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"no context at all", refund(nil), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD", ReasonEvaluationError}, 1},
		{"a correct small amount still allows", refund(map[string]any{"amount": 10.0}), Allow, []string{ReasonDefaultAllow}, 0},
		{"a correct big amount", refund(map[string]any{"amount": 5000.0}), RequireApproval, []string{"AMOUNT_OVER_THRESHOLD"}, 0},
		{"another tool never reaches the erroring term", Input{Action: Action{Tool: "lookup"}}, Allow, []string{ReasonDefaultAllow}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(tt.in, OrgPolicy{})
			if d.Outcome != tt.want || !slices.Equal(d.ReasonCodes, tt.reasons) || len(d.Errors) != tt.errs {
				t.Fatalf("got %s %v errors %v, want %s %v with %d errors", d.Outcome, d.ReasonCodes, d.Errors, tt.want, tt.reasons, tt.errs)
			}
			if tt.errs > 0 && (len(d.Matches) != 1 || d.Matches[0].Error == "" || !strings.Contains(d.Errors[0], "refunds/big-refund")) {
				t.Fatalf("the match does not explain the error: %+v %v", d.Matches, d.Errors)
			}
		})
	}
}

func TestFailClosedResolution(t *testing.T) {
	tests := []struct {
		name    string
		rule    string
		want    Outcome
		reasons []string
		how     string
	}{
		{"block applies", "{id: r, when: 'context.n > 1', outcome: block}", Block, []string{"RULE_R", ReasonEvaluationError}, errApplied},
		{"warn applies", "{id: r, when: 'context.n > 1', outcome: warn}", Warn, []string{"RULE_R", ReasonEvaluationError}, errApplied},
		{"allow does not apply", "{id: r, when: 'context.n > 1', outcome: allow}", Allow, []string{ReasonDefaultAllow}, errAllow},
		{"onError skip opts out", "{id: r, when: 'context.n > 1', outcome: block, onError: skip}", Allow, []string{ReasonDefaultAllow}, errSkipped},
		{"a non-bool dynamic result errors", "{id: r, when: 'context.flag', outcome: block}", Block, []string{"RULE_R", ReasonEvaluationError}, errApplied},
		{"has() guards say no without error", "{id: r, when: 'has(context.n) && context.n > 1', outcome: block}", Allow, []string{ReasonDefaultAllow}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := mustPack(t, "name: x\nrules:\n  - "+tt.rule+"\n")
			d := p.Evaluate(Input{Context: map[string]any{"flag": "yes"}}, OrgPolicy{})
			if d.Outcome != tt.want || !slices.Equal(d.ReasonCodes, tt.reasons) {
				t.Fatalf("got %s %v (errors %v), want %s %v", d.Outcome, d.ReasonCodes, d.Errors, tt.want, tt.reasons)
			}
			if tt.how == "" && len(d.Errors) != 0 || tt.how != "" && (len(d.Errors) != 1 || !strings.HasSuffix(d.Errors[0], "("+tt.how+")")) {
				t.Fatalf("errors %v, want one resolved as %q", d.Errors, tt.how)
			}
		})
	}
}

// A Kaplaix deny rule is exact string matches on action attributes, which
// always evaluate: absent or odd parameters cannot turn it off.
func TestKaplaixDeniedIgnoresParameters(t *testing.T) {
	p := mustPack(t, `{"id":"payments","name":"payments","conditions":{"toolType":"payment"},"defaultDecision":"denied"}`)
	for _, ctx := range []map[string]any{nil, {}, {"amount": "x"}, {"toolType": 5.0}} {
		if d := p.Evaluate(Input{Action: Action{ToolType: "payment"}, Context: ctx}, OrgPolicy{}); d.Outcome != Block || len(d.Errors) != 0 {
			t.Fatalf("context %v: got %s errors %v", ctx, d.Outcome, d.Errors)
		}
	}
}

func TestApprovalTimeout(t *testing.T) {
	p := mustPack(t, refunds)
	d := p.Evaluate(Input{Action: Action{Tool: "issue_refund"}, Context: map[string]any{"amount": 5000}}, OrgPolicy{})
	if d.ApprovalTimeout.Minutes() != 30 {
		t.Fatalf("timeout %v", d.ApprovalTimeout)
	}
}

func TestToolIndex(t *testing.T) {
	tests := []struct {
		when string
		want []string
	}{
		{`action.tool == "a"`, []string{"a"}},
		{`"a" == action.tool`, []string{"a"}},
		{`action["tool"] == "a" && context.x > 1`, []string{"a"}},
		{`context.x > 1 && action.tool in ["b", "a"]`, []string{"a", "b"}},
		{`action.tool == "a" || action.tool == "b"`, nil},
		{`action.tool != "a"`, nil},
		{`action.tool in ["a", context.t]`, nil},
		{`true`, nil},
	}
	c, _ := NewCompiler()
	for _, tt := range tests {
		d := Document{ID: "x", Name: "x", Rules: []Rule{{ID: "r", When: tt.when, Outcome: "warn"}}}
		if err := d.Normalize(); err != nil {
			t.Fatal(err)
		}
		comp, err := c.Compile(d)
		if err != nil {
			t.Fatalf("%s: %v", tt.when, err)
		}
		if got := comp.rules[0].tools; !slices.Equal(got, tt.want) {
			t.Errorf("%s: tools %v, want %v", tt.when, got, tt.want)
		}
	}
}

func TestInvalidPolicies(t *testing.T) {
	tests := []struct {
		name, src, path, contains string
	}{
		{"bad yaml", "name: [", "", "yaml: line 1"},
		{"no name", "rules: [{id: a, when: 'true', outcome: warn}]", "name", "name is required"},
		{"no rules", "name: x", "rules", "at least one rule"},
		{"unknown field", "name: x\nbogus: 1\nrules: [{id: a, when: 'true', outcome: warn}]", "bogus", "bogus"},
		{"unknown rule field", "name: x\nrules:\n  - id: a\n    whenn: 'true'\n    outcome: warn\n", "rules[0].whenn", "whenn"},
		{"bad outcome", "name: x\nrules:\n  - id: a\n    when: 'true'\n    outcome: maybe\n", "rules[0].outcome", "line 3: rule a"},
		{"duplicate id", "name: x\nrules:\n  - {id: a, when: 'true', outcome: warn}\n  - {id: a, when: 'true', outcome: warn}\n", "rules[1].id", "used twice"},
		{"bad reason", "name: x\nrules:\n  - {id: a, when: 'true', outcome: warn, reasonCodes: [lower]}\n", "rules[0].reasonCodes[0]", "UPPER_SNAKE"},
		{"bad timeout", "name: x\nrules:\n  - {id: a, when: 'true', outcome: warn, approvalTimeout: soon}\n", "rules[0].approvalTimeout", "duration"},
		{"cel syntax", "name: x\nrules:\n  - id: a\n    when: 'action.tool =='\n    outcome: warn\n", "rules[0].when", "line 3: rule a"},
		{"cel type", "name: x\nrules:\n  - id: a\n    when: '1 + 2'\n    outcome: warn\n", "rules[0].when", "must be a bool"},
		{"cel unknown variable", "name: x\nrules:\n  - id: a\n    when: 'nope.x == 1'\n    outcome: warn\n", "rules[0].when", "undeclared reference"},
		{"kaplaix unknown condition", "name: x\nconditions: {color: red}\ndefaultDecision: denied\n", "conditions", "unknown condition"},
		{"rule list: unknown condition", `{"name":"x","rules":[{"id":"r1","decision":"denied","conditions":{"colour":"red"}}]}`, "rules[0].conditions", "unknown condition"},
		{"rule list: bad decision", `{"name":"x","rules":[{"id":"r1","decision":"maybe","conditions":{"toolType":"shell"}}]}`, "rules[0].decision", "unknown outcome"},
		{"rule list: when beside conditions", `{"name":"x","rules":[{"id":"r1","decision":"denied","when":"true","conditions":{"toolType":"shell"}}]}`, "rules[0].when", "either when or conditions"},
		{"rule list: outcome beside decision", `{"name":"x","rules":[{"id":"r1","decision":"denied","outcome":"allow","conditions":{"toolType":"shell"}}]}`, "rules[0].outcome", "either outcome or decision"},
		{"rule list: bad default", `{"name":"x","rules":[{"id":"r1","decision":"denied"}],"defaultDecision":"perhaps"}`, "defaultDecision", "unknown outcome"},
		{"rule list and policy conditions", `{"name":"x","conditions":{"toolType":"shell"},"rules":[{"id":"r1","decision":"denied"}]}`, "conditions", "not both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantInvalid(t, tt.src, tt.path, tt.contains) })
	}
}

// wantInvalid parses and compiles src and wants a validation error with
// a detail at path whose message contains contains.
func wantInvalid(t *testing.T, src, path, contains string) {
	t.Helper()
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Parse([]byte(src))
	if err == nil {
		_, err = c.Compile(d)
	}
	var ae *apperr.Error
	if err == nil || !asAppErr(err, &ae) || ae.Kind != apperr.KindValidation {
		t.Fatalf("want a validation error, got %v", err)
	}
	for _, fe := range ae.Details {
		if fe.Path == path && strings.Contains(fe.Message, contains) {
			return
		}
	}
	t.Fatalf("no detail at %q containing %q: %+v", path, contains, ae.Details)
}

func TestKaplaixForm(t *testing.T) {
	p := mustPack(t, `{"name":"payments","conditions":{"toolType":"payment","operation":"refund"},"priority":10,"defaultDecision":"denied"}`)
	if d := p.Evaluate(Input{Action: Action{ToolType: "payment", Operation: "refund"}}, OrgPolicy{}); d.Outcome != Block {
		t.Fatalf("got %s", d.Outcome)
	}
	if d := p.Evaluate(Input{Action: Action{ToolType: "payment", Operation: "charge"}}, OrgPolicy{}); d.Outcome != Allow {
		t.Fatalf("got %s", d.Outcome)
	}
}

func TestPackHashAndSignature(t *testing.T) {
	a, b := mustPack(t, refunds), mustPack(t, refunds)
	if a.Hash != b.Hash {
		t.Fatal("same policies, different hashes")
	}
	c := mustPack(t, strings.Replace(refunds, "1000", "2000", 1))
	if a.Hash == c.Hash {
		t.Fatal("different policies, same hash")
	}
	signer, _ := NewSigner(make([]byte, 32))
	if err := VerifyPack(signer.PublicKey(), "acme", a.Hash, a.Signature); err != nil {
		t.Fatal(err)
	}
	if err := VerifyPack(signer.PublicKey(), "other", a.Hash, a.Signature); err == nil {
		t.Fatal("signature verified for another tenant")
	}
}

func TestDisabledPolicyNotPacked(t *testing.T) {
	p := mustPack(t, "name: off\nenabled: false\nrules: [{id: a, when: 'true', outcome: block}]")
	if d := p.Evaluate(Input{}, OrgPolicy{}); d.Outcome != Allow || p.Rules() != 0 {
		t.Fatalf("disabled policy applied: %s", d.Outcome)
	}
}

// hundredRules is a pack of 100 rules that each test the tool name and an
// argument, the shape of the benchmark goal in the policy issue.
func hundredRules() string {
	var b strings.Builder
	b.WriteString("name: bench\nrules:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  - id: r%d\n    when: action.tool == \"tool_%d\" && action.arguments.amount > %d\n    outcome: %s\n", i, i, i*10, []string{"warn", "require_approval", "block"}[i%3])
	}
	return b.String()
}

func BenchmarkEvaluate100Rules(b *testing.B) {
	p := mustPack(b, hundredRules())
	in := Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: "tool_42", Arguments: map[string]any{"amount": 5000.0}}, Context: map[string]any{}}
	if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != Warn {
		b.Fatalf("got %s", d.Outcome)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in, OrgPolicy{})
	}
}

// hundredTypedRules is hundredRules reading the amount from a declared,
// typed context instead of the tool's arguments, with three more inputs
// declared that the request check validates (an enum and a pattern among
// them).
func hundredTypedRules() string {
	var b strings.Builder
	b.WriteString("name: bench-typed\ninputs:\n  amount: {type: number, required: true, min: 0, max: 1000000000}\n")
	b.WriteString("  currency: {type: string, enum: [USD, EUR, GBP]}\n  reference: {type: string, pattern: '^ref-[0-9]+$'}\n  vip: {type: bool}\nrules:\n")
	for i := range 100 {
		fmt.Fprintf(&b, "  - id: r%d\n    when: action.tool == \"tool_%d\" && context.amount > %d\n    outcome: %s\n", i, i, i*10, []string{"warn", "require_approval", "block"}[i%3])
	}
	return b.String()
}

// BenchmarkEvaluate100RulesTypedInputs is one decision of the 100-rule
// pack with typed inputs declared: the request check (CheckInput) and
// the evaluation, as the policy service does both.
func BenchmarkEvaluate100RulesTypedInputs(b *testing.B) {
	p := mustPack(b, hundredTypedRules())
	in := Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: "tool_42"},
		Context: map[string]any{"amount": 5000.0, "currency": "EUR", "reference": "ref-123", "vip": true}}
	if bad := p.CheckInput(in); bad != nil {
		b.Fatalf("refused: %v", bad)
	}
	if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != Warn {
		b.Fatalf("got %s", d.Outcome)
	}
	b.ReportAllocs()
	for b.Loop() {
		if p.CheckInput(in) != nil {
			b.Fatal("refused")
		}
		p.Evaluate(in, OrgPolicy{})
	}
}

// BenchmarkEvaluate100RulesUnindexed is the baseline the index beats:
// the same pack evaluated as a plain loop over every compiled rule.
func BenchmarkEvaluate100RulesUnindexed(b *testing.B) {
	p := mustPack(b, hundredRules())
	p.general, p.byTool = nil, nil
	for i := range p.rules {
		p.general = append(p.general, i)
	}
	in := Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: "tool_42", Arguments: map[string]any{"amount": 5000.0}}, Context: map[string]any{}}
	if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != Warn {
		b.Fatalf("got %s", d.Outcome)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in, OrgPolicy{})
	}
}

// TestSuppressSilencesWarningsOnly: a false-positive triage turns a warn
// into an allow, and never lifts a block or require_approval.
func TestSuppressSilencesWarningsOnly(t *testing.T) {
	for _, tc := range []struct {
		outcome Outcome
		want    Outcome
		codes   []string
	}{
		{Allow, Allow, []string{ReasonDefaultAllow}},
		{Warn, Allow, []string{ReasonSuppressed}},
		{RequireApproval, RequireApproval, []string{"RULE_X"}},
		{Block, Block, []string{"RULE_X"}},
	} {
		t.Run(tc.outcome.String(), func(t *testing.T) {
			codes := []string{"RULE_X"}
			if tc.outcome == Allow {
				codes = []string{ReasonDefaultAllow}
			}
			d := Decision{Outcome: tc.outcome, ReasonCodes: codes}
			did := d.Suppress()
			if did != (tc.outcome == Warn) || d.Outcome != tc.want || !slices.Equal(d.ReasonCodes, tc.codes) {
				t.Errorf("Suppress() = %v → %s %v, want %s %v", did, d.Outcome, d.ReasonCodes, tc.want, tc.codes)
			}
		})
	}
}

// TestKaplaixRuleList: the rule-list form compiles each rule's exact-match
// conditions, orders rules by priority, lets the strictest matching rule
// win whatever the priorities, and applies defaultDecision when no rule
// holds. Normalizing the stored form again changes nothing.
func TestKaplaixRuleList(t *testing.T) {
	src := `{"name":"tools","rules":[
		{"id":"r-low","decision":"denied","priority":1,"conditions":{"toolType":"shell"}},
		{"id":"r-high","decision":"allowed","priority":9,"conditions":{"toolType":"shell","operation":"ls"}},
		{"id":"r-review","decision":"requires_review","priority":5,"conditions":{"toolType":"payment"}}],
		"defaultDecision":"denied"}`
	d, err := Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	var order []string
	for _, r := range d.Rules {
		order = append(order, r.ID)
	}
	if want := []string{"r-high", "r-review", "r-low", DefaultRuleID}; !slices.Equal(order, want) {
		t.Fatalf("rule order %v, want %v", order, want)
	}
	again := d
	again.Rules = slices.Clone(d.Rules)
	if err := again.Normalize(); err != nil || !reflect.DeepEqual(again, d) {
		t.Fatalf("normalizing the stored form again: %v\n%+v\n%+v", err, again.Rules, d.Rules)
	}
	p := mustPack(t, src)
	for _, tc := range []struct {
		name   string
		action Action
		want   Outcome
		reason string
	}{
		{"lower-priority denied beats higher-priority allowed", Action{ToolType: "shell", Operation: "ls"}, Block, "RULE_R_LOW"},
		{"denied", Action{ToolType: "shell", Operation: "rm"}, Block, "RULE_R_LOW"},
		{"requires_review", Action{ToolType: "payment", Operation: "refund"}, RequireApproval, "RULE_R_REVIEW"},
		{"no rule holds: defaultDecision", Action{ToolType: "search", Operation: "q"}, Block, "DEFAULT_DECISION"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := p.Evaluate(Input{Action: tc.action}, OrgPolicy{})
			if got.Outcome != tc.want || !slices.Contains(got.ReasonCodes, tc.reason) {
				t.Errorf("got %s %v, want %s with %s", got.Outcome, got.ReasonCodes, tc.want, tc.reason)
			}
		})
	}
	// defaultDecision allowed adds no rule: nothing holding means allow.
	d, err = Parse([]byte(`{"name":"x","rules":[{"id":"r1","decision":"denied","conditions":{"toolType":"shell"}}],"defaultDecision":"allowed"}`))
	if err != nil || len(d.Rules) != 1 || d.Rules[0].When != `action.toolType == "shell"` || d.Rules[0].Outcome != "block" {
		t.Fatalf("allowed default: %+v %v", d.Rules, err)
	}
}

// TestParseCompat: unknown top-level keys are ignored and reported; keys
// that change enforcement (inside rules, or near misses of known keys)
// stay errors.
func TestParseCompat(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		ignored   []string
		errPath   string
	}{
		{"extra metadata", `{"name":"x","tags":["a"],"owner":"team","rules":[{"id":"a","when":"true","outcome":"warn"}]}`, []string{"owner", "tags"}, ""},
		{"misspelled rule key", `{"name":"x","rules":[{"id":"a","whenn":"true","outcome":"warn"}]}`, nil, "rules[0].whenn"},
		{"misspelled document key", `{"name":"x","defaultDecison":"denied","conditions":{"toolType":"shell"}}`, nil, "defaultDecison"},
		{"unknown key beside a misspelled one", `{"name":"x","tags":[],"rulez":[]}`, nil, "rulez"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, ignored, err := ParseCompat([]byte(tc.src))
			if tc.errPath == "" {
				slices.Sort(ignored)
				if err != nil || !slices.Equal(ignored, tc.ignored) {
					t.Fatalf("ignored %v err %v, want %v", ignored, err, tc.ignored)
				}
				return
			}
			var ae *apperr.Error
			if !asAppErr(err, &ae) || !slices.ContainsFunc(ae.Details, func(fe apperr.FieldError) bool { return fe.Path == tc.errPath && fe.Code == "unknown_field" }) {
				t.Fatalf("want unknown_field at %s, got %v", tc.errPath, err)
			}
		})
	}
	if _, err := Parse([]byte(`{"name":"x","tags":["a"],"rules":[{"id":"a","when":"true","outcome":"warn"}]}`)); err == nil {
		t.Error("Parse (strict, for files and the CLI) accepted an unknown key")
	}
}

// Under a Kaplaix deny default (a rule list with defaultDecision: denied)
// an allow rule whose condition errors does not admit the action: the
// default rule, "none of the rules held", errors too and fails closed.
func TestKaplaixDeniedDefaultFailsClosed(t *testing.T) {
	p := mustPack(t, `
id: payments
name: Payments
defaultDecision: denied
rules:
  - id: small
    when: context.amount < 100
    outcome: allow
  - id: search
    conditions: {toolType: search}
    decision: allowed
`)
	tests := []struct {
		name    string
		in      Input
		want    Outcome
		evalErr bool
	}{
		{"a small amount is admitted", Input{Context: map[string]any{"amount": 5.0}}, Allow, false},
		{"a large amount is denied", Input{Context: map[string]any{"amount": 500.0}}, Block, false},
		{"a string amount is denied", Input{Context: map[string]any{"amount": "5"}}, Block, true},
		{"a missing amount is denied", Input{}, Block, true},
		{"another rule that holds still admits", Input{Action: Action{ToolType: "search"}}, Allow, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(tt.in, OrgPolicy{})
			if d.Outcome != tt.want || slices.Contains(d.ReasonCodes, ReasonEvaluationError) != tt.evalErr {
				t.Fatalf("got %s %v (errors %v), want %s", d.Outcome, d.ReasonCodes, d.Errors, tt.want)
			}
		})
	}
}

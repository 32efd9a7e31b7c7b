package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
)

const typedRefunds = `
id: refunds
name: Refund approvals
inputs:
  amount: {type: number, required: true, min: 0, max: 1000000}
  currency: {type: string, enum: [USD, EUR]}
  reference: {type: string, pattern: "^ref-[0-9]+$", max: 12}
  vip: {type: bool}
  tags: {type: list, max: 2}
  extra: {type: map}
  tier: {type: number, enum: [1, 2, 3]}
rules:
  - id: big-refund
    when: action.tool == "execute_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
  - id: foreign
    when: action.tool in ["execute_refund", "void"] && has(context.currency) && context.currency != "USD"
    outcome: warn
`

func TestCheckInput(t *testing.T) {
	p := mustPack(t, typedRefunds)
	refund := func(ctx map[string]any) Input { return Input{Action: Action{Tool: "execute_refund"}, Context: ctx} }
	tests := []struct {
		name string
		in   Input
		want []string // messages, in declaration order
	}{
		{"valid", refund(map[string]any{"amount": 5000.0, "currency": "EUR", "reference": "ref-12", "vip": true, "tags": []any{"a"}, "extra": map[string]any{}, "tier": 2.0}), nil},
		{"ints count as numbers", refund(map[string]any{"amount": 5000, "tier": 3}), nil},
		{"extra fields are fine", refund(map[string]any{"amount": 1.0, "note": "hi"}), nil},
		{"a string amount", refund(map[string]any{"amount": "5000"}), []string{"field 'amount' must be a number"}},
		{"a list amount", refund(map[string]any{"amount": []any{5000.0}}), []string{"field 'amount' must be a number"}},
		{"a map amount", refund(map[string]any{"amount": map[string]any{"v": 5000.0}}), []string{"field 'amount' must be a number"}},
		{"a null amount", refund(map[string]any{"amount": nil}), []string{"field 'amount' must be a number"}},
		{"a bool amount", refund(map[string]any{"amount": true}), []string{"field 'amount' must be a number"}},
		{"no amount", refund(map[string]any{}), []string{"field 'amount' is required"}},
		{"no context", refund(nil), []string{"field 'amount' is required"}},
		{"below min", refund(map[string]any{"amount": -1.0}), []string{"field 'amount' must be at least 0"}},
		{"above max", refund(map[string]any{"amount": 2e6}), []string{"field 'amount' must be at most 1000000"}},
		{"outside the enum", refund(map[string]any{"amount": 1.0, "currency": "GBP"}), []string{"field 'currency' must be one of USD, EUR"}},
		{"numeric enum", refund(map[string]any{"amount": 1.0, "tier": 4.0}), []string{"field 'tier' must be one of 1, 2, 3"}},
		{"pattern", refund(map[string]any{"amount": 1.0, "reference": "REF-1"}), []string{"field 'reference' must match ^ref-[0-9]+$"}},
		{"string length", refund(map[string]any{"amount": 1.0, "reference": "ref-1234567890"}), []string{"field 'reference' must have a length of at most 12"}},
		{"bool", refund(map[string]any{"amount": 1.0, "vip": "yes"}), []string{"field 'vip' must be a bool"}},
		{"list length", refund(map[string]any{"amount": 1.0, "tags": []any{1.0, 2.0, 3.0}}), []string{"field 'tags' must have a length of at most 2"}},
		{"map", refund(map[string]any{"amount": 1.0, "extra": []any{}}), []string{"field 'extra' must be a map"}},
		{"every violation is listed", refund(map[string]any{"currency": 5.0, "vip": 1.0}), []string{"field 'amount' is required", "field 'currency' must be a string", "field 'vip' must be a bool"}},
		{"a tool no rule of the policy can match is not checked", Input{Action: Action{Tool: "lookup"}, Context: map[string]any{"amount": "x"}}, nil},
		{"a tool of one rule's in-list is checked", Input{Action: Action{Tool: "void"}}, []string{"field 'amount' is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, fe := range p.CheckInput(tt.in) {
				got = append(got, fe.Message)
				if fe.Path != "context."+strings.Split(fe.Message, "'")[1] {
					t.Errorf("path %q for %q", fe.Path, fe.Message)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
			if len(got) > 0 {
				err := InputError(p.CheckInput(tt.in))
				if err.Kind != apperr.KindValidation || err.Message != tt.want[0] || len(err.Details) != len(tt.want) {
					t.Fatalf("InputError = %+v", err)
				}
			}
		})
	}
}

// A policy whose rules can hold for any tool checks every request.
func TestCheckInputGeneralPolicy(t *testing.T) {
	p := mustPack(t, "name: s\ninputs: {risk: {type: number, required: true}}\nrules:\n  - {id: r, when: 'context.risk > 5', outcome: block}\n")
	if got := p.CheckInput(Input{Action: Action{Tool: "anything"}}); len(got) != 1 || got[0].Message != "field 'risk' is required" {
		t.Fatalf("got %+v", got)
	}
	if got := mustPack(t, refunds).CheckInput(Input{}); got != nil {
		t.Fatalf("a pack without inputs refused: %+v", got)
	}
}

func TestInputDeclarationsRefused(t *testing.T) {
	tests := []struct {
		name, src, path, contains string
	}{
		{"number compared with a string", "name: x\ninputs:\n  amount: {type: number}\nrules:\n  - id: cmp\n    when: 'context.amount > \"1000\"'\n    outcome: block\n", "rules[0].when", "line 5: rule cmp: does not match the declared inputs"},
		{"string compared with a number", "name: x\ninputs:\n  currency: {type: string}\nrules:\n  - id: c\n    when: 'context.currency == 5'\n    outcome: block\n", "rules[0].when", "no matching overload"},
		{"undeclared field", "name: x\ninputs:\n  amount: {type: number}\nrules:\n  - id: u\n    when: 'context.amout > 1'\n    outcome: block\n", "rules[0].when", "undefined field 'amout'"},
		{"unknown type", "name: x\ninputs:\n  amount: {type: integer}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.amount.type", "line 3: input amount: type must be one of number"},
		{"bad argument name", "name: x\ninputs:\n  args.amount: {type: number}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.args.amount", "name must be"},
		{"bad name", "name: x\ninputs:\n  1amount: {type: number}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.1amount", "name must be"},
		{"enum on bool", "name: x\ninputs:\n  f: {type: bool, enum: [true]}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.f.enum", "string and number inputs only"},
		{"enum of the wrong type", "name: x\ninputs:\n  n: {type: number, enum: [a]}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.n.enum[0]", "must be numbers"},
		{"bad pattern", "name: x\ninputs:\n  s: {type: string, pattern: '('}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.s.pattern", "RE2"},
		{"pattern on a number", "name: x\ninputs:\n  n: {type: number, pattern: 'x'}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.n.pattern", "string inputs only"},
		{"min above max", "name: x\ninputs:\n  n: {type: number, min: 5, max: 1}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.n.min", "greater than max"},
		{"unknown input key", "name: x\ninputs:\n  n: {type: number, requried: true}\nrules: [{id: a, when: 'true', outcome: warn}]\n", "inputs.n.requried", "requried"},
		{"bad onError", "name: x\nrules:\n  - {id: a, when: 'true', outcome: warn, onError: ignore}\n", "rules[0].onError", "onError must be skip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { wantInvalid(t, tt.src, tt.path, tt.contains) })
	}
}

// Tool arguments (Kaizen's action fields, events' payload arguments) are
// declared as "arguments.<name>" and checked like context fields.
func TestArgumentInputs(t *testing.T) {
	const src = `
name: args
inputs:
  arguments.amount: {type: number, required: true}
  note: {type: string}
rules:
  - id: big
    when: action.tool == "issue_refund" && action.arguments.amount > 1000 && action.host != "x"
    outcome: block
`
	p := mustPack(t, src)
	refund := func(args map[string]any) Input {
		return Input{Action: Action{Tool: "issue_refund", Arguments: args}, Context: map[string]any{"amount": "context is not checked for it"}}
	}
	tests := []struct {
		name string
		in   Input
		want []string
	}{
		{"valid", refund(map[string]any{"amount": 5000.0}), nil},
		{"mistyped", refund(map[string]any{"amount": "5000"}), []string{"arguments.amount: field 'arguments.amount' must be a number"}},
		{"missing", refund(nil), []string{"arguments.amount: field 'arguments.amount' is required"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			for _, fe := range p.CheckInput(tt.in) {
				got = append(got, fe.Path+": "+fe.Message)
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
	if d := p.Evaluate(refund(map[string]any{"amount": 5000.0}), OrgPolicy{}); d.Outcome != Block {
		t.Fatalf("got %s %v", d.Outcome, d.Errors)
	}
	for _, bad := range []struct{ when, contains string }{
		{`action.arguments.amount > "1000"`, "no matching overload"},
		{`action.arguments.amout > 1`, "undefined field 'amout'"},
		{`action.tool > 1`, "no matching overload"},
		{`action["tool"] == "x"`, "no matching overload"},
	} {
		wantInvalid(t, strings.Replace(src, `action.tool == "issue_refund" && action.arguments.amount > 1000 && action.host != "x"`, bad.when, 1), "rules[0].when", bad.contains)
	}
}

// Declared inputs type-check rules; well-typed ones compile and
// evaluate as before.
func TestTypedRulesEvaluate(t *testing.T) {
	p := mustPack(t, typedRefunds)
	d := p.Evaluate(Input{Action: Action{Tool: "execute_refund"}, Context: map[string]any{"amount": 5000.0, "currency": "EUR"}}, OrgPolicy{})
	if d.Outcome != RequireApproval || !slices.Equal(d.ReasonCodes, []string{"AMOUNT_OVER_THRESHOLD", "RULE_FOREIGN"}) || len(d.Errors) != 0 {
		t.Fatalf("got %s %v %v", d.Outcome, d.ReasonCodes, d.Errors)
	}
}

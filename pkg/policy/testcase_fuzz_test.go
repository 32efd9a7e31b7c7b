package policy

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// FuzzParseTests feeds untrusted documents with a tests: section (the body
// of POST /v1/policies/test and /replay) to Parse. Whatever the input, Parse
// answers a document or a validation error, never panics; a document it
// accepts has cases that prepare and run against its pack, and survives
// the JSON round trip a stored policy makes with the same cases. The seeds
// run as a regular test.
func FuzzParseTests(f *testing.F) {
	c, err := NewCompiler()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{
		"name: x\nrules: [{id: r, when: 'true', outcome: block}]\ntests: [{name: t, expect: {decision: block}}]\n",
		"name: x\nrules: [{id: r, when: 'context.amount > 1', outcome: warn}]\ntests:\n  - input: {context: {amount: 2}, action: {tool: t, arguments: {a: [1, {b: null}]}}}\n    expect: {decision: warn, rules: [r], reasonCodes: [RULE_R]}\n  - {expect: {decision: allow}, org: {mode: blocklist, tools: [t]}}\n",
		"name: x\ninputs: {amount: {type: number, required: true}}\nrules: [{id: r, when: 'context.amount > 1', outcome: block}]\ntests: [{name: t, input: {context: {amount: x}}, expect: {decision: invalid_request}}]\n",
		"name: x\nrules: [{id: r, when: 'true', outcome: block}]\ntests: [{name: t, input: {budgets: {b: {used: 2, limit: 1, outcome: warn}}, session: {labels: [pii], labelsUnavailable: true}}, expect: {decision: block}}]\n",
		"name: x\nrules: [{id: r, when: 'true', outcome: block}]\ntests: [{name: t, expect: {decision: maybe}}]\n",
		"name: x\nrules: [{id: r, when: 'true', outcome: block}]\ntests: {name: t}\n",
		"name: x\nrules: [{id: r, when: 'true', outcome: block}]\ntests: [{name: t, expect: {decision: allow}, input: {agent: {tools: 3}}}]\n",
		"tests: [[[]]]",
		"{\"name\":\"x\",\"rules\":[{\"id\":\"r\",\"when\":\"true\",\"outcome\":\"allow\"}],\"tests\":[{\"name\":\"j\",\"expect\":{\"decision\":\"allow\"}}]}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, src []byte) {
		d, err := Parse(src)
		if err != nil {
			var ae *apperr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("Parse error is not a validation error: %v", err)
			}
			return
		}
		if d.ID == "" {
			d.ID = "fuzz"
		}
		comp, err := c.Compile(d)
		if err != nil {
			return
		}
		pack, err := NewPack("t", []Versioned{{Version: 1, Compiled: comp}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range d.Tests {
			pc, err := tc.Prepare("t")
			if err != nil {
				t.Fatalf("Parse accepted a case Prepare refuses: %v", err)
			}
			r := pc.Run(pack)
			if r.Passed != (len(r.Problems) == 0) {
				t.Fatalf("passed %v with problems %q", r.Passed, r.Problems)
			}
		}
		stored, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		again, err := Parse(stored)
		if err != nil {
			t.Fatalf("a stored policy does not parse again: %v\n%s", err, stored)
		}
		if len(again.Tests) != len(d.Tests) {
			t.Fatalf("%d tests after the round trip, want %d", len(again.Tests), len(d.Tests))
		}
	})
}

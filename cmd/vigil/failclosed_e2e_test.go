package main

// End-to-end tests of fail-closed decisions and typed policy inputs
// (issue 12, items 1 and 2) over real HTTP against an in-process Vigil
// (embedded NATS, real ClickHouse): the reproductions of evaluation
// errors that used to answer allow, on all three decision doors; the 400
// for a request violating a declared input, on all three doors, with the
// refusal in the audit log and nothing recorded as a decision; and a rule
// refused at apply time for comparing a number input with a string.

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/auth"
)

// polDoor is one of the three decision endpoints, with how its answer
// says "needs a human".
type polDoor struct {
	name, path string
	status     int
	body       func(agent string, ctx any) map[string]any
	// outcome reads the door's answer as a Vigil outcome name.
	outcome func(t testing.TB, r polResp) (outcome string, codes []string, id string)
}

var polDoors = []polDoor{
	{"decisions.evaluate", "/v1/decisions.evaluate", http.StatusOK,
		func(agent string, ctx any) map[string]any {
			b := map[string]any{"agentId": agent, "action": "execute_refund"}
			if ctx != nil {
				b["context"] = ctx
			}
			return b
		},
		func(t testing.TB, r polResp) (string, []string, string) {
			var d polKLA
			r.decode(t, &d)
			return d.Decision, d.ReasonCodes, d.DecisionID
		}},
	{"policies/check", "/v1/policies/check", http.StatusOK,
		func(agent string, ctx any) map[string]any {
			b := map[string]any{"agentId": agent, "toolName": "execute_refund"}
			if ctx != nil {
				b["parameters"] = ctx
			}
			return b
		},
		func(t testing.TB, r polResp) (string, []string, string) {
			var d struct {
				Outcome     string   `json:"outcome"`
				ReasonCodes []string `json:"reasonCodes"`
				DecisionID  string   `json:"decisionId"`
			}
			r.decode(t, &d)
			return d.Outcome, d.ReasonCodes, d.DecisionID
		}},
	{"verdicts", "/v1/verdicts", http.StatusCreated,
		func(agent string, ctx any) map[string]any {
			b := map[string]any{"agent": agent, "kind": "tool_call", "tool": "execute_refund"}
			if ctx != nil {
				b["context"] = ctx
			}
			return b
		},
		func(t testing.TB, r polResp) (string, []string, string) {
			var v polVerdict
			r.decode(t, &v)
			return v.Outcome, v.ReasonCodes, v.ID
		}},
}

// TestPolFailClosed: with the README's threshold policy, a mistyped or
// missing amount used to answer allow; on every door it now needs
// approval, says EVALUATION_ERROR, and the recorded decision carries the
// CEL error.
func TestPolFailClosed(t *testing.T) {
	s := polStart(t)
	c := s.client(t, s.key("pol-failclosed", auth.RoleOwner))
	s.register("pol-failclosed", "bot-fc")
	c.createPolicy(polKLARefundPolicy)
	contexts := []struct {
		name string
		ctx  any
	}{
		{"amount as a string", map[string]any{"amount": "5000"}},
		{"amount as a list", map[string]any{"amount": []any{5000}}},
		{"amount as an object", map[string]any{"amount": map[string]any{"v": 5000}}},
		{"amount null", map[string]any{"amount": nil}},
		{"amount true", map[string]any{"amount": true}},
		{"no amount", map[string]any{"user_id": "usr_22"}},
		{"no context", nil},
	}
	for _, door := range polDoors {
		for _, tc := range contexts {
			t.Run(door.name+"/"+tc.name, func(t *testing.T) {
				r := c.post(door.path, door.body("bot-fc", tc.ctx)).want(t, door.status, door.path)
				outcome, codes, id := door.outcome(t, r)
				if outcome != "require_approval" || !slices.Equal(codes, []string{"AMOUNT_OVER_THRESHOLD", "EVALUATION_ERROR"}) {
					t.Fatalf("got %s %v, want require_approval [AMOUNT_OVER_THRESHOLD EVALUATION_ERROR]: %s", outcome, codes, r)
				}
				if !strings.Contains(string(r.Body), `"error":"no such`) {
					t.Fatalf("the answer does not explain the CEL error: %s", r)
				}
				rec := c.waitDecision(id)
				b, _ := json.Marshal(rec)
				if !strings.Contains(string(b), `"error":"no such`) || !strings.Contains(string(b), "EVALUATION_ERROR") {
					t.Fatalf("the recorded decision does not carry the CEL error: %s", b)
				}
			})
		}
	}
	t.Run("a correct amount still decides as before", func(t *testing.T) {
		if d := c.evaluate(map[string]any{"agentId": "bot-fc", "action": "execute_refund", "context": map[string]any{"amount": 10}}); d.Decision != "allow" {
			t.Fatalf("small refund: %s", d)
		}
		if d := c.evaluate(map[string]any{"agentId": "bot-fc", "action": "execute_refund", "context": map[string]any{"amount": 1250}}); d.Decision != "require_approval" || slices.Contains(d.ReasonCodes, "EVALUATION_ERROR") {
			t.Fatalf("big refund: %s", d)
		}
	})
}

// polTypedRefunds declares the amount it reads.
const polTypedRefunds = `
id: typed-refunds
name: Typed refund limits
inputs:
  amount: {type: number, required: true, min: 0}
  currency: {type: string, enum: [USD, EUR]}
rules:
  - id: big-refund
    when: action.tool == "execute_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
`

// TestPolTypedInputs: a request violating a declared input is a 400 in
// KLA's shape on all three doors, recorded in the audit log as a
// rejected request and never as a decision; a rule comparing a number
// input with a string is refused when the policy is applied.
func TestPolTypedInputs(t *testing.T) {
	s := polStart(t)
	c := s.client(t, s.key("pol-typed", auth.RoleOwner))
	s.register("pol-typed", "bot-typed")
	c.createPolicy(polTypedRefunds)

	bad := []struct {
		name, message string
		ctx           any
	}{
		{"a string amount", "field 'amount' must be a number", map[string]any{"amount": "5000"}},
		{"a list amount", "field 'amount' must be a number", map[string]any{"amount": []any{5000}}},
		{"a null amount", "field 'amount' must be a number", map[string]any{"amount": nil}},
		{"no amount", "field 'amount' is required", map[string]any{"currency": "USD"}},
		{"no context", "field 'amount' is required", nil},
		{"a negative amount", "field 'amount' must be at least 0", map[string]any{"amount": -5}},
		{"a currency outside the enum", "field 'currency' must be one of USD, EUR", map[string]any{"amount": 5, "currency": "GBP"}},
	}
	rejected := 0
	for _, door := range polDoors {
		for _, tc := range bad {
			t.Run(door.name+"/"+tc.name, func(t *testing.T) {
				r := c.post(door.path, door.body("bot-typed", tc.ctx))
				e := polError(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", door.path)
				if e.Message != tc.message || len(e.Error.Details) == 0 || e.Error.Details[0].Message != tc.message || !strings.HasPrefix(e.Error.Details[0].Path, "context.") {
					t.Fatalf("got %s, want message %q with the field in details", r, tc.message)
				}
			})
			rejected++
		}
	}

	// Tool arguments (Kaizen's action fields) are declared and checked the
	// same way, on the doors that carry them.
	c.createPolicy(`
id: typed-args
name: Typed refund arguments
inputs:
  arguments.amount: {type: number, required: true}
rules:
  - id: big-issue
    when: action.tool == "issue_refund" && action.arguments.amount > 1000
    outcome: block
`)
	argDoors := []struct {
		door string
		path string
		body map[string]any
	}{
		{"verdict", "/v1/verdicts", map[string]any{"agent": "bot-typed", "kind": "tool_call", "tool": "issue_refund", "arguments": map[string]any{"amount": "5000"}}},
		{"decision", "/v1/decisions.evaluate", map[string]any{"agentId": "bot-typed", "action": map[string]any{"tool": "issue_refund", "arguments": map[string]any{"amount": "5000"}}}},
	}
	for _, d := range argDoors {
		t.Run(d.door+"/a mistyped tool argument", func(t *testing.T) {
			r := c.post(d.path, d.body)
			e := polError(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", d.path)
			if e.Message != "field 'arguments.amount' must be a number" || e.Error.Details[0].Path != "arguments.amount" {
				t.Fatalf("got %s", r)
			}
		})
		rejected++
	}

	// A valid request for the same agent is decided; once it is queryable
	// the projection has passed every earlier message, so the refused
	// requests would be listed too if any had been recorded.
	ok := c.post("/v1/decisions.evaluate", polDoors[0].body("bot-typed", map[string]any{"amount": 5000, "currency": "EUR"})).want(t, http.StatusOK, "valid request")
	outcome, _, id := polDoors[0].outcome(t, ok)
	if outcome != "require_approval" {
		t.Fatalf("valid request: %s", ok)
	}
	var page polVerdictPage
	polEventually(t, polWait, "the valid decision listed", func() (bool, string) {
		page = c.verdicts("agent=bot-typed&limit=100")
		return slices.Contains(page.ids(), id), page.String()
	})
	if len(page.Data) != 1 {
		t.Fatalf("refused requests were recorded as decisions: %s", page)
	}

	t.Run("every refusal is in the audit log", func(t *testing.T) {
		type entry struct {
			Action, EntityType, EntityID, Actor string
			After                               struct {
				Source     string `json:"source"`
				Tool       string `json:"tool"`
				Reason     string `json:"reason"`
				Violations []struct {
					Path    string `json:"path"`
					Message string `json:"message"`
				} `json:"violations"`
			}
		}
		var got []entry
		polEventually(t, polWait, "rejections in the audit log", func() (bool, string) {
			r := c.get("/v1/audit?entityType=decision&action=rejected&limit=100").want(t, http.StatusOK, "audit")
			var p struct{ Data []entry }
			r.decode(t, &p)
			got = p.Data
			return len(got) == rejected, strconv.Itoa(len(got)) + " entries: " + r.String()
		})
		sources := map[string]int{}
		for _, e := range got {
			sources[e.After.Source]++
			if e.EntityID != "bot-typed" || !strings.HasPrefix(e.Actor, "key:") || !strings.HasSuffix(e.After.Tool, "_refund") ||
				len(e.After.Violations) == 0 || e.After.Reason != e.After.Violations[0].Message {
				t.Errorf("audit entry %+v", e)
			}
		}
		if sources["decision"] != len(bad)+1 || sources["check"] != len(bad) || sources["verdict"] != len(bad)+1 {
			t.Errorf("refusals by door: %v", sources)
		}
	})

	t.Run("a tool the policy cannot match is not checked", func(t *testing.T) {
		if d := c.evaluate(map[string]any{"agentId": "bot-typed", "action": "lookup", "context": map[string]any{"amount": "n/a"}}); d.Decision != "allow" {
			t.Fatalf("lookup: %s", d)
		}
	})

	t.Run("a rule comparing a number input with a string is refused at apply time", func(t *testing.T) {
		src := strings.Replace(polTypedRefunds, "context.amount > 1000", `context.amount > "1000"`, 1)
		src = strings.Replace(src, "id: typed-refunds", "id: typed-refunds-2", 1)
		r := c.post("/v1/policies", src, "Content-Type", "application/yaml")
		e := polError(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "mistyped rule")
		if len(e.Error.Details) != 1 || e.Error.Details[0].Path != "rules[0].when" ||
			!strings.Contains(e.Error.Details[0].Message, "line 8: rule big-refund: does not match the declared inputs") {
			t.Fatalf("got %s", r)
		}
		c.get("/v1/policies/"+url.PathEscape("typed-refunds-2")).want(t, http.StatusNotFound, "refused policy stored")
	})
}

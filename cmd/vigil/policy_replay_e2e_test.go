package main

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
)

// replayLive is the live policy of both tenants in the replay tests.
const replayLive = `
id: refunds
name: Refunds
rules:
  - id: big-refund
    when: action.tool == "refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
`

// replayDraft raises the threshold (the 5000 refund would be allowed)
// and blocks lookups of card numbers.
const replayDraft = `
id: refunds
name: Refunds
rules:
  - id: big-refund
    when: action.tool == "refund" && context.amount > 10000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
  - id: no-card-lookups
    when: action.tool == "lookup" && context.field == "card"
    outcome: block
    reasonCodes: [CARD_LOOKUP]
tests:
  - name: a small refund is allowed
    input: {agent: {id: bot}, action: {tool: refund}, context: {amount: 50}}
    expect: {decision: allow, reasonCodes: [DEFAULT_ALLOW]}
  - name: a huge refund needs approval
    input: {agent: {id: bot}, action: {tool: refund}, context: {amount: 50000}}
    expect: {decision: require_approval, rules: [refunds/big-refund]}
  - name: a card lookup is blocked (wrong on purpose)
    input: {agent: {id: bot}, action: {tool: lookup}, context: {field: card}}
    expect: {decision: warn, reasonCodes: [CARD_LOOKUP], rules: [big-refund]}
`

func yamlPost(c polClient, path, doc string) polResp {
	c.t.Helper()
	return c.post(path, doc, "Content-Type", "application/yaml")
}

// TestPolicyTestCasesAPI runs a draft's tests: through POST
// /v1/policies/test: pass and fail per case with the actual decision
// explained, and every bad input answered with the envelope.
func TestPolicyTestCasesAPI(t *testing.T) {
	e := newEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	viewer := polClient{t: t, base: e.base, key: e.key("default", auth.RoleViewer)}

	var rep struct {
		Valid          bool   `json:"valid"`
		ID             string `json:"id"`
		Passed, Failed int
		Cases          []struct {
			Name     string   `json:"name"`
			Line     int      `json:"line"`
			Passed   bool     `json:"passed"`
			Got      string   `json:"got"`
			Problems []string `json:"problems"`
			Decision *struct {
				Decision    string     `json:"decision"`
				ReasonCodes []string   `json:"reasonCodes"`
				Matches     []polMatch `json:"matches"`
			} `json:"decision"`
		} `json:"cases"`
	}
	// A viewer may run tests (policies:read): nothing is stored.
	yamlPost(viewer, "/v1/policies/test", replayDraft).want(t, http.StatusOK, "test").decode(t, &rep)
	if !rep.Valid || rep.ID != "refunds" || rep.Passed != 2 || rep.Failed != 1 || len(rep.Cases) != 3 {
		t.Fatalf("report %+v", rep)
	}
	for i, c := range rep.Cases {
		if c.Line == 0 || c.Decision == nil {
			t.Errorf("case %d has no line or decision: %+v", i, c)
		}
	}
	bad := rep.Cases[2]
	if bad.Passed || bad.Decision.Decision != "block" || !slices.Equal(bad.Decision.ReasonCodes, []string{"CARD_LOOKUP"}) ||
		len(bad.Decision.Matches) != 1 || bad.Decision.Matches[0].RuleID != "no-card-lookups" {
		t.Fatalf("failing case %+v", bad)
	}
	if !slices.Equal(bad.Problems, []string{"decision block, want warn", "rule big-refund did not match"}) {
		t.Fatalf("problems %q", bad.Problems)
	}
	if rep.Cases[1].Decision.Matches[0].PolicyID != "refunds" {
		t.Fatalf("matches %+v", rep.Cases[1].Decision.Matches)
	}
	// Nothing was stored.
	owner.get("/v1/policies/refunds").want(t, http.StatusNotFound, "not stored")

	// A policy without tests: no cases. A declared input the case
	// violates: the case expecting invalid_request passes.
	yamlPost(owner, "/v1/policies/test", replayLive).want(t, http.StatusOK, "no tests").decode(t, &rep)
	if rep.Passed != 0 || rep.Failed != 0 || len(rep.Cases) != 0 {
		t.Fatalf("no tests: %+v", rep)
	}
	inputs := `
name: Typed
inputs: {amount: {type: number, required: true}}
rules: [{id: r, when: 'action.tool == "refund" && context.amount > 1', outcome: block}]
tests:
  - {name: refused, input: {action: {tool: refund}, context: {amount: "lots"}}, expect: {decision: invalid_request}}
  - {name: not refused, input: {action: {tool: refund}, context: {amount: "lots"}}, expect: {decision: block}}
`
	yamlPost(owner, "/v1/policies/test", inputs).want(t, http.StatusOK, "inputs").decode(t, &rep)
	if rep.Passed != 1 || rep.Failed != 1 || !rep.Cases[0].Passed || rep.Cases[1].Decision != nil || rep.Cases[1].Got != "invalid_request" {
		t.Fatalf("inputs: %+v", rep)
	}

	for _, c := range []struct {
		name, doc string
		wants     []pair
	}{
		{"not YAML", "rules: [", []pair{{"", "malformed_yaml"}}},
		{"bad CEL", "name: x\nrules: [{id: r, when: 'action.tool ==', outcome: block}]\n", []pair{{"rules[0].when", "invalid_expression"}}},
		{"bad expectation", replayLive + "tests: [{name: t, expect: {decision: maybe}}]\n", []pair{{"tests[0]", "invalid_test"}}},
		{"no expectation", replayLive + "tests: [{name: t}]\n", []pair{{"tests[0]", "invalid_test"}}},
		{"misspelt key", replayLive + "tests: [{name: t, expct: {decision: allow}}]\n", nil},
		{"duplicate names", replayLive + "tests: [{name: t, expect: {decision: allow}}, {name: t, expect: {decision: allow}}]\n", []pair{{"tests[1].name", "duplicate"}}},
		{"bad org", replayLive + "tests: [{name: t, org: {mode: sometimes}, expect: {decision: allow}}]\n", []pair{{"tests[0]", "invalid_test"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(req{method: http.MethodPost, path: "/v1/policies/test", key: e.owner, body: c.doc, header: map[string]string{"Content-Type": "application/yaml"}})
			env := checkEnvelope(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.wants)
			if c.name != "not YAML" && !strings.Contains(fmt.Sprint(env.Error.Details), "line ") {
				t.Errorf("no position in %s", r.body)
			}
		})
	}
	agent := polClient{t: t, base: e.base, key: e.key("default", auth.RoleAgent, "bot")}
	yamlPost(agent, "/v1/policies/test", replayDraft).want(t, http.StatusForbidden, "agent key")
}

type replayRep struct {
	ID        string `json:"id"`
	Days      int    `json:"days"`
	Examined  int    `json:"examined"`
	Unchanged int    `json:"unchanged"`
	Changed   int    `json:"changed"`
	ByChange  []struct {
		From, To string
		Count    int
	} `json:"byChange"`
	Changes []struct {
		DecisionID string    `json:"decisionId"`
		At         time.Time `json:"at"`
		AgentID    string    `json:"agentId"`
		Tool       string    `json:"tool"`
		Old, New   struct {
			Decision    string   `json:"decision"`
			ReasonCodes []string `json:"reasonCodes"`
			Rules       []string `json:"rules"`
		}
	} `json:"changes"`
	ChangesTruncated bool `json:"changesTruncated"`
	Truncated        bool `json:"truncated"`
}

// TestPolicyReplayAPI replays recorded decisions against a draft through
// POST /v1/policies/replay: what changes and what does not, only the
// caller's tenant's decisions, the limits, and bad input.
func TestPolicyReplayAPI(t *testing.T) {
	e := newEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	other := polClient{t: t, base: e.base, key: e.key("other", auth.RoleOwner)}
	for _, c := range []polClient{owner, other} {
		c.createPolicy(replayLive)
	}
	e.register("default", "bot")
	e.register("other", "bot")
	ask := func(c polClient, tool string, ctx map[string]any) polKLA {
		return c.evaluate(map[string]any{"agentId": "bot", "sessionId": "replay-s", "action": tool, "context": ctx})
	}
	big := ask(owner, "refund", map[string]any{"amount": 5000})
	card := ask(owner, "lookup", map[string]any{"field": "card"})
	small := ask(owner, "refund", map[string]any{"amount": 50})
	if big.Decision != "require_approval" || card.Decision != "allow" || small.Decision != "allow" {
		t.Fatalf("recorded: %s, %s, %s", big, card, small)
	}
	// The other tenant's decisions would change too if they were read.
	for range 3 {
		ask(other, "refund", map[string]any{"amount": 5000})
	}
	for _, c := range []polClient{owner, other} {
		polEventually(t, 20*time.Second, "decisions projected", func() (bool, string) {
			r := c.get("/v1/verdicts?limit=100")
			var p struct{ Data []any }
			r.decode(t, &p)
			return len(p.Data) == 3, r.String()
		})
	}

	// Both tenants used the session id: each sees only its own decisions
	// of it (the console's session timeline reads this list).
	var sp struct{ Data []struct{ ID string } }
	owner.get("/v1/verdicts?session=replay-s").want(t, http.StatusOK, "session decisions").decode(t, &sp)
	var ids []string
	for _, d := range sp.Data {
		ids = append(ids, d.ID)
	}
	slices.Sort(ids)
	want := []string{big.DecisionID, card.DecisionID, small.DecisionID}
	slices.Sort(want)
	if !slices.Equal(ids, want) {
		t.Fatalf("the session's decisions %q, want %q", ids, want)
	}
	checkEnvelope(t, e.get(e.owner, "/v1/verdicts?session="+strings.Repeat("s", 257)), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"session", "too_long"}})

	var rep replayRep
	yamlPost(owner, "/v1/policies/replay?days=7", replayDraft).want(t, http.StatusOK, "replay").decode(t, &rep)
	if rep.Examined != 3 || rep.Changed != 2 || rep.Unchanged != 1 || rep.Days != 7 || rep.Truncated || rep.ChangesTruncated || len(rep.Changes) != 2 {
		t.Fatalf("replay %+v", rep)
	}
	byID := map[string]int{}
	for i, c := range rep.Changes {
		byID[c.DecisionID] = i
		if c.AgentID != "bot" || c.At.IsZero() {
			t.Errorf("change %+v", c)
		}
	}
	if i, ok := byID[big.DecisionID]; !ok || rep.Changes[i].Old.Decision != "require_approval" || rep.Changes[i].New.Decision != "allow" ||
		!slices.Equal(rep.Changes[i].Old.Rules, []string{"refunds/big-refund"}) || rep.Changes[i].Tool != "refund" {
		t.Fatalf("the big refund: %+v", rep.Changes)
	}
	if i, ok := byID[card.DecisionID]; !ok || rep.Changes[i].New.Decision != "block" || !slices.Equal(rep.Changes[i].New.Rules, []string{"refunds/no-card-lookups"}) {
		t.Fatalf("the card lookup: %+v", rep.Changes)
	}
	if _, ok := byID[small.DecisionID]; ok {
		t.Fatal("the small refund did not change but is listed")
	}
	if len(rep.ByChange) != 2 || rep.ByChange[0].Count != 1 {
		t.Fatalf("byChange %+v", rep.ByChange)
	}

	// The live policy replayed against itself changes nothing; in the
	// other tenant the draft changes exactly its own three decisions.
	yamlPost(owner, "/v1/policies/replay", replayLive).want(t, http.StatusOK, "replay live").decode(t, &rep)
	if rep.Examined != 3 || rep.Changed != 0 || len(rep.Changes) != 0 || rep.Days != 7 {
		t.Fatalf("replay of the live policy %+v", rep)
	}
	yamlPost(other, "/v1/policies/replay?days=1", replayDraft).want(t, http.StatusOK, "other tenant").decode(t, &rep)
	if rep.Examined != 3 || rep.Changed != 3 {
		t.Fatalf("other tenant %+v", rep)
	}

	// Limits: the changes listed, and the decisions examined (newest
	// first; the small refund is the newest of the tenant's three).
	yamlPost(owner, "/v1/policies/replay?limit=1", replayDraft).want(t, http.StatusOK, "limit").decode(t, &rep)
	if rep.Changed != 2 || len(rep.Changes) != 1 || !rep.ChangesTruncated || rep.Truncated {
		t.Fatalf("limit=1 %+v", rep)
	}
	yamlPost(owner, "/v1/policies/replay?max=2", replayDraft).want(t, http.StatusOK, "max").decode(t, &rep)
	if rep.Examined != 2 || !rep.Truncated {
		t.Fatalf("max=2 %+v", rep)
	}

	// Roles: a viewer may replay (policies:read and verdicts:read), an
	// agent key may not.
	viewer := polClient{t: t, base: e.base, key: e.key("default", auth.RoleViewer)}
	yamlPost(viewer, "/v1/policies/replay", replayDraft).want(t, http.StatusOK, "viewer")
	agent := polClient{t: t, base: e.base, key: e.key("default", auth.RoleAgent, "bot")}
	yamlPost(agent, "/v1/policies/replay", replayDraft).want(t, http.StatusForbidden, "agent key")

	for _, c := range []struct {
		name, query, doc string
		wants            []pair
	}{
		{"days 0", "days=0", replayDraft, []pair{{"days", "out_of_range"}}},
		{"days negative", "days=-3", replayDraft, []pair{{"days", "out_of_range"}}},
		{"too many days", "days=31", replayDraft, []pair{{"days", "out_of_range"}}},
		{"days not a number", "days=week", replayDraft, []pair{{"days", "out_of_range"}}},
		{"limit 0", "limit=0", replayDraft, []pair{{"limit", "out_of_range"}}},
		{"limit too high", "limit=501", replayDraft, []pair{{"limit", "out_of_range"}}},
		{"max too high", "max=10001", replayDraft, []pair{{"max", "out_of_range"}}},
		{"not YAML", "days=7", "rules: [", []pair{{"", "malformed_yaml"}}},
		{"bad CEL", "days=7", "name: x\nrules: [{id: r, when: 'action.tool ==', outcome: block}]\n", []pair{{"rules[0].when", "invalid_expression"}}},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(req{method: http.MethodPost, path: "/v1/policies/replay?" + c.query, key: e.owner, body: c.doc, header: map[string]string{"Content-Type": "application/yaml"}})
			checkEnvelope(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.wants)
		})
	}
}

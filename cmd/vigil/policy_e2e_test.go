package main

// End-to-end tests of policies and decisions over real HTTP against an
// in-process Vigil (embedded NATS, real ClickHouse): the three seeds'
// decision endpoints, precedence, built-in checks, live policy edits,
// idempotency, tenant isolation, roles, policy validation, the policy
// service being down, verdict triage and listing, and event verdicts.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/auth"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

var (
	polPackHashRe   = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	polDecisionIDRe = regexp.MustCompile(`^dec_[0-9a-f]+$`)
)

// polKLARefundPolicy is the KLA seed's threshold as a Vigil policy.
const polKLARefundPolicy = `
id: refunds
name: Refund limits
description: the KLA seed's example
rules:
  - id: big-refund
    when: action.tool == "execute_refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
    message: Refunds over 1000 need a human's approval.
`

// polKLASeedRequest is the request of the KLA seed, verbatim.
const polKLASeedRequest = `{
"agentId": "agt_9f81a7",
"action": "execute_refund",
"context": {
"amount": 1250.00,
"user_id": "usr_22"
}
}`

// TestPolSeedExamples: each seed's decision example, sent as documented,
// gets the documented response shape.
func TestPolSeedExamples(t *testing.T) {
	s := polStart(t)

	t.Run("KLA decisions.evaluate", func(t *testing.T) {
		c := s.client(t, polKey(t, s.st.Store, "pol-kla", auth.RoleOwner))
		s.register("pol-kla", "agt_9f81a7")
		c.createPolicy(polKLARefundPolicy)
		r := c.post("/v1/decisions.evaluate", polKLASeedRequest).want(t, http.StatusOK, "KLA seed request")
		raw := r.object(t)
		if raw["decision"] != "require_approval" {
			t.Errorf("decision = %v, want require_approval", raw["decision"])
		}
		if codes, _ := raw["reasonCodes"].([]any); len(codes) != 1 || codes[0] != "AMOUNT_OVER_THRESHOLD" {
			t.Errorf("reasonCodes = %v, want [AMOUNT_OVER_THRESHOLD]", raw["reasonCodes"])
		}
		if raw["requiresDeskApproval"] != true {
			t.Errorf("requiresDeskApproval = %v, want true", raw["requiresDeskApproval"])
		}
		if id, _ := raw["decisionId"].(string); !polDecisionIDRe.MatchString(id) {
			t.Errorf("decisionId = %v, want dec_…", raw["decisionId"])
		}
		if h, _ := raw["packHash"].(string); !polPackHashRe.MatchString(h) {
			t.Errorf("packHash = %v, want sha256:<64 hex>", raw["packHash"])
		}
		var d polKLA
		r.decode(t, &d)
		if len(d.Matches) != 1 || d.Matches[0].PolicyID != "refunds" || d.Matches[0].RuleID != "big-refund" {
			t.Errorf("matches = %+v, want refunds/big-refund", d.Matches)
		}

		// Under the threshold: allow, and the desk is not involved.
		small := c.evaluate(map[string]any{"agentId": "agt_9f81a7", "action": "execute_refund", "context": map[string]any{"amount": 999.99, "user_id": "usr_22"}})
		if small.Decision != "allow" || !slices.Equal(small.ReasonCodes, []string{rules.ReasonDefaultAllow}) || small.RequiresDeskApproval {
			t.Errorf("a 999.99 refund: got %s, want allow [DEFAULT_ALLOW] without desk approval", small)
		}
		if small.PackHash != d.PackHash {
			t.Errorf("same pack, different hashes: %s vs %s", small.PackHash, d.PackHash)
		}
		// The decision was recorded with its input.
		// The decision can be looked up by its id (it awaits approval).
		rec := c.waitDecision(d.DecisionID)
		if rec["decisionId"] != d.DecisionID || rec["decision"] != "require_approval" || rec["final"] != false {
			t.Errorf("GET /v1/decisions/%s = %v", d.DecisionID, rec)
		}
	})

	t.Run("Kaizen verdicts", func(t *testing.T) {
		c := s.client(t, polKey(t, s.st.Store, "pol-kaizen", auth.RoleOwner))
		seed := `{"kind":"tool_call","tool":"issue_refund","target":"api.stripe.com:443","publisher":"stripe","metadata":{"source":"egress"},"agent":"a1"}`
		r := c.post("/v1/verdicts", seed).want(t, http.StatusCreated, "Kaizen seed action")
		raw := r.object(t)
		if raw["decision"] != "allow" || raw["reason"] != "ok" {
			t.Errorf("decision/reason = %v/%v, want allow/ok", raw["decision"], raw["reason"])
		}
		if ev, ok := raw["evidence"].([]any); !ok || len(ev) != 0 {
			t.Errorf("evidence = %#v, want an empty array", raw["evidence"])
		}
		if c, ok := raw["confidence"]; !ok || c != nil {
			t.Errorf("confidence = %#v (present %v), want null", c, ok)
		}
		if raw["agent"] != "a1" || raw["source"] != rules.SourceVerdict || raw["status"] != "open" {
			t.Errorf("agent/source/status = %v/%v/%v", raw["agent"], raw["source"], raw["status"])
		}
		act, _ := raw["action"].(map[string]any)
		if act["tool"] != "issue_refund" || act["target"] != "api.stripe.com:443" || act["publisher"] != "stripe" {
			t.Errorf("action echoed as %v", act)
		}

		// A blocked action: Kaizen's other value, with the evidence.
		c.post("/v1/org-policy", map[string]any{"mode": "blocklist", "publishers": []string{"stripe"}}).want(t, http.StatusOK, "org policy")
		v := c.verdict(seed)
		if v.Decision != "block" || v.Outcome != "block" || v.Confidence != nil {
			t.Fatalf("blocked publisher: got %+v", v)
		}
		if len(v.Evidence) != 1 || !slices.Equal(v.Evidence[0].ReasonCodes, []string{rules.ReasonOrgBlockedPublisher}) || v.Reason == "" || v.Reason == "ok" {
			t.Errorf("blocked publisher: reason %q evidence %+v", v.Reason, v.Evidence)
		}
	})

	t.Run("Kaplaix policies and check", func(t *testing.T) {
		c := s.client(t, polKey(t, s.st.Store, "pol-kaplaix", auth.RoleOwner))
		r := c.post("/v1/policies", `{"name":"payments","conditions":{"toolType":"payment","operation":"refund"},"priority":10,"defaultDecision":"denied"}`).
			want(t, http.StatusCreated, "Kaplaix policy")
		var view struct {
			ID              string            `json:"id"`
			Name            string            `json:"name"`
			Priority        int               `json:"priority"`
			Enabled         bool              `json:"enabled"`
			Conditions      map[string]string `json:"conditions"`
			DefaultDecision string            `json:"defaultDecision"`
			Rules           []rules.Rule      `json:"rules"`
			Status          string            `json:"status"`
			Version         uint64            `json:"version"`
		}
		r.decode(t, &view)
		if !strings.HasPrefix(view.ID, "pol_") || view.Name != "payments" || view.Priority != 10 || !view.Enabled || view.Status != "active" || view.Version == 0 {
			t.Errorf("policy view %s", r)
		}
		if view.Conditions["toolType"] != "payment" || view.Conditions["operation"] != "refund" || view.DefaultDecision == "" {
			t.Errorf("conditions not returned: %s", r)
		}
		if len(view.Rules) != 1 || view.Rules[0].When != `action.operation == "refund" && action.toolType == "payment"` || view.Rules[0].Outcome != "block" {
			t.Errorf("mapped rules = %+v", view.Rules)
		}

		chk := c.post("/v1/policies/check", `{"agentId":"a1","toolType":"payment","operation":"refund"}`).want(t, http.StatusOK, "check").object(t)
		if chk["decision"] != "denied" || chk["allowed"] != false || chk["outcome"] != "block" || chk["requiresApproval"] != false {
			t.Errorf("check = %v, want denied, allowed false", chk)
		}
		// The mapped rule is named after the policy: RULE_<POLICY_ID>.
		wantCode := "RULE_" + strings.ToUpper(view.ID)
		if codes, _ := chk["reasonCodes"].([]any); len(codes) != 1 || codes[0] != wantCode {
			t.Errorf("reasonCodes = %v, want [%s]", chk["reasonCodes"], wantCode)
		}
		if m, _ := chk["matchedPolicies"].([]any); len(m) != 1 || m[0].(map[string]any)["policyId"] != view.ID {
			t.Errorf("matchedPolicies = %v, want the payments policy", chk["matchedPolicies"])
		}
		if id, _ := chk["decisionId"].(string); !polDecisionIDRe.MatchString(id) {
			t.Errorf("decisionId = %v", chk["decisionId"])
		}
		if h, _ := chk["packHash"].(string); !polPackHashRe.MatchString(h) {
			t.Errorf("packHash = %v", chk["packHash"])
		}
		other := c.post("/v1/policies/check", `{"agentId":"a1","toolType":"payment","operation":"read"}`).want(t, http.StatusOK, "check").object(t)
		if other["decision"] != "allowed" || other["allowed"] != true {
			t.Errorf("non-matching check = %v, want allowed", other)
		}

		// A Kaplaix client renames its policy and turns it into a review.
		c.do(http.MethodPatch, "/v1/policies/"+view.ID, `{"name":"payments (renamed)"}`).want(t, http.StatusOK, "rename a Kaplaix-form policy")
		chk = c.post("/v1/policies/check", `{"agentId":"a1","toolType":"payment","operation":"refund"}`).want(t, http.StatusOK, "check").object(t)
		if chk["decision"] != "denied" {
			t.Errorf("after a rename: %v, want still denied", chk)
		}
		c.do(http.MethodPatch, "/v1/policies/"+view.ID, `{"defaultDecision":"requires_review"}`).want(t, http.StatusOK, "change defaultDecision")
		chk = c.post("/v1/policies/check", `{"agentId":"a1","toolType":"payment","operation":"refund"}`).want(t, http.StatusOK, "check").object(t)
		if chk["decision"] != "requires_review" || chk["allowed"] != false || chk["requiresApproval"] != true {
			t.Errorf("after requires_review: %v", chk)
		}
	})
}

// polGroups checks got is the concatenation of groups, each group in any
// order (codes of one outcome have no specified order among themselves).
func polGroups(got []string, groups ...[]string) bool {
	for _, g := range groups {
		if len(got) < len(g) {
			return false
		}
		a, b := slices.Clone(got[:len(g)]), slices.Clone(g)
		sort.Strings(a)
		sort.Strings(b)
		if !slices.Equal(a, b) {
			return false
		}
		got = got[len(g):]
	}
	return len(got) == 0
}

// TestPolPrecedence: several matching rules, from two policies and in any
// document order: the strictest outcome wins, its reason codes come first;
// the three front doors agree.
func TestPolPrecedence(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-prec", auth.RoleOwner))
	s.register("pol-prec", "ops-bot")
	c.createPolicy(`
id: b-deploys
name: deploys
rules:
  - id: forced-prod
    when: action.tool == "deploy" && has(context.env) && context.env == "prod" && has(context.force) && context.force == true
    outcome: deny
    reasonCodes: [FORCED_PROD_DEPLOY]
  - id: prod
    when: action.tool == "deploy" && has(context.env) && context.env == "prod"
    outcome: review
    reasonCodes: [PROD_DEPLOY]
    approvalTimeout: 15m
  - id: any-deploy
    when: action.tool == "deploy"
    outcome: warning
    reasonCodes: [DEPLOY_NOTICE]
`)
	c.createPolicy(`{"id":"a-audit","name":"audit","priority":99,"rules":[{"id":"audited","when":"action.tool in [\"deploy\", \"rollback\"]","outcome":"warn","reasonCodes":["AUDITED_TOOL"]}]}`)

	cases := []struct {
		name     string
		tool     string
		ctx      map[string]any
		outcome  string
		groups   [][]string
		matches  int
		timeoutS int
	}{
		{"no rule matches", "lookup", nil, "allow", [][]string{{"DEFAULT_ALLOW"}}, 0, 0},
		{"one warn", "rollback", nil, "warn", [][]string{{"AUDITED_TOOL"}}, 1, 0},
		{"two warns from two policies", "deploy", map[string]any{"env": "staging"}, "warn", [][]string{{"AUDITED_TOOL", "DEPLOY_NOTICE"}}, 2, 0},
		{"require_approval over warns", "deploy", map[string]any{"env": "prod"}, "require_approval",
			[][]string{{"PROD_DEPLOY"}, {"AUDITED_TOOL", "DEPLOY_NOTICE"}}, 3, 900},
		{"block over everything", "deploy", map[string]any{"env": "prod", "force": true}, "block",
			[][]string{{"FORCED_PROD_DEPLOY"}, {"PROD_DEPLOY"}, {"AUDITED_TOOL", "DEPLOY_NOTICE"}}, 4, 900},
	}
	kaplaix := map[string]string{"allow": "allowed", "warn": "allowed", "require_approval": "requires_review", "block": "denied"}
	kaizen := map[string]string{"allow": "allow", "warn": "allow", "require_approval": "block", "block": "block"}
	var hash string
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c
			c.t = t
			d := c.evaluate(map[string]any{"agentId": "ops-bot", "action": tc.tool, "context": tc.ctx})
			if d.Decision != tc.outcome || !polGroups(d.ReasonCodes, tc.groups...) {
				t.Errorf("evaluate: got %s, want %s %v", d, tc.outcome, tc.groups)
			}
			if d.RequiresDeskApproval != (tc.outcome == "require_approval") {
				t.Errorf("requiresDeskApproval = %v for %s", d.RequiresDeskApproval, tc.outcome)
			}
			if len(d.Matches) != tc.matches {
				t.Errorf("matches = %+v, want %d", d.Matches, tc.matches)
			}
			for _, m := range d.Matches {
				if m.PolicyID == "" || m.RuleID == "" {
					t.Errorf("a match does not name its policy and rule: %+v", m)
				}
			}
			if d.ApprovalTimeoutSec != tc.timeoutS {
				t.Errorf("approvalTimeoutSeconds = %d, want %d", d.ApprovalTimeoutSec, tc.timeoutS)
			}
			if hash == "" {
				hash = d.PackHash
			} else if d.PackHash != hash {
				t.Errorf("pack hash changed without a policy change: %s vs %s", d.PackHash, hash)
			}

			// The Kaplaix door.
			chk := c.post("/v1/policies/check", map[string]any{"agentId": "ops-bot", "toolName": tc.tool, "context": tc.ctx}).want(t, http.StatusOK, "check").object(t)
			if chk["decision"] != kaplaix[tc.outcome] || chk["outcome"] != tc.outcome || chk["allowed"] != (tc.outcome == "allow" || tc.outcome == "warn") {
				t.Errorf("check: got %v, want %s (%s)", chk, kaplaix[tc.outcome], tc.outcome)
			}
			// The Kaizen door (its action carries no context, so only the
			// context-free cases can be compared).
			v := c.verdict(map[string]any{"agent": "ops-bot", "kind": "tool_call", "tool": tc.tool, "arguments": map[string]any{}})
			if tc.ctx == nil && (v.Decision != kaizen[tc.outcome] || v.Outcome != tc.outcome || !polGroups(v.ReasonCodes, tc.groups...)) {
				t.Errorf("verdict: got %+v, want %s (%s)", v, kaizen[tc.outcome], tc.outcome)
			}
		})
	}
}

// TestPolBuiltins: paused agents, the org block- and allowlist, and agent
// manifests, each taking effect on the very next decision.
func TestPolBuiltins(t *testing.T) {
	s := polStart(t)
	owner := s.key("pol-builtins", auth.RoleOwner)
	s.register("pol-builtins", "bot", "other-bot", "declared-bot")
	eval := func(c polClient, agentID, tool, target string) polKLA {
		c.t.Helper()
		return c.evaluate(map[string]any{"agentId": agentID, "action": map[string]any{"kind": "tool_call", "tool": tool, "target": target}})
	}
	want := func(t *testing.T, d polKLA, outcome string, codes ...string) {
		t.Helper()
		if d.Decision != outcome || !slices.Equal(d.ReasonCodes, codes) {
			t.Errorf("got %s, want %s %v", d, outcome, codes)
		}
	}

	t.Run("paused agent", func(t *testing.T) {
		c := s.client(t, owner)
		want(t, eval(c, "bot", "lookup", ""), "allow", "DEFAULT_ALLOW")
		for range 3 {
			r := c.post("/v1/agents/bot/settings", `{"paused":true}`).want(t, http.StatusOK, "pause")
			if r.object(t)["paused"] != true {
				t.Fatalf("pause: %s", r)
			}
			want(t, eval(c, "bot", "lookup", ""), "block", "AGENT_PAUSED")
			want(t, eval(c, "other-bot", "lookup", ""), "allow", "DEFAULT_ALLOW")
			c.post("/v1/agents/bot/settings", `{"paused":false}`).want(t, http.StatusOK, "unpause")
			want(t, eval(c, "bot", "lookup", ""), "allow", "DEFAULT_ALLOW")
		}
	})

	t.Run("org blocklist", func(t *testing.T) {
		c := s.client(t, owner)
		c.post("/v1/org-policy", `{"mode":"blocklist","tools":["rm"],"destinations":["*.pastebin.com"]}`).want(t, http.StatusOK, "blocklist")
		want(t, eval(c, "bot", "rm", ""), "block", "ORG_BLOCKLIST_TOOL")
		want(t, eval(c, "bot", "lookup", ""), "allow", "DEFAULT_ALLOW")
		want(t, eval(c, "bot", "upload", "https://x.pastebin.com:443/new"), "block", "ORG_BLOCKLIST_DESTINATION")
		got := c.get("/v1/org-policy").want(t, http.StatusOK, "get org policy").object(t)
		if got["mode"] != "blocklist" || fmt.Sprint(got["tools"]) != "[rm]" {
			t.Errorf("org policy = %v", got)
		}
	})

	t.Run("org allowlist", func(t *testing.T) {
		c := s.client(t, owner)
		c.post("/v1/org-policy", `{"mode":"allowlist","allowlist":{"tools":["lookup"]}}`).want(t, http.StatusOK, "allowlist")
		want(t, eval(c, "bot", "rm", ""), "block", "ORG_NOT_ALLOWLISTED")
		want(t, eval(c, "bot", "search", ""), "block", "ORG_NOT_ALLOWLISTED")
		want(t, eval(c, "bot", "lookup", ""), "allow", "DEFAULT_ALLOW")
		c.post("/v1/org-policy", `{"mode":"off"}`).want(t, http.StatusOK, "org off")
		want(t, eval(c, "bot", "rm", ""), "allow", "DEFAULT_ALLOW")
		c.post("/v1/org-policy", `{"mode":"sometimes"}`).want(t, http.StatusBadRequest, "bad mode")
	})

	t.Run("manifest and learn", func(t *testing.T) {
		c := s.client(t, owner)
		c.post("/v1/agents/declared-bot/manifest", `{"tools":["lookup"],"destinations":["api.stripe.com"]}`).want(t, http.StatusOK, "manifest")
		want(t, eval(c, "declared-bot", "lookup", "https://api.stripe.com/v1/charges"), "allow", "DEFAULT_ALLOW")
		want(t, eval(c, "declared-bot", "lookup", "evil.example.com:443"), "warn", "UNDECLARED_DESTINATION")
		want(t, eval(c, "declared-bot", "shell", ""), "warn", "UNDECLARED_TOOL")

		v := c.verdict(`{"agent":"declared-bot","kind":"tool_call","tool":"shell","target":"api.stripe.com:443"}`)
		if v.Decision != "allow" || v.Outcome != "warn" || !slices.Equal(v.ReasonCodes, []string{"UNDECLARED_TOOL"}) {
			t.Fatalf("undeclared tool verdict: %+v", v)
		}
		// learn reads the recorded verdict at once (read-your-writes).
		learned := c.post("/v1/verdicts/"+v.ID+"/learn", nil).want(t, http.StatusOK, "learn").object(t)
		decl, _ := learned["declaration"].(map[string]any)
		if !strings.Contains(fmt.Sprint(decl["tools"]), "shell") {
			t.Errorf("learned declaration = %v, want shell among the tools", decl)
		}
		again := c.verdict(`{"agent":"declared-bot","kind":"tool_call","tool":"shell","target":"api.stripe.com:443"}`)
		if again.Outcome != "allow" || slices.Contains(again.ReasonCodes, "UNDECLARED_TOOL") {
			t.Errorf("after learn: %+v, want allow without UNDECLARED_TOOL", again)
		}
		// Still declared: another tool is still undeclared.
		want(t, eval(c, "declared-bot", "exec", ""), "warn", "UNDECLARED_TOOL")
	})
}

// TestPolLiveEdits: PATCH changes the very next decision, every time;
// DELETE archives and the policy leaves the pack.
func TestPolLiveEdits(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-edits", auth.RoleOwner))
	s.register("pol-edits", "agt_9f81a7")
	refund := func(amount float64) polKLA {
		t.Helper()
		return c.evaluate(map[string]any{"agentId": "agt_9f81a7", "action": "execute_refund", "context": map[string]any{"amount": amount}})
	}
	empty := refund(500).PackHash

	id := c.createPolicy(polKLARefundPolicy)
	first := refund(500)
	if first.Decision != "allow" || first.PackHash == empty {
		t.Fatalf("500 under a 1000 threshold: %s (empty pack %s)", first, empty)
	}
	seen := map[string]bool{empty: true, first.PackHash: true}
	version := uint64(0)
	for i := range 12 {
		threshold, want := 100, "require_approval"
		if i%2 == 1 {
			threshold, want = 1000, "allow"
		}
		patch := map[string]any{"rules": []map[string]any{{
			"id": "big-refund", "when": fmt.Sprintf(`action.tool == "execute_refund" && context.amount > %d`, threshold),
			"outcome": "require_approval", "reasonCodes": []string{"AMOUNT_OVER_THRESHOLD"},
		}}}
		r := c.do(http.MethodPatch, "/v1/policies/"+id, patch).want(t, http.StatusOK, "patch threshold")
		var view struct {
			Version uint64       `json:"version"`
			Rules   []rules.Rule `json:"rules"`
		}
		r.decode(t, &view)
		if view.Version <= version || len(view.Rules) != 1 || !strings.Contains(view.Rules[0].When, strconv.Itoa(threshold)) {
			t.Fatalf("patch %d: view %s (previous version %d)", i, r, version)
		}
		version = view.Version
		// No sleep: the next request must see the edit.
		d := refund(500)
		if d.Decision != want {
			t.Fatalf("edit %d (threshold %d): the next decision was %s, want %s", i, threshold, d, want)
		}
		if seen[d.PackHash] {
			t.Fatalf("edit %d: pack hash %s was already used by an earlier pack", i, d.PackHash)
		}
		seen[d.PackHash] = true
	}

	// GET reflects the last edit.
	got := c.get("/v1/policies/"+id).want(t, http.StatusOK, "get policy").object(t)
	if got["version"] != float64(version) || got["status"] != "active" {
		t.Errorf("GET after edits: %v, want version %d, active", got, version)
	}

	// Archive.
	r := c.do(http.MethodDelete, "/v1/policies/"+id, nil).want(t, http.StatusOK, "archive")
	if r.object(t)["status"] != "archived" {
		t.Errorf("DELETE returned %s", r)
	}
	got = c.get("/v1/policies/"+id).want(t, http.StatusOK, "get archived policy").object(t)
	if got["status"] != "archived" {
		t.Errorf("GET after DELETE: %v, want status archived", got)
	}
	d := refund(50000)
	if d.Decision != "allow" || !slices.Equal(d.ReasonCodes, []string{"DEFAULT_ALLOW"}) {
		t.Errorf("after archiving, a 50000 refund: %s, want allow [DEFAULT_ALLOW]", d)
	}
	if d.PackHash != empty {
		t.Errorf("after archiving the only policy the pack hash is %s, want the empty pack's %s", d.PackHash, empty)
	}
	var archived, active struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	c.get("/v1/policies?status=archived").want(t, http.StatusOK, "list archived").decode(t, &archived)
	c.get("/v1/policies?status=active").want(t, http.StatusOK, "list active").decode(t, &active)
	if len(archived.Data) != 1 || archived.Data[0].ID != id || len(active.Data) != 0 {
		t.Errorf("archived %+v, active %+v", archived.Data, active.Data)
	}
	// Disabled policies leave the pack too; re-enabling is a PATCH away.
	id2 := c.createPolicy(`{"name":"refund block","rules":[{"id":"huge","when":"action.tool == \"execute_refund\" && context.amount > 10000","outcome":"block"}]}`)
	if d := refund(50000); d.Decision != "block" || !slices.Equal(d.ReasonCodes, []string{"RULE_HUGE"}) {
		t.Errorf("new policy: %s, want block [RULE_HUGE]", d)
	}
	c.do(http.MethodPatch, "/v1/policies/"+id2, `{"enabled":false}`).want(t, http.StatusOK, "disable")
	if d := refund(50000); d.Decision != "allow" || d.PackHash != empty {
		t.Errorf("disabled policy: %s, want allow with the empty pack %s", d, empty)
	}
}

// TestPolIdempotency: Idempotency-Key on decisions.evaluate.
func TestPolIdempotency(t *testing.T) {
	s := polStart(t)
	a := s.as(s.key("pol-idem-a", auth.RoleAgent, "idem-bot"))
	b := s.as(s.key("pol-idem-b", auth.RoleAgent, "idem-bot"))
	reader := s.as(s.key("pol-idem-a", auth.RoleViewer))
	s.register("pol-idem-a", "idem-bot")
	s.register("pol-idem-b", "idem-bot")
	body := `{"agentId":"idem-bot","action":"execute_refund","context":{"amount":1250}}`
	const key = "idem-key-1"

	r1 := a.post("/v1/decisions.evaluate", body, "Idempotency-Key", key).want(t, http.StatusOK, "first")
	if r1.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("first response says it was replayed")
	}
	var d1 polKLA
	r1.decode(t, &d1)
	for i := range 3 {
		r := a.post("/v1/decisions.evaluate", body, "Idempotency-Key", key).want(t, http.StatusOK, "replay")
		if string(r.Body) != string(r1.Body) {
			t.Errorf("replay %d: body %s, want the original %s", i, r.Body, r1.Body)
		}
		if r.Header.Get("Idempotent-Replayed") != "true" {
			t.Errorf("replay %d: Idempotent-Replayed = %q", i, r.Header.Get("Idempotent-Replayed"))
		}
	}
	e := polError(t, a.post("/v1/decisions.evaluate", `{"agentId":"idem-bot","action":"execute_refund","context":{"amount":1}}`, "Idempotency-Key", key),
		http.StatusConflict, "CONFLICT", "conflict", "same key, different body")
	if !strings.Contains(e.Message, "Idempotency-Key") {
		t.Errorf("conflict message %q does not name the header", e.Message)
	}
	// Another tenant with the same key is independent.
	rb := b.post("/v1/decisions.evaluate", body, "Idempotency-Key", key).want(t, http.StatusOK, "other tenant")
	var db polKLA
	rb.decode(t, &db)
	if rb.Header.Get("Idempotent-Replayed") != "" || db.DecisionID == d1.DecisionID {
		t.Errorf("tenant b got tenant a's response: %s", rb)
	}
	// Another key (or none) is a new decision.
	if d := a.evaluate(body, "Idempotency-Key", "idem-key-2"); d.DecisionID == d1.DecisionID {
		t.Errorf("a different key replayed %s", d1.DecisionID)
	}
	sentinel := a.evaluate(`{"agentId":"idem-bot","action":"sentinel"}`)

	// Replays were not recorded again: once the sentinel (decided after
	// them) is visible, tenant a holds exactly its three decisions.
	polEventually(t, polWait, "sentinel listed", func() (bool, string) {
		p := reader.verdicts("agent=idem-bot&limit=100")
		return slices.Contains(p.ids(), sentinel.DecisionID), fmt.Sprint(p.ids())
	})
	ids := reader.verdicts("agent=idem-bot&limit=100").ids()
	if len(ids) != 3 || !slices.Contains(ids, d1.DecisionID) {
		t.Errorf("tenant a's decisions = %v, want 3 including %s", ids, d1.DecisionID)
	}
}

// TestPolTenantIsolation: one tenant's policies, org policy, decisions and
// verdicts are invisible to and without effect on another.
func TestPolTenantIsolation(t *testing.T) {
	s := polStart(t)
	a := s.as(s.key("pol-ten-a", auth.RoleOwner))
	b := s.as(s.key("pol-ten-b", auth.RoleOwner))
	s.register("pol-ten-a", "bot")
	s.register("pol-ten-b", "bot")

	aPol := a.createPolicy(`{"id":"shared-name","name":"a's","rules":[{"id":"r","when":"action.tool == \"never\"","outcome":"warn"}]}`)
	// B blocks everything, blocklists the tool and pauses the agent.
	if id := b.createPolicy(`{"id":"shared-name","name":"b's","rules":[{"id":"all","when":"true","outcome":"block","reasonCodes":["B_BLOCKS_ALL"]}]}`); id != aPol {
		t.Fatalf("b's policy id %q", id)
	}
	b.post("/v1/org-policy", `{"mode":"blocklist","tools":["lookup"]}`).want(t, http.StatusOK, "b's org policy")
	b.post("/v1/agents/bot/settings", `{"paused":true}`).want(t, http.StatusOK, "b pauses its bot")

	da := a.evaluate(`{"agentId":"bot","action":"lookup"}`)
	if da.Decision != "allow" || !slices.Equal(da.ReasonCodes, []string{"DEFAULT_ALLOW"}) {
		t.Errorf("a's decision under b's policies: %s, want allow [DEFAULT_ALLOW]", da)
	}
	dbb := b.evaluate(`{"agentId":"bot","action":"lookup"}`)
	if dbb.Decision != "block" || !polGroups(dbb.ReasonCodes, []string{"AGENT_PAUSED", "ORG_BLOCKLIST_TOOL", "B_BLOCKS_ALL"}) {
		t.Errorf("b's own decision: %s", dbb)
	}
	if da.PackHash == dbb.PackHash {
		t.Errorf("two tenants share pack hash %s", da.PackHash)
	}
	va := a.verdict(`{"agent":"bot","tool":"lookup"}`)

	// a's policy as b: the id exists in both tenants, each sees its own.
	if got := b.get("/v1/policies/"+aPol).want(t, http.StatusOK, "b's policy").object(t); got["name"] != "b's" {
		t.Errorf("b reads %v", got)
	}
	aOnly := a.createPolicy(`{"name":"a only","rules":[{"id":"r","when":"false","outcome":"warn"}]}`)
	polError(t, b.get("/v1/policies/"+aOnly), http.StatusNotFound, "NOT_FOUND", "not_found", "b reads a's policy")
	polError(t, b.do(http.MethodPatch, "/v1/policies/"+aOnly, `{"name":"hijacked"}`), http.StatusNotFound, "NOT_FOUND", "not_found", "b patches a's policy")
	polError(t, b.do(http.MethodDelete, "/v1/policies/"+aOnly, nil), http.StatusNotFound, "NOT_FOUND", "not_found", "b archives a's policy")
	if got := a.get("/v1/policies/"+aOnly).want(t, http.StatusOK, "a's policy").object(t); got["name"] != "a only" || got["status"] != "active" {
		t.Errorf("a's policy after b's attempts: %v", got)
	}

	// Decisions: once a can read its own, b still cannot.
	a.waitDecision(da.DecisionID)
	a.waitDecision(va.ID)
	polError(t, b.get("/v1/decisions/"+da.DecisionID), http.StatusNotFound, "NOT_FOUND", "not_found", "b reads a's decision")
	polError(t, b.post("/v1/verdicts/"+va.ID+"/status", `{"status":"false_positive"}`), http.StatusNotFound, "NOT_FOUND", "not_found", "b triages a's verdict")
	polError(t, b.post("/v1/verdicts/"+va.ID+"/learn", nil), http.StatusNotFound, "NOT_FOUND", "not_found", "b learns from a's verdict")
	polEventually(t, polWait, "b lists its own decision", func() (bool, string) {
		ids := b.verdicts("limit=100").ids()
		return slices.Contains(ids, dbb.DecisionID), fmt.Sprint(ids)
	})
	bIDs := b.verdicts("limit=100").ids()
	if slices.Contains(bIDs, da.DecisionID) || slices.Contains(bIDs, va.ID) {
		t.Errorf("b's verdict list %v holds a's decisions", bIDs)
	}
	for _, q := range []string{"agent=bot", "q=lookup", "decision=allow", "source=verdict"} {
		if ids := b.verdicts(q + "&limit=100").ids(); slices.Contains(ids, da.DecisionID) || slices.Contains(ids, va.ID) {
			t.Errorf("b's verdicts?%s = %v holds a's decisions", q, ids)
		}
	}
	if got := a.get("/v1/decisions/"+va.ID).want(t, http.StatusOK, "a's verdict").object(t); got["status"] != "open" {
		t.Errorf("a's verdict after b's triage attempt: status %v", got["status"])
	}
	// a's org policy is still off.
	if got := a.get("/v1/org-policy").want(t, http.StatusOK, "a's org policy").object(t); got["mode"] != "off" {
		t.Errorf("a's org policy = %v", got)
	}
}

// TestPolRoles: who may write policies, ask for decisions, read and
// triage verdicts.
func TestPolRoles(t *testing.T) {
	s := polStart(t)
	const tenant = "pol-roles"
	keys := map[auth.Role]string{}
	for _, r := range auth.Roles {
		keys[r] = s.key(tenant, r)
	}
	keys[auth.RoleAgent] = s.key(tenant, auth.RoleAgent, "role-bot")
	s.register(tenant, "role-bot")
	owner := s.as(keys[auth.RoleOwner])
	pid := owner.createPolicy(`{"id":"existing","name":"existing","rules":[{"id":"r","when":"action.tool == \"rm\"","outcome":"block"}]}`)
	d := owner.evaluate(`{"agentId":"role-bot","action":"rm"}`)
	owner.waitDecision(d.DecisionID)

	type call struct {
		name, method, path string
		body               func(auth.Role) string
		ok                 int
		allowed            []auth.Role
	}
	fixed := func(b string) func(auth.Role) string { return func(auth.Role) string { return b } }
	all := []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer, auth.RoleAgent}
	calls := []call{
		{"create policy", http.MethodPost, "/v1/policies", func(r auth.Role) string {
			return `{"id":"by-` + string(r) + `","name":"x","rules":[{"id":"r","when":"false","outcome":"warn"}]}`
		}, http.StatusCreated, []auth.Role{auth.RoleOwner, auth.RoleAdmin}},
		{"patch policy", http.MethodPatch, "/v1/policies/" + pid, fixed(`{"description":"touched"}`), http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin}},
		{"set org policy", http.MethodPost, "/v1/org-policy", fixed(`{"mode":"off"}`), http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin}},
		{"list policies", http.MethodGet, "/v1/policies", nil, http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer}},
		{"get policy", http.MethodGet, "/v1/policies/" + pid, nil, http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer}},
		{"evaluate", http.MethodPost, "/v1/decisions.evaluate", fixed(`{"agentId":"role-bot","action":"lookup"}`), http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleAgent}},
		{"check", http.MethodPost, "/v1/policies/check", fixed(`{"agentId":"role-bot","toolName":"lookup"}`), http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleAgent}},
		{"report verdict", http.MethodPost, "/v1/verdicts", fixed(`{"agent":"role-bot","tool":"lookup"}`), http.StatusCreated, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleAgent}},
		{"list verdicts", http.MethodGet, "/v1/verdicts", nil, http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer}},
		// Agents read their own decisions (to await an approval).
		{"get decision", http.MethodGet, "/v1/decisions/" + d.DecisionID, nil, http.StatusOK, all},
		{"triage", http.MethodPost, "/v1/verdicts/" + d.DecisionID + "/status", fixed(`{"status":"acknowledged"}`), http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember}},
		// d is a block of a policy rule: learning proposes a draft (201).
		{"learn", http.MethodPost, "/v1/verdicts/" + d.DecisionID + "/learn", nil, http.StatusCreated, []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleMember}},
		{"archive policy", http.MethodDelete, "/v1/policies/" + pid, nil, http.StatusOK, []auth.Role{auth.RoleOwner, auth.RoleAdmin}},
	}
	for _, cl := range calls {
		t.Run(cl.name, func(t *testing.T) {
			for _, role := range all {
				c := s.as(keys[role])
				c.t = t
				var body any
				if cl.body != nil {
					body = cl.body(role)
				}
				r := c.do(cl.method, cl.path, body)
				if slices.Contains(cl.allowed, role) {
					if r.Status != cl.ok {
						t.Errorf("%s as %s: want HTTP %d, got %s", cl.name, role, cl.ok, r)
					}
				} else {
					polError(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", cl.name+" as "+string(role))
				}
			}
			anon := s.as("")
			anon.t = t
			polError(t, anon.do(cl.method, cl.path, nil), http.StatusUnauthorized, "AUTHENTICATION_FAILED", "unauthorized", cl.name+" without a key")
		})
	}
	// Nothing a forbidden caller sent was stored.
	for _, role := range []auth.Role{auth.RoleMember, auth.RoleViewer, auth.RoleAgent} {
		polError(t, owner.get("/v1/policies/by-"+string(role)), http.StatusNotFound, "NOT_FOUND", "not_found", "policy posted by "+string(role))
	}
}

// TestPolInvalidPolicies: every bad document is a 400 that says where and
// why, and nothing is stored.
func TestPolInvalidPolicies(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-invalid", auth.RoleOwner))
	cases := []struct {
		name, body, ctype string
		path, code        string
		contains          []string
	}{
		{"bad CEL", "name: broken\nrules:\n  - id: typo\n    when: action.tool ==\n    outcome: block\n", "application/yaml",
			"rules[0].when", "invalid_expression", []string{"line 3", "rule typo", "Syntax error"}},
		{"bad CEL, second rule", "name: broken\nrules:\n  - id: fine\n    when: 'true'\n    outcome: warn\n  - id: unknown-variable\n    when: request.size > 10\n    outcome: block\n", "application/yaml",
			"rules[1].when", "invalid_expression", []string{"line 6", "rule unknown-variable", "undeclared reference to 'request'"}},
		{"bad CEL in JSON", `{"name":"j","rules":[{"id":"j1","when":"action.tool = \"x\"","outcome":"block"}]}`, "",
			"rules[0].when", "invalid_expression", []string{"rule j1", "line"}},
		{"non-bool condition", "name: sums\nrules:\n  - id: sum\n    when: 1 + 2\n    outcome: block\n", "application/yaml",
			"rules[0].when", "invalid_expression", []string{"rule sum", "bool"}},
		{"bad outcome", "name: o\nrules:\n  - id: nope\n    when: 'true'\n    outcome: maybe\n", "application/yaml",
			"rules[0].outcome", "invalid_format", []string{"line 3", "rule nope", `"maybe"`}},
		{"duplicate rule id", `{"name":"d","rules":[{"id":"same","when":"true","outcome":"warn"},{"id":"same","when":"false","outcome":"block"}]}`, "",
			"rules[1].id", "duplicate", []string{"same"}},
		// The decoder's message names the field and its line. An unknown
		// top-level key is ignored (fidelity_e2e_test.go), except a near
		// miss of a key that decides, such as this one.
		{"misspelled field", `{"name":"u","rules":[{"id":"r","when":"true","outcome":"warn"}],"defaultDecison":"denied"}`, "",
			"", "", []string{"field defaultDecison", "line 1"}},
		{"unknown rule field", "name: u\nrules:\n  - id: r\n    whenn: 'true'\n    outcome: warn\n", "application/yaml",
			"", "", []string{"field whenn", "line 4"}},
		{"empty body", ``, "", "", "required", nil},
		{"empty YAML", "\n", "application/yaml", "", "required", nil},
		{"malformed JSON", `{"name": "x", "rules": [`, "", "", "", nil},
		{"no rules", `{"name":"nothing"}`, "", "rules", "required", nil},
		{"no name", `{"rules":[{"id":"r","when":"true","outcome":"warn"}]}`, "", "name", "required", nil},
		{"bad reason code", `{"name":"r","rules":[{"id":"r","when":"true","outcome":"warn","reasonCodes":["lower case"]}]}`, "",
			"rules[0].reasonCodes[0]", "invalid_format", nil},
		{"bad approval timeout", `{"name":"r","rules":[{"id":"r","when":"true","outcome":"require_approval","approvalTimeout":"forever"}]}`, "",
			"rules[0].approvalTimeout", "invalid_format", nil},
		{"bad policy id", `{"id":"no spaces","name":"r","rules":[{"id":"r","when":"true","outcome":"warn"}]}`, "", "id", "invalid_format", nil},
		{"unknown Kaplaix condition", `{"name":"k","conditions":{"colour":"red"}}`, "", "conditions", "invalid_format", []string{"colour"}},
		{"both forms", `{"name":"k","conditions":{"operation":"refund"},"rules":[{"id":"r","when":"true","outcome":"warn"},{"id":"s","when":"true","outcome":"warn"}]}`, "",
			"conditions", "invalid_format", []string{"either"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := c
			c.t = t
			var hdr []string
			if tc.ctype != "" {
				hdr = []string{"Content-Type", tc.ctype}
			}
			e := polError(t, c.post("/v1/policies", tc.body, hdr...), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", tc.name)
			if len(e.Error.Details) == 0 {
				t.Fatalf("no details in %+v", e)
			}
			var found bool
			for _, d := range e.Error.Details {
				if (tc.path == "" || d.Path == tc.path) && (tc.code == "" || d.Code == tc.code) {
					all := true
					for _, s := range tc.contains {
						all = all && strings.Contains(d.Message, s)
					}
					found = found || all
				}
			}
			if !found {
				t.Errorf("want a detail at %q with code %q containing %q; got %+v", tc.path, tc.code, tc.contains, e.Error.Details)
			}
		})
	}
	var list struct {
		Data []any `json:"data"`
	}
	c.get("/v1/policies").want(t, http.StatusOK, "list").decode(t, &list)
	if len(list.Data) != 0 {
		t.Errorf("invalid policies were stored: %+v", list.Data)
	}

	// 409 on a duplicate id; the original is untouched.
	id := c.createPolicy(`{"id":"dup","name":"first","rules":[{"id":"r","when":"action.tool == \"x\"","outcome":"warn"}]}`)
	polError(t, c.post("/v1/policies", `{"id":"dup","name":"second","rules":[{"id":"r","when":"true","outcome":"block"}]}`), http.StatusConflict, "CONFLICT", "conflict", "duplicate id")
	got := c.get("/v1/policies/"+id).want(t, http.StatusOK, "get").object(t)
	if got["name"] != "first" {
		t.Errorf("the duplicate overwrote the original: %v", got)
	}
	version := got["version"]

	// A bad PATCH is rejected the same way and changes nothing.
	e := polError(t, c.do(http.MethodPatch, "/v1/policies/"+id, `{"rules":[{"id":"r","when":"action.tool ==","outcome":"block"}]}`),
		http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "bad CEL in a patch")
	if len(e.Error.Details) == 0 || e.Error.Details[0].Path != "rules[0].when" || !strings.Contains(e.Error.Details[0].Message, "rule r") {
		t.Errorf("patch details %+v", e.Error.Details)
	}
	polError(t, c.do(http.MethodPatch, "/v1/policies/"+id, `{"rulez":[]}`), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "misspelled field in a patch")
	polError(t, c.do(http.MethodPatch, "/v1/policies/missing", `{"name":"x"}`), http.StatusNotFound, "NOT_FOUND", "not_found", "patch of an unknown policy")
	if got := c.get("/v1/policies/"+id).want(t, http.StatusOK, "get").object(t); got["version"] != version {
		t.Errorf("a rejected patch changed the version: %v → %v", version, got["version"])
	}
}

// TestPolServiceDown: with no policy service answering, every decision
// door is a 503 with Retry-After, never an allow; a retry with the same
// Idempotency-Key succeeds once the service is back.
func TestPolServiceDown(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.DecisionTimeout = 500 * time.Millisecond
	a := polStartAPIOnly(t, cfg)
	key := polKey(t, a.store, "pol-down", auth.RoleOwner)
	registerAgents(t, a.store, "pol-down", "agt_9f81a7")
	c := polClient{t: t, base: a.base, key: key}

	doors := []struct{ path, body string }{
		{"/v1/decisions.evaluate", polKLASeedRequest},
		{"/v1/policies/check", `{"agentId":"a1","toolType":"payment","operation":"refund"}`},
		{"/v1/verdicts", `{"agent":"a1","kind":"tool_call","tool":"issue_refund","target":"api.stripe.com:443"}`},
	}
	unavailable := func(what string, r polResp) {
		t.Helper()
		polError(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "internal_error", what)
		if n, err := strconv.Atoi(r.Header.Get("Retry-After")); err != nil || n < 1 {
			t.Errorf("%s: Retry-After = %q, want a positive number of seconds", what, r.Header.Get("Retry-After"))
		}
		if m := r.object(t); m["decision"] != nil || m["allowed"] != nil {
			t.Errorf("%s: an error carries a decision: %s", what, r)
		}
	}

	// Nobody subscribed.
	for _, d := range doors {
		unavailable("no responders: "+d.path, c.post(d.path, d.body))
	}
	unavailable("no responders, with an Idempotency-Key", c.post("/v1/decisions.evaluate", polKLASeedRequest, "Idempotency-Key", "retry-me"))

	// Something subscribed that never answers.
	silent, err := a.env.Conn.Subscribe(streams.EvaluateRPC, func(*nats.Msg) {})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range doors {
		unavailable("silent responder: "+d.path, c.post(d.path, d.body))
	}
	_ = silent.Unsubscribe()

	// A responder that fails.
	failing, err := a.env.Conn.Subscribe(streams.EvaluateRPC, func(m *nats.Msg) {
		reply := nats.NewMsg(m.Reply)
		reply.Header.Set(micro.ErrorCodeHeader, string(rpc.CodeUnavailable))
		reply.Header.Set(micro.ErrorHeader, "could not record the decision")
		_ = m.RespondMsg(reply)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.env.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, d := range doors {
		unavailable("failing responder: "+d.path, c.post(d.path, d.body))
	}
	_ = failing.Unsubscribe()

	// The policy service comes up: the retry with the same key decides.
	pcfg := policysvc.DefaultConfig()
	pcfg.SigningSeed, pcfg.EvaluateEvents = rules.NewSeed(), false
	pcfg.RedactionKey, pcfg.Judge.SealSecret = rules.NewSeed(), rules.NewSeed()
	svc, err := policysvc.New(pcfg, policysvc.Deps{NC: a.env.Conn, JS: a.env.JS, Catalog: a.cat, Log: a.log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := svc.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	if err := svc.Start(runCtx); err != nil {
		stop()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("policy Run: %v", err)
		}
	})
	var r polResp
	polEventually(t, polWait, "policy service answering", func() (bool, string) {
		r = c.post("/v1/decisions.evaluate", polKLASeedRequest, "Idempotency-Key", "retry-me")
		return r.Status == http.StatusOK, r.String()
	})
	if r.Header.Get("Idempotent-Replayed") != "" {
		t.Errorf("the first successful answer is marked replayed: a 503 was stored under the key")
	}
	var d polKLA
	r.decode(t, &d)
	if d.Decision != "allow" || !polDecisionIDRe.MatchString(d.DecisionID) {
		t.Errorf("after recovery: %s", d)
	}
}

// TestPolVerdictsTriageAndListing: GET /v1/verdicts filters and paging,
// triage, false-positive suppression and GET /v1/decisions/:id.
func TestPolVerdictsTriageAndListing(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-list", auth.RoleOwner))
	member := s.as(s.key("pol-list", auth.RoleMember))
	s.register("pol-list", "alpha")
	c.post("/v1/org-policy", `{"mode":"blocklist","tools":["rm"]}`).want(t, http.StatusOK, "blocklist")

	v1 := c.verdict(`{"agent":"alpha","kind":"tool_call","tool":"rm","target":"/srv/data"}`)
	v2 := c.verdict(`{"agent":"alpha","kind":"tool_call","tool":"lookup"}`)
	d3 := c.evaluate(`{"agentId":"alpha","action":{"kind":"tool_call","tool":"rm","target":"/srv/data"},"context":{"ticket":"T-1"}}`)
	chk := c.post("/v1/policies/check", `{"agentId":"beta","toolName":"rm","operation":"delete"}`).want(t, http.StatusOK, "check").object(t)
	c4, _ := chk["decisionId"].(string)
	v5 := c.verdict(`{"agent":"beta","kind":"http","tool":"search","target":"https://docs.example.com/x","metadata":{"source":"egress"}}`)
	created := []string{v1.ID, v2.ID, d3.DecisionID, c4, v5.ID} // oldest first
	if v1.Decision != "block" || v2.Decision != "allow" || d3.Decision != "block" || chk["decision"] != "denied" || v5.Decision != "allow" {
		t.Fatalf("setup decisions: %+v %+v %s %v %+v", v1, v2, d3, chk, v5)
	}

	polEventually(t, polWait, "all five listed", func() (bool, string) {
		ids := c.verdicts("limit=100").ids()
		return len(ids) == 5, fmt.Sprint(ids)
	})
	all := c.verdicts("limit=100")
	if !polSameIDs(all.ids(), created) || !all.newestFirst() || all.HasMore || all.Limit != 100 || all.Offset != 0 {
		t.Errorf("GET /v1/verdicts = %s, want %v newest first", all, created)
	}

	filters := []struct {
		query string
		want  []string
	}{
		{"agent=alpha", []string{v1.ID, v2.ID, d3.DecisionID}},
		{"agent=nobody", nil},
		{"decision=block", []string{v1.ID, d3.DecisionID, c4}},
		{"decision=allow", []string{v2.ID, v5.ID}},
		{"source=verdict", []string{v1.ID, v2.ID, v5.ID}},
		{"source=decision", []string{d3.DecisionID}},
		{"source=check", []string{c4}},
		{"source=event", nil},
		// Kaizen's observation source (the action's metadata.source).
		{"source=egress", []string{v5.ID}},
		{"source=sdk", nil},
		{"agent=alpha&source=egress", nil},
		{"q=docs.example", []string{v5.ID}},
		{"q=ORG_BLOCKLIST", []string{v1.ID, d3.DecisionID, c4}},
		{"q=org_blocklist", []string{v1.ID, d3.DecisionID, c4}},
		{"q=beta", []string{c4, v5.ID}},
		{"q=LOOKUP", []string{v2.ID}},
		{"since=1h", created},
		{"since=" + url.QueryEscape(time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)), created},
		{"since=" + url.QueryEscape(time.Now().Add(time.Hour).UTC().Format(time.RFC3339)), nil},
		{"agent=alpha&decision=block&source=verdict", []string{v1.ID}},
		{"agent=beta&q=rm", []string{c4}},
	}
	for _, f := range filters {
		p := c.verdicts(f.query + "&limit=100")
		if !polSameIDs(p.ids(), f.want) || !p.newestFirst() {
			t.Errorf("verdicts?%s = %s, want %v newest first", f.query, p, f.want)
		}
	}
	for _, bad := range []string{"decision=maybe", "source=" + strings.Repeat("s", 65), "status=pending", "since=yesterday", "limit=0", "limit=-3", "offset=-1", "q=" + strings.Repeat("x", 201)} {
		polError(t, c.get("/v1/verdicts?"+bad), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "verdicts?"+bad)
	}

	// Paging walks the same list.
	var paged []string
	for off := 0; ; off += 2 {
		p := c.verdicts(fmt.Sprintf("limit=2&offset=%d", off))
		if p.Limit != 2 || p.Offset != off || len(p.Data) > 2 {
			t.Fatalf("page at %d: %s", off, p)
		}
		paged = append(paged, p.ids()...)
		if !p.HasMore {
			break
		}
		if off > 10 {
			t.Fatal("paging does not end")
		}
	}
	if !slices.Equal(paged, all.ids()) {
		t.Errorf("pages = %v, want %v", paged, all.ids())
	}
	if p := c.verdicts("limit=2&offset=10"); len(p.Data) != 0 || p.HasMore {
		t.Errorf("past the end: %s", p)
	}

	// The full record.
	rec := c.get("/v1/decisions/"+d3.DecisionID).want(t, http.StatusOK, "get decision").object(t)
	res, _ := rec["result"].(map[string]any)
	in, _ := rec["input"].(map[string]any)
	act, _ := in["action"].(map[string]any)
	ctxIn, _ := in["context"].(map[string]any)
	agentIn, _ := in["agent"].(map[string]any)
	if rec["decisionId"] != d3.DecisionID || rec["source"] != "decision" || rec["status"] != "open" || rec["tenant"] != "pol-list" ||
		res["packHash"] != d3.PackHash || res["decision"] != "block" || act["tool"] != "rm" || act["target"] != "/srv/data" ||
		ctxIn["ticket"] != "T-1" || agentIn["id"] != "alpha" || rec["packSignature"] == nil || rec["keyId"] == nil || rec["signature"] == nil {
		t.Errorf("GET /v1/decisions/%s = %v", d3.DecisionID, rec)
	}
	polError(t, c.get("/v1/decisions/dec_missing"), http.StatusNotFound, "NOT_FOUND", "not_found", "unknown decision")

	// Triage.
	polError(t, member.post("/v1/verdicts/"+v1.ID+"/status", `{"status":"closed"}`), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "invalid status")
	polError(t, member.post("/v1/verdicts/"+v1.ID+"/status", `{"state":"resolved"}`), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "missing status")
	polError(t, member.post("/v1/verdicts/dec_missing/status", `{"status":"resolved"}`), http.StatusNotFound, "NOT_FOUND", "not_found", "triage of an unknown verdict")
	tr := member.post("/v1/verdicts/"+v1.ID+"/status", `{"status":"false_positive"}`).want(t, http.StatusOK, "false positive")
	var tv polVerdict
	tr.decode(t, &tv)
	if tv.ID != v1.ID || tv.Status != "false_positive" {
		t.Errorf("triage returned %s", tr)
	}
	member.post("/v1/verdicts/"+d3.DecisionID+"/status", `{"status":"acknowledged"}`).want(t, http.StatusOK, "acknowledge")

	// Triage never lifts policy: the org blocklist still blocks the same
	// action (warnings are what a false positive silences, see
	// TestTriageNeverLiftsPolicy).
	again := c.verdict(`{"agent":"alpha","kind":"tool_call","tool":"rm","target":"/srv/data"}`)
	if again.Decision != "block" || !slices.Equal(again.ReasonCodes, []string{"ORG_BLOCKLIST_TOOL"}) {
		t.Errorf("after false_positive: %+v, want block [ORG_BLOCKLIST_TOOL]", again)
	}
	if d := c.evaluate(`{"agentId":"alpha","action":{"kind":"tool_call","tool":"rm","target":"/srv/data"}}`); d.Decision != "block" {
		t.Errorf("evaluate after false_positive: %s, want block", d)
	}
	if o := c.verdict(`{"agent":"gamma","kind":"tool_call","tool":"rm","target":"/srv/data"}`); o.Decision != "block" {
		t.Errorf("another agent's identical action: %+v, want block", o)
	}

	if ids := c.verdicts("status=false_positive").ids(); !slices.Equal(ids, []string{v1.ID}) {
		t.Errorf("status=false_positive = %v, want [%s]", ids, v1.ID)
	}
	if ids := c.verdicts("status=acknowledged").ids(); !slices.Equal(ids, []string{d3.DecisionID}) {
		t.Errorf("status=acknowledged = %v, want [%s]", ids, d3.DecisionID)
	}
	if ids := c.verdicts("status=resolved").ids(); len(ids) != 0 {
		t.Errorf("status=resolved = %v, want none", ids)
	}
	polEventually(t, polWait, "decision after triage listed", func() (bool, string) {
		ids := c.verdicts("status=open&limit=100").ids()
		return slices.Contains(ids, again.ID), fmt.Sprint(ids)
	})
	open := c.verdicts("status=open&limit=100").ids()
	if slices.Contains(open, v1.ID) || slices.Contains(open, d3.DecisionID) || !slices.Contains(open, v2.ID) || !slices.Contains(open, c4) {
		t.Errorf("status=open = %v", open)
	}
	if got := c.get("/v1/decisions/"+v1.ID).want(t, http.StatusOK, "get triaged").object(t); got["status"] != "false_positive" {
		t.Errorf("triaged decision status = %v", got["status"])
	}
	// Re-triaging it as resolved.
	member.post("/v1/verdicts/"+v1.ID+"/status", `{"status":"resolved"}`).want(t, http.StatusOK, "resolve")
	if v := c.verdict(`{"agent":"alpha","kind":"tool_call","tool":"rm","target":"/srv/data"}`); v.Decision != "block" || !slices.Equal(v.ReasonCodes, []string{"ORG_BLOCKLIST_TOOL"}) {
		t.Errorf("after re-triage as resolved: %+v, want block [ORG_BLOCKLIST_TOOL]", v)
	}
	if ids := c.verdicts("status=false_positive").ids(); len(ids) != 0 {
		t.Errorf("status=false_positive after re-triage = %v", ids)
	}
}

// TestPolEventVerdicts: every ingested event gets a verdict (source
// event) against the tenant's policies.
func TestPolEventVerdicts(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-events", auth.RoleOwner))
	c.post("/v1/org-policy", `{"mode":"blocklist","tools":["rm"]}`).want(t, http.StatusOK, "blocklist")

	bad := polEvent("evt-bot", "evt-session", map[string]any{"toolName": "rm", "arguments": map[string]any{"path": "/"}})
	fine := polEvent("evt-bot", "evt-session", map[string]any{"toolName": "lookup"})
	for _, e := range []map[string]any{bad, fine, bad} { // the duplicate is judged once
		c.post("/v1/events", e).want(t, http.StatusAccepted, "event")
	}

	var page polVerdictPage
	polEventually(t, polWait, "event verdicts listed", func() (bool, string) {
		page = c.verdicts("source=event&agent=evt-bot&limit=100")
		return len(page.Data) >= 2, fmt.Sprintf("%+v", page.Data)
	})
	var block, allow *polVerdict
	for i := range page.Data {
		v := &page.Data[i]
		if v.Source != "event" || v.Agent != "evt-bot" {
			t.Errorf("listed %+v", *v)
		}
		var a struct {
			Tool string `json:"tool"`
		}
		_ = json.Unmarshal(v.Action, &a)
		switch a.Tool {
		case "rm":
			block = v
		case "lookup":
			allow = v
		}
	}
	if block == nil || block.Decision != "block" || !slices.Equal(block.ReasonCodes, []string{"ORG_BLOCKLIST_TOOL"}) {
		t.Fatalf("no block verdict for rm among %+v", page.Data)
	}
	if allow == nil || allow.Decision != "allow" {
		t.Errorf("no allow verdict for lookup among %+v", page.Data)
	}
	rec := c.get("/v1/decisions/"+block.ID).want(t, http.StatusOK, "event decision").object(t)
	if rec["eventId"] != bad["eventId"] || rec["sessionId"] != "evt-session" {
		t.Errorf("event decision record: eventId %v sessionId %v, want %v evt-session", rec["eventId"], rec["sessionId"], bad["eventId"])
	}
	if ids := c.verdicts("source=event&decision=block&limit=100").ids(); !slices.Equal(ids, []string{block.ID}) {
		t.Errorf("source=event&decision=block = %v, want only %s", ids, block.ID)
	}

	// A sentinel event sent after the duplicate: once it is judged, the
	// duplicate would have been too.
	sentinel := polEvent("evt-bot", "evt-session", map[string]any{"toolName": "sentinel"})
	c.post("/v1/events", sentinel).want(t, http.StatusAccepted, "sentinel")
	polEventually(t, polWait, "sentinel judged", func() (bool, string) {
		p := c.verdicts("source=event&agent=evt-bot&q=sentinel")
		return len(p.Data) == 1, fmt.Sprint(p.ids())
	})
	if n := len(c.verdicts("source=event&agent=evt-bot&limit=100").Data); n != 3 {
		t.Errorf("event verdicts = %d, want 3 (rm once, lookup, sentinel)", n)
	}
}

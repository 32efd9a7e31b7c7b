package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/streams"
)

// warned reports whether r names field in a Warning header.
func warned(r response, field string) bool {
	return slices.ContainsFunc(r.header.Values("Warning"), func(w string) bool {
		return strings.HasPrefix(w, "299 - ") && strings.Contains(w, `unknown field \"`+field+`\" ignored`)
	})
}

// TestCompatibilityDoorsLenient: the routes the Kaplaix, Kaizen and KLA
// documents describe accept bodies with fields Vigil does not know,
// ignore them and name them in a Warning header; the known fields are
// still checked, and a limit above the maximum is clamped.
func TestCompatibilityDoorsLenient(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name, method, path string
		body               any
		status             int
		ignored            string
	}{
		{"register an agent", http.MethodPost, "/v1/agents", map[string]any{"agentId": "len-a", "name": "claims", "x-team": "risk"}, 201, "x-team"},
		{"patch an agent", http.MethodPatch, "/v1/agents/len-a", map[string]any{"model": "gpt-4.1", "labels": map[string]any{"a": 1}}, 200, "labels"},
		{"declare a manifest", http.MethodPost, "/v1/agents/len-a/manifest", map[string]any{"tools": []string{"lookup"}, "destinations": []string{}, "version": 2}, 200, "version"},
		{"agent settings", http.MethodPost, "/v1/agents/len-a/settings", map[string]any{"paused": false, "judge_enabled": true, "sampling": 0.5}, 200, "sampling"},
		{"org policy", http.MethodPost, "/v1/org-policy", map[string]any{"mode": "blocklist", "tools": []string{"rm"}, "note": "x"}, 200, "note"},
		{"llm config", http.MethodPost, "/v1/llm-config", map[string]any{"model": "gpt-4o-mini", "api_key": "sk-0123456789abcdef", "daily_token_budget": 5000, "confidence_threshold": 0.6, "temperature": 0}, 200, "temperature"},
		{"create a key", http.MethodPost, "/v1/keys", map[string]any{"name": "ci", "role": "viewer", "description": "for ci"}, 201, "description"},
		{"invite a member", http.MethodPost, "/v1/members/invite", map[string]any{"email": "new@example.com", "role": "viewer", "message": "hi"}, 201, "message"},
		{"set a member's role", http.MethodPost, "/v1/members/role", map[string]any{"email": "new@example.com", "role": "member", "notify": true}, 200, "notify"},
		{"create a policy", http.MethodPost, "/v1/policies", map[string]any{"name": "p", "tags": []string{"a"}, "rules": []map[string]any{{"id": "r", "when": "false", "outcome": "warn"}}}, 201, "tags"},
		// Still strict: a known field's type, and enforcement keys.
		{"a known field's type", http.MethodPost, "/v1/agents/len-a/settings", map[string]any{"paused": "no", "sampling": 1}, 400, "sampling"},
		{"a misspelled rule key", http.MethodPost, "/v1/policies", map[string]any{"name": "p2", "rules": []map[string]any{{"id": "r", "whenn": "true", "outcome": "block"}}}, 400, ""},
		{"a misspelled policy key", http.MethodPost, "/v1/policies", map[string]any{"name": "p3", "conditions": map[string]string{"toolType": "shell"}, "defaultDecison": "denied"}, 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.do(req{method: tc.method, path: tc.path, key: e.owner, body: tc.body})
			expect(t, r, tc.status, tc.name)
			if tc.ignored != "" && !warned(r, tc.ignored) {
				t.Errorf("no Warning naming %q: %v", tc.ignored, r.header.Values("Warning"))
			}
			if tc.status >= 400 {
				checkEnvelope(t, r, tc.status, "VALIDATION_ERROR", "invalid_request", nil)
			}
		})
	}
	// The ignored fields were not stored; the known ones were.
	var a struct {
		Model string         `json:"model"`
		Meta  map[string]any `json:"metadata"`
	}
	e.get(e.owner, "/v1/agents/len-a").decode(t, &a)
	if a.Model != "gpt-4.1" {
		t.Errorf("agent after the patch: %+v", a)
	}
	var llm struct {
		Provider         string  `json:"provider"`
		BaseURL          string  `json:"baseUrl"`
		DailyTokenBudget int64   `json:"dailyTokenBudget"`
		Threshold        float64 `json:"confidenceThreshold"`
		APIKeySet        bool    `json:"apiKeySet"`
	}
	e.get(e.owner, "/v1/llm-config").decode(t, &llm)
	if llm.Provider != "openai" || llm.BaseURL != "https://api.openai.com/v1" || llm.DailyTokenBudget != 5000 || llm.Threshold != 0.6 || !llm.APIKeySet {
		t.Errorf("llm config from snake_case without baseUrl: %+v", llm)
	}

	t.Run("limit above the maximum is clamped", func(t *testing.T) {
		for _, p := range []string{"/v1/agents?limit=1000", "/v1/sessions?limit=101", "/v1/policies?limit=5000", "/v1/verdicts?limit=100000"} {
			expect(t, e.get(e.owner, p), http.StatusOK, p)
		}
		checkEnvelope(t, e.get(e.owner, "/v1/agents?limit=0"), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"limit", "out_of_range"}})
	})
}

// TestKaplaixRuleListPolicy: a Kaplaix policy written as a list of rules
// with decision, priority and conditions is accepted and decides as
// docs/policies.md says: the strictest matching rule wins whatever the
// priorities, and defaultDecision applies when no rule holds.
func TestKaplaixRuleListPolicy(t *testing.T) {
	e := newEnv(t)
	r := e.post(e.owner, "/v1/policies", map[string]any{
		"name": "shell", "defaultDecision": "requires_review",
		"rules": []map[string]any{
			{"id": "r1", "decision": "denied", "priority": 1, "conditions": map[string]string{"toolType": "shell"}},
			{"id": "r2", "decision": "allowed", "priority": 5, "conditions": map[string]string{"toolType": "search"}},
		},
	})
	expect(t, r, http.StatusCreated, "create a rule-list policy")
	var view struct {
		ID    string `json:"id"`
		Rules []struct {
			ID       string `json:"id"`
			Decision string `json:"decision"`
			Priority int    `json:"priority"`
		} `json:"rules"`
		DefaultDecision string `json:"defaultDecision"`
	}
	r.decode(t, &view)
	if len(view.Rules) != 3 || view.Rules[0].ID != "r2" || view.Rules[1].ID != "r1" || view.Rules[1].Decision != "denied" || view.DefaultDecision != "requires_review" {
		t.Fatalf("stored policy: %s", r)
	}
	agent := e.key("default", auth.RoleAgent, "rl-bot")
	for _, tc := range []struct{ toolType, want string }{
		{"shell", "denied"}, {"search", "allowed"}, {"email", "requires_review"},
	} {
		chk := e.post(agent, "/v1/policies/check", map[string]any{"agentId": "rl-bot", "toolType": tc.toolType, "operation": "run"})
		expect(t, chk, http.StatusOK, "check "+tc.toolType)
		var got struct {
			Decision string `json:"decision"`
		}
		chk.decode(t, &got)
		if got.Decision != tc.want {
			t.Errorf("%s: decision %q, want %q (%s)", tc.toolType, got.Decision, tc.want, chk)
		}
	}
	// A PATCH of the name keeps the rules and the default.
	expect(t, e.patch(e.owner, "/v1/policies/"+view.ID, map[string]any{"name": "shell 2"}), http.StatusOK, "rename")
	chk := e.post(agent, "/v1/policies/check", map[string]any{"agentId": "rl-bot", "toolType": "email", "operation": "run"})
	if !strings.Contains(string(chk.body), `"decision":"requires_review"`) {
		t.Errorf("after a rename: %s", chk)
	}
}

// TestKLADuplicateRegistration: registering by name (KLA: no agentId)
// a name already registered is 409 conflict, unless the request replays
// the Idempotency-Key of the first, which answers the original 201.
func TestKLADuplicateRegistration(t *testing.T) {
	e := newEnv(t)
	body := map[string]any{"name": "claims-triage", "model": "gpt-4.1", "tools": []string{"lookup_policy"}}
	first := e.do(req{method: http.MethodPost, path: "/v1/agents", key: e.owner, body: body, header: map[string]string{"Idempotency-Key": "reg-1"}})
	expect(t, first, http.StatusCreated, "first registration")
	replay := e.do(req{method: http.MethodPost, path: "/v1/agents", key: e.owner, body: body, header: map[string]string{"Idempotency-Key": "reg-1"}})
	expect(t, replay, http.StatusCreated, "replayed registration")
	var a, b struct {
		AgentID string `json:"agentId"`
	}
	first.decode(t, &a)
	replay.decode(t, &b)
	if a.AgentID == "" || a.AgentID != b.AgentID {
		t.Fatalf("replay answered %q, first %q", b.AgentID, a.AgentID)
	}
	for _, h := range []map[string]string{nil, {"Idempotency-Key": "reg-2"}} {
		checkEnvelope(t, e.do(req{method: http.MethodPost, path: "/v1/agents", key: e.owner, body: body, header: h}), http.StatusConflict, "CONFLICT", "conflict", nil)
	}
	// Another tenant may use the name.
	expect(t, e.post(e.key("globex", auth.RoleOwner), "/v1/agents", body), http.StatusCreated, "same name, other tenant")
}

// TestKLAUnknownAgent: POST /v1/decisions.evaluate for an agentId the
// tenant's registry does not hold is 404 not_found, and nothing is
// decided; an agent known from its registration or from its events is
// evaluated. A tenant's admin may turn on autoRegister, after which the
// first decision registers the agent (audited, within the tenant only).
func TestKLAUnknownAgent(t *testing.T) {
	e := newEnv(t)
	admin, member := e.key("default", auth.RoleAdmin), e.key("default", auth.RoleMember)
	globex := e.key("globex", auth.RoleOwner)
	ghostKey := e.key("default", auth.RoleAgent, "ghost")
	expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "known-bot"}), http.StatusCreated, "register known-bot")
	expect(t, e.post(globex, "/v1/agents", map[string]any{"agentId": "globex-bot"}), http.StatusCreated, "register globex-bot")
	expect(t, e.post(e.owner, "/v1/events", ev("seen-bot", "seen-session", time.Now())), http.StatusAccepted, "seen-bot's event")
	eventually(t, 10*time.Second, func() (bool, string) {
		r := e.get(e.owner, "/v1/agents/seen-bot")
		return r.status == http.StatusOK, "seen-bot discovered: " + r.String()
	})
	// recorded reports whether any decision of tenant's agent is on POLICY.
	recorded := func(tenant, agentID string) bool {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := e.st.JS.Stream(ctx, streams.Policy)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.GetLastMsgForSubject(ctx, "policy.v1."+streams.DecisionRecorded+"."+tenant+"."+streams.Token(agentID)+".>")
		if err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatal(err)
		}
		return err == nil
	}
	ask := func(agentID string) map[string]any {
		b := map[string]any{"action": "execute_refund", "context": map[string]any{"amount": 1}}
		if agentID != "" {
			b["agentId"] = agentID
		}
		return b
	}
	cases := []struct {
		name, key, agent string
		status           int
		recordedAs       string // the agent the decision is recorded for
	}{
		{"unknown agent", e.owner, "ghost", http.StatusNotFound, ""},
		{"agent key bound to an unregistered agent", ghostKey, "", http.StatusNotFound, ""},
		{"agent of another tenant", e.owner, "globex-bot", http.StatusNotFound, ""},
		{"registered agent", e.owner, "known-bot", http.StatusOK, "known-bot"},
		{"agent discovered from its events", member, "seen-bot", http.StatusOK, "seen-bot"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.key, "/v1/decisions.evaluate", ask(tc.agent))
			if tc.status == http.StatusNotFound {
				checkEnvelope(t, r, http.StatusNotFound, "NOT_FOUND", "not_found", nil)
				if !strings.Contains(string(r.body), "POST /v1/agents") {
					t.Errorf("the 404 does not say how to register: %s", r)
				}
				return
			}
			expect(t, r, tc.status, tc.name)
			if !recorded("default", tc.recordedAs) {
				t.Errorf("no decision recorded for %s", tc.recordedAs)
			}
		})
	}
	if recorded("default", "ghost") || recorded("default", "globex-bot") {
		t.Fatal("a refused request was decided")
	}
	// Kaplaix's check and Kaizen's verdicts name agents their events
	// register: they answer before the agent is known.
	expect(t, e.post(e.owner, "/v1/policies/check", map[string]any{"agentId": "ghost", "toolName": "lookup"}), http.StatusOK, "Kaplaix check of an unknown agent")
	expect(t, e.post(e.owner, "/v1/verdicts", map[string]any{"agent": "ghost2", "tool": "lookup"}), http.StatusCreated, "Kaizen verdict of an unknown agent")

	t.Run("autoRegister setting", func(t *testing.T) {
		var st struct {
			Tenant       string `json:"tenant"`
			AutoRegister bool   `json:"autoRegister"`
			By           string `json:"by"`
		}
		e.get(member, "/v1/settings/agents").decode(t, &st)
		if st.AutoRegister || st.Tenant != "default" {
			t.Fatalf("default settings %+v, want autoRegister off", st)
		}
		for _, bad := range []any{map[string]any{}, map[string]any{"autoRegister": "yes"}, map[string]any{"autoRegister": true, "other": 1}, "not json"} {
			checkEnvelope(t, e.post(admin, "/v1/settings/agents", bad), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", nil)
		}
		checkEnvelope(t, e.post(member, "/v1/settings/agents", map[string]any{"autoRegister": true}), http.StatusForbidden, "FORBIDDEN", "forbidden", nil)
		r := e.post(admin, "/v1/settings/agents", map[string]any{"autoRegister": true})
		expect(t, r, http.StatusOK, "turn autoRegister on")
		r.decode(t, &st)
		adminID, _ := auth.ParseToken(admin)
		if !st.AutoRegister || st.By != "key:"+adminID {
			t.Fatalf("settings after the change %+v", st)
		}
		// The first decision registers the agent, recorded as who asked.
		expect(t, e.post(member, "/v1/decisions.evaluate", ask("fresh-bot")), http.StatusOK, "first decision of fresh-bot")
		var a struct {
			Source string `json:"source"`
		}
		e.get(member, "/v1/agents/fresh-bot").decode(t, &a)
		if a.Source != "discovered" || !recorded("default", "fresh-bot") {
			t.Errorf("fresh-bot after its first decision: source %q, decision recorded %v", a.Source, recorded("default", "fresh-bot"))
		}
		expect(t, e.post(ghostKey, "/v1/decisions.evaluate", ask("")), http.StatusOK, "bound key's agent registers itself")
		// The setting is the tenant's own.
		checkEnvelope(t, e.post(globex, "/v1/decisions.evaluate", ask("fresh-bot-2")), http.StatusNotFound, "NOT_FOUND", "not_found", nil)
		eventually(t, 10*time.Second, func() (bool, string) {
			r := e.get(e.owner, "/v1/audit?entityType=registry")
			return r.status == http.StatusOK && strings.Contains(string(r.body), `"actor":"key:`+adminID+`"`), "audit of the setting: " + r.String()
		})
		expect(t, e.post(admin, "/v1/settings/agents", map[string]any{"autoRegister": false}), http.StatusOK, "turn autoRegister off")
		checkEnvelope(t, e.post(member, "/v1/decisions.evaluate", ask("fresh-bot-3")), http.StatusNotFound, "NOT_FOUND", "not_found", nil)
	})
}

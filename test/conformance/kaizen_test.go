package conformance

import (
	"net/http"
	"testing"
)

// kaizenAction is the action of Kaizen's "The action and verdict shape",
// reported for agent.
func kaizenAction(agent, tool string) map[string]any {
	return map[string]any{
		"agent": agent, "kind": "tool_call", "tool": tool, "target": "api.stripe.com:443",
		"publisher": "stripe", "metadata": map[string]any{"source": "egress"},
	}
}

// kaizenVerdict is the documented verdict shape.
var kaizenVerdict = map[string]string{"decision": "string", "reason": "string", "evidence": "array", "confidence": "number|null"}

var (
	kzList      = map[string]string{"data": "array"}
	kzBad       = map[string]any{"code": "invalid_request"}
	kzForbidden = map[string]any{"code": "forbidden"}
	kzNotFound  = map[string]any{"code": "not_found"}
)

const (
	kzAuth    = "Kaizen · Authentication"
	kzShape   = "Kaizen · The action and verdict shape"
	kzVerdict = "Kaizen · Report and read verdicts"
	kzAgents  = "Kaizen · Agents"
	kzPolicy  = "Kaizen · Policy, model, and metrics"
	kzKeys    = "Kaizen · Keys, exports, and team"
	kzErr     = "Kaizen · Errors"
)

// kaizenCases is Kaizen's API reference, in order of its endpoint tables.
var kaizenCases = []Case{
	{Section: kzAuth, Name: "agent traffic with an agent key", Method: http.MethodPost, Path: "/v1/verdicts", As: "agent",
		Body: kaizenAction(agentKeyAgent, "issue_refund"), Status: 201, Types: kaizenVerdict,
		Deviation: "Kaizen's agent keys start kz_live_, Vigil's vgl_ (bound to the agents they act as); clients send the token opaquely"},
	{Section: kzErr, Name: "401 for a missing token", Method: http.MethodGet, Path: "/v1/verdicts", As: "none", Status: 401, Values: map[string]any{"code": "unauthorized"}},
	{Section: kzErr, Name: "401 for an invalid token", Method: http.MethodGet, Path: "/v1/verdicts", As: "invalid", Status: 401, Values: map[string]any{"code": "unauthorized"}},

	// Agents: declare first, so the verdicts below have a declaration to depart from.
	{Section: kzAgents, Name: "POST /v1/agents/{agent}/manifest declares expected behaviour", Method: http.MethodPost, Path: "/v1/agents/kz-agent/manifest",
		Body: map[string]any{"tools": []string{"issue_refund"}, "destinations": []string{"api.stripe.com"}}, Status: 200},
	{Section: kzErr, Name: "400 for a malformed manifest", Method: http.MethodPost, Path: "/v1/agents/kz-agent/manifest",
		Body: map[string]any{"tools": "issue_refund"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer declares", Method: http.MethodPost, Path: "/v1/agents/kz-agent/manifest", As: "viewer",
		Body: map[string]any{"tools": []string{}, "destinations": []string{}}, Status: 403, Values: kzForbidden},
	{Section: kzAgents, Name: "POST /v1/agents/{agent}/settings", Method: http.MethodPost, Path: "/v1/agents/kz-agent/settings",
		Body: map[string]any{"paused": false, "judge_enabled": true}, Status: 200},
	{Section: kzErr, Name: "400 for a malformed settings body", Method: http.MethodPost, Path: "/v1/agents/kz-agent/settings",
		Body: map[string]any{"paused": "no"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer changes settings", Method: http.MethodPost, Path: "/v1/agents/kz-agent/settings", As: "viewer",
		Body: map[string]any{"paused": true}, Status: 403, Values: kzForbidden},

	// Report and read verdicts.
	{Section: kzShape, Name: "POST /v1/verdicts: a declared action is allowed", Method: http.MethodPost, Path: "/v1/verdicts",
		Body: kaizenAction("kz-agent", "issue_refund"), Status: 201, Types: kaizenVerdict, Values: map[string]any{"decision": "allow", "confidence": nil},
		Deviation: "Kaizen does not name the status of a report; Vigil answers 201 (the verdict is recorded)"},
	{Section: kzShape, Name: "POST /v1/verdicts: an undeclared tool", Method: http.MethodPost, Path: "/v1/verdicts",
		Body: kaizenAction("kz-agent", "delete_customer"), Status: 201, Types: kaizenVerdict,
		Values: map[string]any{"decision": "allow", "outcome": "warn"}, Save: map[string]string{"id": "kzVerdict"},
		Deviation: "a departure from the declaration is a warn, which Kaizen's two values show as allow (the full outcome is in outcome)"},
	{Section: kzErr, Name: "400 for a malformed action", Method: http.MethodPost, Path: "/v1/verdicts",
		Body: `{"kind": "tool_call", "tool": `, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer reports", Method: http.MethodPost, Path: "/v1/verdicts", As: "viewer",
		Body: kaizenAction("kz-agent", "issue_refund"), Status: 403, Values: kzForbidden},
	{Section: kzVerdict, Name: "GET /v1/verdicts lists verdicts", Method: http.MethodGet, Path: "/v1/verdicts?agent=kz-agent&limit=10&offset=0", Status: 200, Wait: true,
		Types: merged(kzList, map[string]string{"data.1.decision": "string", "data.1.reason": "string", "data.1.evidence": "array", "data.1.confidence": "number|null"})},
	{Section: kzVerdict, Name: "GET /v1/verdicts every documented filter", Method: http.MethodGet,
		Path:   "/v1/verdicts?agent=kz-agent&status=open&decision=allow&source=egress&q=delete_customer&since=24h&limit=10&offset=0",
		Status: 200, Wait: true, Types: kzList, Values: map[string]any{"data.0.id": "{kzVerdict}"}},
	{Section: kzErr, Name: "400 for a malformed query", Method: http.MethodGet, Path: "/v1/verdicts?since=yesterday", Status: 400, Values: kzBad},
	{Section: kzVerdict, Name: "POST /v1/verdicts/{id}/status triages", Method: http.MethodPost, Path: "/v1/verdicts/{kzVerdict}/status",
		Body: map[string]any{"status": "acknowledged"}, Status: 200, Values: map[string]any{"status": "acknowledged"}},
	{Section: kzErr, Name: "400 for an unknown triage status", Method: http.MethodPost, Path: "/v1/verdicts/{kzVerdict}/status",
		Body: map[string]any{"status": "ignored"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer triages", Method: http.MethodPost, Path: "/v1/verdicts/{kzVerdict}/status", As: "viewer",
		Body: map[string]any{"status": "resolved"}, Status: 403, Values: kzForbidden},
	{Section: kzErr, Name: "404 for an unknown verdict id", Method: http.MethodPost, Path: "/v1/verdicts/dec_unknown/status",
		Body: map[string]any{"status": "resolved"}, Status: 404, Values: kzNotFound},
	{Section: kzErr, Name: "404 for another tenant's verdict", Method: http.MethodPost, Path: "/v1/verdicts/{kzVerdict}/status", As: "other",
		Body: map[string]any{"status": "resolved"}, Status: 404, Values: kzNotFound},
	{Section: kzVerdict, Name: "POST /v1/verdicts/{id}/learn folds the action into the declaration", Method: http.MethodPost, Path: "/v1/verdicts/{kzVerdict}/learn",
		Status: 200, Types: map[string]string{"agentId": "string", "tools": "array"}},
	{Section: kzErr, Name: "404 learning from an unknown verdict", Method: http.MethodPost, Path: "/v1/verdicts/dec_unknown/learn", Status: 404, Values: kzNotFound},
	{Section: kzShape, Name: "after learning, the action is declared", Method: http.MethodPost, Path: "/v1/verdicts",
		Body: kaizenAction("kz-agent", "delete_customer"), Status: 201, Values: map[string]any{"decision": "allow", "outcome": "allow"}},

	// Agents.
	{Section: kzAgents, Name: "GET /v1/agents/profiles", Method: http.MethodGet, Path: "/v1/agents/profiles", Status: 200, Wait: true,
		Types: merged(kzList, map[string]string{"data.0.agentId": "string"})},
	{Section: kzAgents, Name: "POST /v1/agents/{agent}/reset forgets the baseline", Method: http.MethodPost, Path: "/v1/agents/kz-agent/reset", Status: 200},
	{Section: kzErr, Name: "403 when a viewer resets", Method: http.MethodPost, Path: "/v1/agents/kz-agent/reset", As: "viewer", Status: 403, Values: kzForbidden},

	// Policy, model, and metrics.
	{Section: kzPolicy, Name: "POST /v1/org-policy sets a blocklist", Method: http.MethodPost, Path: "/v1/org-policy",
		Body: map[string]any{"mode": "blocklist", "tools": []string{"wire_transfer"}}, Status: 200},
	{Section: kzPolicy, Name: "GET /v1/org-policy", Method: http.MethodGet, Path: "/v1/org-policy", Status: 200,
		Values: map[string]any{"mode": "blocklist", "tools": []string{"wire_transfer"}}},
	{Section: kzShape, Name: "a blocked tool is block", Method: http.MethodPost, Path: "/v1/verdicts",
		Body: kaizenAction("kz-agent", "wire_transfer"), Status: 201, Types: kaizenVerdict, Values: map[string]any{"decision": "block"}},
	{Section: kzErr, Name: "400 for a malformed org policy", Method: http.MethodPost, Path: "/v1/org-policy",
		Body: map[string]any{"mode": "sometimes"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer changes the org policy", Method: http.MethodPost, Path: "/v1/org-policy", As: "viewer",
		Body: map[string]any{"mode": "off"}, Status: 403, Values: kzForbidden},
	{Section: kzPolicy, Name: "POST /v1/llm-config (BYO key, budget, threshold)", Method: http.MethodPost, Path: "/v1/llm-config",
		Body: map[string]any{"model": "gpt-4o-mini", "api_key": "sk-0123456789abcdef", "daily_token_budget": 5000, "confidence_threshold": 0.6}, Status: 200},
	{Section: kzPolicy, Name: "GET /v1/llm-config", Method: http.MethodGet, Path: "/v1/llm-config", Status: 200,
		Types: map[string]string{"model": "string"}, Values: map[string]any{"dailyTokenBudget": 5000, "confidenceThreshold": 0.6}},
	{Section: kzErr, Name: "400 for a malformed model config", Method: http.MethodPost, Path: "/v1/llm-config",
		Body: map[string]any{"confidence_threshold": "high"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer changes the model", Method: http.MethodPost, Path: "/v1/llm-config", As: "viewer",
		Body: map[string]any{"model": "gpt-4o"}, Status: 403, Values: kzForbidden},
	{Section: kzPolicy, Name: "GET /v1/judge/usage today and this week", Method: http.MethodGet, Path: "/v1/judge/usage", Status: 200,
		Types: map[string]string{"day": "string", "tokensUsed": "number", "calls": "number", "week": "object", "week.tokensUsed": "number", "week.days": "array"}},
	{Section: kzPolicy, Name: "GET /v1/metrics/timeseries", Method: http.MethodGet, Path: "/v1/metrics/timeseries", Status: 200, Wait: true,
		Types: map[string]string{"data": "array", "data.0.date": "string", "data.0.actions": "number", "data.0.anomalies": "number", "data.0.reviews": "number"}},

	// Keys, exports, and team.
	{Section: kzKeys, Name: "POST /v1/keys creates an API key", Method: http.MethodPost, Path: "/v1/keys",
		Body: map[string]any{"name": "ci", "role": "viewer"}, Status: 201, Types: map[string]string{"id": "string", "key": "string"}},
	{Section: kzKeys, Name: "GET /v1/keys lists API keys", Method: http.MethodGet, Path: "/v1/keys", Status: 200, Types: kzList},
	{Section: kzErr, Name: "400 for a malformed key", Method: http.MethodPost, Path: "/v1/keys", Body: map[string]any{"name": "x", "role": "emperor"}, Status: 400, Values: kzBad},
	{Section: kzErr, Name: "403 when a viewer creates a key", Method: http.MethodPost, Path: "/v1/keys", As: "viewer",
		Body: map[string]any{"name": "x", "role": "viewer"}, Status: 403, Values: kzForbidden},
	{Section: kzKeys, Name: "POST /v1/webhooks creates an export destination", Method: http.MethodPost, Path: "/v1/webhooks",
		Body: map[string]any{"url": "https://93.184.215.14/kaizen"}, Status: 201, Types: map[string]string{"id": "string"},
		Save:      map[string]string{"id": "kzHook"},
		Deviation: "Vigil resolves a webhook's host when it is created and refuses one that does not resolve or is private (SSRF), so the case uses a public address literal"},
	{Section: kzKeys, Name: "POST /v1/webhooks a second destination", Method: http.MethodPost, Path: "/v1/webhooks",
		Body: map[string]any{"url": "https://93.184.215.14/kaizen-2"}, Status: 201, Save: map[string]string{"id": "kzHook2"}},
	{Section: kzKeys, Name: "GET /v1/webhooks", Method: http.MethodGet, Path: "/v1/webhooks", Status: 200, Types: merged(kzList, map[string]string{"data.0.id": "string"})},
	{Section: kzKeys, Name: "DELETE /v1/webhooks?id= on the collection path", Method: http.MethodDelete, Path: "/v1/webhooks?id={kzHook}", Status: 204},
	{Section: kzKeys, Name: "DELETE /v1/webhooks/{id}", Method: http.MethodDelete, Path: "/v1/webhooks/{kzHook2}", Status: 204},
	{Section: kzErr, Name: "404 deleting an unknown webhook", Method: http.MethodDelete, Path: "/v1/webhooks?id={kzHook}", Status: 404, Values: kzNotFound},
	{Section: kzErr, Name: "400 for a malformed webhook", Method: http.MethodPost, Path: "/v1/webhooks", Body: map[string]any{"url": 7}, Status: 400, Values: kzBad},
	{Section: kzKeys, Name: "GET /v1/members", Method: http.MethodGet, Path: "/v1/members", Status: 200, Types: kzList},
	{Section: kzKeys, Name: "POST /v1/members/invite", Method: http.MethodPost, Path: "/v1/members/invite",
		Body: map[string]any{"email": "new@example.com", "role": "viewer"}, Status: 201},
	{Section: kzKeys, Name: "POST /v1/members/role", Method: http.MethodPost, Path: "/v1/members/role",
		Body: map[string]any{"email": "new@example.com", "role": "member"}, Status: 200},
	{Section: kzErr, Name: "403 invite and set roles are owner/admin only", Method: http.MethodPost, Path: "/v1/members/invite", As: "member",
		Body: map[string]any{"email": "other@example.com", "role": "viewer"}, Status: 403, Values: kzForbidden},
	{Section: kzErr, Name: "403 set roles is owner/admin only", Method: http.MethodPost, Path: "/v1/members/role", As: "member",
		Body: map[string]any{"email": "new@example.com", "role": "admin"}, Status: 403, Values: kzForbidden},
	{Section: kzErr, Name: "404 setting the role of an unknown member", Method: http.MethodPost, Path: "/v1/members/role",
		Body: map[string]any{"email": "nobody@example.com", "role": "admin"}, Status: 404, Values: kzNotFound},
	{Section: kzErr, Name: "400 for a malformed invitation", Method: http.MethodPost, Path: "/v1/members/invite",
		Body: map[string]any{"email": "not-an-email", "role": "viewer"}, Status: 400, Values: kzBad},
	{Section: kzKeys, Name: "GET /v1/audit", Method: http.MethodGet, Path: "/v1/audit", Status: 200,
		Types: merged(kzList, map[string]string{"data.0": "object"})},
	{Section: kzErr, Name: "5xx when the store is unreachable", Method: http.MethodGet, Path: "/v1/verdicts", ClickHouseDown: true, Status: 503,
		Values: map[string]any{"code": "internal_error"}, Headers: []string{"Retry-After"}},
}

// TestKaizen runs Kaizen's document against one stack.
func TestKaizen(t *testing.T) {
	s := newSuite(t)
	s.run(kaizenCases)
}

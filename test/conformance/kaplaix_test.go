package conformance

import (
	"net/http"
	"testing"
)

// kaplaixEvent is the body of Kaplaix's "Sending an event" example, with
// a fresh eventId per request.
func kaplaixEvent(eventID, session string) map[string]any {
	return map[string]any{
		"eventId": eventID, "agentId": "my-agent", "sessionId": session,
		"sourceTimestamp": "2025-01-15T10:30:00Z", "category": "tool_api", "schemaVersion": "1.0",
		"payload": map[string]any{"toolName": "web_search", "argumentsHash": "sha256-of-args", "responseStatus": 200},
	}
}

// laterEvent is an event of session a minute after the example's, so
// that the session lists first (most recently active first).
func laterEvent(session string) map[string]any {
	e := kaplaixEvent("{uuid}", session)
	e["sourceTimestamp"] = "2025-01-15T10:31:00Z"
	return e
}

// kaplaixPolicy is a Kaplaix rule list: shell commands need a review.
var kaplaixPolicy = map[string]any{
	"name": "review shell",
	"rules": []map[string]any{
		{"id": "r1", "decision": "requires_review", "priority": 1, "conditions": map[string]any{"toolType": "shell"}},
	},
	"defaultDecision": "allowed",
}

var (
	kaplaixSession = map[string]string{"sessionId": "string", "agentId": "string"}
	kaplaixPage    = map[string]string{"data": "array", "nextCursor": "string|null"}
	kaplaixInvalid = map[string]any{"error.code": "VALIDATION_ERROR"}
)

const (
	kpSum   = "Kaplaix · Endpoints summary"
	kpSend  = "Kaplaix · Sending an event"
	kpErr   = "Kaplaix · Error format"
	kpPage  = "Kaplaix · Pagination"
	kpHdr   = "Kaplaix · custom integration headers"
	kpRetry = "Kaplaix · Retry strategy"
	kpAuth  = "Kaplaix · Authentication"
)

// kaplaixCases is Kaplaix's HTTP API document, in order of its endpoint
// summary, with the example, pagination, headers and retry sections.
var kaplaixCases = []Case{
	{Section: kpAuth, Name: "401 without a bearer token", Method: http.MethodGet, Path: "/v1/sessions", As: "none", Status: 401,
		Values: map[string]any{"error.code": "AUTHENTICATION_FAILED"}},
	{Section: kpAuth, Name: "the key's format", Method: http.MethodGet, Path: "/v1/sessions", Status: 200,
		Deviation: "Kaplaix keys start al_live_, Vigil's vgl_; clients send the token opaquely"},

	// POST /v1/events: the example, then its errors.
	{Section: kpSend, Name: "the example event, with the integration headers", Method: http.MethodPost, Path: "/v1/events",
		Header: map[string]string{"x-kaplaix-sdk": "custom/1.0", "x-kaplaix-framework": "langchain", "x-kaplaix-agent-version": "2.1.0"},
		Body:   kaplaixEvent("550e8400-e29b-41d4-a716-446655440000", "session-001"), Status: 202,
		Types: map[string]string{"eventId": "string"}, Values: map[string]any{"eventId": "550e8400-e29b-41d4-a716-446655440000"},
		Deviation: "Kaplaix does not document the status of an ingest; Vigil answers 202 (stored durably, projected asynchronously)"},
	{Section: kpSend, Name: "a second event of the session", Method: http.MethodPost, Path: "/v1/events",
		Body: kaplaixEvent("{uuid}", "session-001"), Status: 202},
	{Section: kpErr, Name: "400 in the envelope: eventId not a UUID", Method: http.MethodPost, Path: "/v1/events",
		Body: kaplaixEvent("not-a-uuid", "session-001"), Status: 400, Values: kaplaixInvalid,
		Types: map[string]string{"error.details.0": "object"}},
	{Section: kpErr, Name: "400 in the envelope: malformed JSON", Method: http.MethodPost, Path: "/v1/events",
		Body: `{"eventId": `, Status: 400, Values: kaplaixInvalid},
	{Section: kpErr, Name: "403 a viewer cannot ingest", Method: http.MethodPost, Path: "/v1/events", As: "viewer",
		Body: kaplaixEvent("{uuid}", "session-001"), Status: 403, Values: map[string]any{"error.code": "FORBIDDEN"}},

	// Sessions.
	{Section: kpSum, Name: "GET /v1/sessions lists sessions", Method: http.MethodGet, Path: "/v1/sessions?limit=20", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"data.0.sessionId": "string", "data.0.agentId": "string"})},
	{Section: kpPage, Name: "the last page: nextCursor is null", Method: http.MethodGet, Path: "/v1/sessions?limit=1", Status: 200,
		Types: kaplaixPage, Values: map[string]any{"data.0.sessionId": "session-001", "nextCursor": nil}},
	{Section: kpPage, Name: "a later event of a second session", Method: http.MethodPost, Path: "/v1/events",
		Body: laterEvent("session-002"), Status: 202},
	{Section: kpPage, Name: "first page", Method: http.MethodGet, Path: "/v1/sessions?limit=1", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"nextCursor": "string"}), Values: map[string]any{"data.0.sessionId": "session-002"},
		Save: map[string]string{"nextCursor": "kpCursor"}},
	{Section: kpPage, Name: "next page", Method: http.MethodGet, Path: "/v1/sessions?limit=1&cursor={kpCursor}", Status: 200,
		Types: kaplaixPage, Values: map[string]any{"data.0.sessionId": "session-001", "nextCursor": nil}},
	{Section: kpPage, Name: "400 a malformed cursor", Method: http.MethodGet, Path: "/v1/sessions?limit=20&cursor=eyJsYXN0", Status: 400,
		Values: kaplaixInvalid},
	{Section: kpSum, Name: "GET /v1/sessions/:id session detail", Method: http.MethodGet, Path: "/v1/sessions/session-001", Status: 200,
		Types:  merged(kaplaixSession, map[string]string{"events": "array", "events.0.eventId": "string", "events.0.payload": "object"}),
		Values: map[string]any{"sessionId": "session-001", "agentId": "my-agent", "eventCount": 2}},
	{Section: kpSum, Name: "GET /v1/sessions/:id 404 for an unknown id", Method: http.MethodGet, Path: "/v1/sessions/no-such-session", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},
	{Section: kpSum, Name: "GET /v1/sessions/:id 404 for another tenant's session", Method: http.MethodGet, Path: "/v1/sessions/session-001", As: "other", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},
	{Section: kpSum, Name: "GET /v1/sessions/:id/risk computes the risk score", Method: http.MethodGet, Path: "/v1/sessions/session-001/risk", Status: 200,
		Types: map[string]string{"sessionId": "string", "score": "number", "riskLevel": "string"}},
	{Section: kpSum, Name: "GET /v1/sessions/:id/export.json exports the session", Method: http.MethodGet, Path: "/v1/sessions/session-001/export.json", Status: 200,
		Types: map[string]string{"session": "object", "events": "array", "events.1.eventId": "string"}, Headers: []string{"Content-Disposition"}},
	{Section: kpSum, Name: "GET /v1/sessions/:id/export.json 404 for an unknown id", Method: http.MethodGet, Path: "/v1/sessions/no-such-session/export.json", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},

	// Agents.
	{Section: kpSum, Name: "POST /v1/agents registers an agent", Method: http.MethodPost, Path: "/v1/agents",
		Body: map[string]any{"agentId": "kp-agent", "name": "Kaplaix agent", "framework": "langchain"}, Status: 201,
		Types: map[string]string{"agentId": "string", "name": "string"}, Values: map[string]any{"agentId": "kp-agent"}},
	{Section: kpSum, Name: "POST /v1/agents 409 for an id already registered", Method: http.MethodPost, Path: "/v1/agents",
		Body: map[string]any{"agentId": "kp-agent", "name": "again"}, Status: 409, Values: map[string]any{"error.code": "CONFLICT"}},
	{Section: kpSum, Name: "POST /v1/agents 400 for a malformed body", Method: http.MethodPost, Path: "/v1/agents",
		Body: map[string]any{"agentId": "kp-bad", "tools": "not-a-list"}, Status: 400, Values: kaplaixInvalid},
	{Section: kpSum, Name: "GET /v1/agents lists agents", Method: http.MethodGet, Path: "/v1/agents?limit=20", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"data.0.agentId": "string"})},
	{Section: kpSum, Name: "GET /v1/agents/:id gets an agent", Method: http.MethodGet, Path: "/v1/agents/kp-agent", Status: 200,
		Types: map[string]string{"agentId": "string", "name": "string", "status": "string"}, Values: map[string]any{"framework": "langchain"}},
	{Section: kpSum, Name: "GET /v1/agents/:id 404 for an unknown id", Method: http.MethodGet, Path: "/v1/agents/no-such-agent", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},
	{Section: kpSum, Name: "PATCH /v1/agents/:id updates an agent", Method: http.MethodPatch, Path: "/v1/agents/kp-agent",
		Body: map[string]any{"description": "updated"}, Status: 200, Values: map[string]any{"description": "updated", "agentId": "kp-agent"}},
	{Section: kpSum, Name: "PATCH /v1/agents/:id 404 for an unknown id", Method: http.MethodPatch, Path: "/v1/agents/no-such-agent",
		Body: map[string]any{"description": "x"}, Status: 404, Values: map[string]any{"error.code": "NOT_FOUND"}},
	{Section: kpSum, Name: "PATCH /v1/agents/:id 403 for a viewer", Method: http.MethodPatch, Path: "/v1/agents/kp-agent", As: "viewer",
		Body: map[string]any{"description": "x"}, Status: 403, Values: map[string]any{"error.code": "FORBIDDEN"}},
	{Section: kpSum, Name: "GET /v1/agents/:id/sessions lists the agent's sessions", Method: http.MethodGet, Path: "/v1/agents/my-agent/sessions?limit=20", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"data.0.sessionId": "string"}), Values: map[string]any{"data.0.agentId": "my-agent"}},

	// Policies.
	{Section: kpSum, Name: "POST /v1/policies creates a policy (the rule-list form)", Method: http.MethodPost, Path: "/v1/policies",
		Body: kaplaixPolicy, Status: 201, Types: map[string]string{"id": "string", "name": "string", "rules": "array"},
		Save: map[string]string{"id": "kpPolicy"}},
	{Section: kpSum, Name: "POST /v1/policies 400 for a malformed body", Method: http.MethodPost, Path: "/v1/policies",
		Body: map[string]any{"name": "bad", "rules": []map[string]any{{"id": "r", "when": "action.tool ==", "outcome": "block"}}}, Status: 400, Values: kaplaixInvalid},
	{Section: kpSum, Name: "GET /v1/policies lists policies", Method: http.MethodGet, Path: "/v1/policies?limit=20", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"data.0.id": "string"})},
	{Section: kpSum, Name: "GET /v1/policies/:id gets a policy", Method: http.MethodGet, Path: "/v1/policies/{kpPolicy}", Status: 200,
		Types: map[string]string{"id": "string", "name": "string", "status": "string"}, Values: map[string]any{"defaultDecision": "allowed"}},
	{Section: kpSum, Name: "GET /v1/policies/:id 404 for an unknown id", Method: http.MethodGet, Path: "/v1/policies/pol_unknown", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},
	{Section: kpSum, Name: "PATCH /v1/policies/:id updates a policy", Method: http.MethodPatch, Path: "/v1/policies/{kpPolicy}",
		Body: map[string]any{"description": "shell needs a human"}, Status: 200, Values: map[string]any{"description": "shell needs a human"}},
	{Section: kpSum, Name: "POST /v1/policies/check checks an action", Method: http.MethodPost, Path: "/v1/policies/check", As: "member",
		Body:   map[string]any{"agentId": "my-agent", "toolType": "shell", "operation": "execute", "targetSystem": "prod-db", "initiatorType": "agent"},
		Status: 200, Types: map[string]string{"decision": "string", "decisionId": "string"}, Values: map[string]any{"decision": "requires_review"}},
	{Section: kpSum, Name: "POST /v1/policies/check allows what no rule holds", Method: http.MethodPost, Path: "/v1/policies/check",
		Body:   map[string]any{"agentId": "my-agent", "toolType": "http", "operation": "read", "targetSystem": "docs", "initiatorType": "agent"},
		Status: 200, Values: map[string]any{"decision": "allowed"}},
	{Section: kpSum, Name: "POST /v1/policies/check 400 for a malformed body", Method: http.MethodPost, Path: "/v1/policies/check",
		Body: `{"toolType": 3}`, Status: 400, Values: kaplaixInvalid},

	// The Decision Desk.
	{Section: kpSum, Name: "GET /v1/guardian/pending-actions lists pending actions", Method: http.MethodGet, Path: "/v1/guardian/pending-actions?status=pending&limit=20", Status: 200, Wait: true,
		Types: merged(kaplaixPage, map[string]string{"data.0.id": "string", "data.0.status": "string"}), Save: map[string]string{"data.0.id": "kpPending"}},
	{Section: kpSum, Name: "POST /v1/guardian/pending-actions/:id/decide 403 for a viewer", Method: http.MethodPost, Path: "/v1/guardian/pending-actions/{kpPending}/decide", As: "viewer",
		Body: map[string]any{"decision": "approve"}, Status: 403, Values: map[string]any{"error.code": "FORBIDDEN"}},
	{Section: kpSum, Name: "POST /v1/guardian/pending-actions/:id/decide 400 for a malformed decision", Method: http.MethodPost, Path: "/v1/guardian/pending-actions/{kpPending}/decide",
		Body: map[string]any{"decision": "maybe"}, Status: 400, Values: kaplaixInvalid},
	{Section: kpSum, Name: "POST /v1/guardian/pending-actions/:id/decide decides", Method: http.MethodPost, Path: "/v1/guardian/pending-actions/{kpPending}/decide", As: "admin",
		Body: map[string]any{"decision": "approve", "comment": "ok"}, Status: 200,
		Deviation: "separation of duties: the key that asked (a member here) cannot approve its own action (docs/security.md)", Types: map[string]string{"id": "string", "status": "string"}},
	{Section: kpSum, Name: "POST /v1/guardian/pending-actions/:id/decide 409 a second time", Method: http.MethodPost, Path: "/v1/guardian/pending-actions/{kpPending}/decide", As: "admin",
		Body: map[string]any{"decision": "reject"}, Status: 409, Values: map[string]any{"error.code": "CONFLICT"}},
	{Section: kpSum, Name: "POST /v1/guardian/pending-actions/:id/decide 404 for an unknown id", Method: http.MethodPost, Path: "/v1/guardian/pending-actions/pa_unknown/decide",
		Body: map[string]any{"decision": "approve"}, Status: 404, Values: map[string]any{"error.code": "NOT_FOUND"}},

	// Archive the policy after the desk used it.
	{Section: kpSum, Name: "DELETE /v1/policies/:id archives a policy", Method: http.MethodDelete, Path: "/v1/policies/{kpPolicy}", Status: 200,
		Values: map[string]any{"status": "archived"}},
	{Section: kpSum, Name: "DELETE /v1/policies/:id 404 for an unknown id", Method: http.MethodDelete, Path: "/v1/policies/pol_unknown", Status: 404,
		Values: map[string]any{"error.code": "NOT_FOUND"}},

	// Notification channels.
	{Section: kpSum, Name: "POST /v1/notification-channels creates a webhook", Method: http.MethodPost, Path: "/v1/notification-channels",
		Body:   map[string]any{"name": "secops", "url": "https://93.184.215.14/vigil", "signals": []string{"verdict.block", "approval.requested"}},
		Status: 201, Types: map[string]string{"id": "string", "url": "string"},
		Deviation: "the doc's host is illustrative; Vigil resolves a webhook's host when it is created and refuses one that does not resolve or is private (SSRF), so the case uses a public address literal"},
	{Section: kpSum, Name: "POST /v1/notification-channels 400 without a url", Method: http.MethodPost, Path: "/v1/notification-channels",
		Body: map[string]any{"name": "no-url"}, Status: 400, Values: kaplaixInvalid},
	{Section: kpSum, Name: "GET /v1/notification-channels lists webhooks", Method: http.MethodGet, Path: "/v1/notification-channels", Status: 200,
		Types: merged(kaplaixPage, map[string]string{"data.0.id": "string"})},

	// Retry strategy: the statuses a client retries on.
	{Section: kpRetry, Name: "503 service unavailable, with Retry-After", Method: http.MethodGet, Path: "/v1/sessions?limit=20", ClickHouseDown: true, Status: 503,
		Values: map[string]any{"error.code": "SERVICE_UNAVAILABLE"}, Headers: []string{"Retry-After"}},
	{Section: kpRetry, Name: "the retried request answers", Method: http.MethodGet, Path: "/v1/sessions?limit=20", Status: 200, Wait: true, Types: kaplaixPage},
	{Section: kpRetry, Name: "lower the ingest rate (Vigil's settings)", Method: http.MethodPost, Path: "/v1/settings/rate-limits", As: "other",
		Body: map[string]any{"ingest": map[string]any{"perSecond": 0.001, "burst": 1}}, Status: 200,
		Deviation: "Kaplaix sets rate limits itself; Vigil lets a tenant lower its own"},
	{Section: kpRetry, Name: "429 rate limited, with Retry-After", Method: http.MethodPost, Path: "/v1/events", As: "other", Wait: true,
		Body: kaplaixEvent("{uuid}", "limited"), Status: 429, Values: map[string]any{"error.code": "RATE_LIMITED"}, Headers: []string{"Retry-After"}},
}

// TestKaplaix runs Kaplaix's document against one stack.
func TestKaplaix(t *testing.T) {
	s := newSuite(t)
	s.run(kaplaixCases)
}

package conformance

import (
	"net/http"
	"testing"
)

// klaRegister is the request body of KLA's "Register an Agent" example.
var klaRegister = map[string]any{
	"name":        "claims-triage",
	"description": "Triages inbound insurance claims",
	"model":       "gpt-4.1",
	"temperature": 0.2,
	"tools":       []string{"lookup_policy", "flag_for_review"},
}

// klaEvaluate is KLA's "Evaluate a Policy Decision" example, for the
// agent the registration example created.
func klaEvaluate(action string, amount any) map[string]any {
	return map[string]any{"agentId": "{klaAgent}", "action": action, "context": map[string]any{"amount": amount, "user_id": "usr_22"}}
}

// klaPolicy makes the example's outcomes reachable: KLA evaluates "your
// published policies"; Vigil publishes them through POST /v1/policies.
// amount is a typed input, so that "field 'amount' must be a number" is
// the documented 400.
var klaPolicy = map[string]any{
	"id": "kla-refunds", "name": "KLA example policies",
	"inputs": map[string]any{"amount": map[string]any{"type": "number"}},
	"rules": []map[string]any{
		{"id": "big-refund", "when": `action.tool == "execute_refund" && context.amount > 1000`, "outcome": "require_approval", "reasonCodes": []string{"AMOUNT_OVER_THRESHOLD"}},
		{"id": "notify", "when": `action.tool == "send_notice"`, "outcome": "warn", "reasonCodes": []string{"CUSTOMER_CONTACT"}},
		{"id": "purge", "when": `action.tool == "purge_records"`, "outcome": "block", "reasonCodes": []string{"DESTRUCTIVE_ACTION"}},
	},
}

// klaDecision are the documented fields of a decision (the table under
// "Evaluate a Policy Decision").
var klaDecision = map[string]string{"decision": "string", "reasonCodes": "array", "requiresDeskApproval": "boolean", "decisionId": "string"}

const (
	klaAuth     = "KLA · Authentication"
	klaRegSec   = "KLA · Register an Agent"
	klaEvalSec  = "KLA · Evaluate a Policy Decision"
	klaProofSec = "KLA · Retrieve an Audit Proof"
	klaErrSec   = "KLA · Errors & status codes"
	klaIdemSec  = "KLA · Rate limits & idempotency"
)

// klaCases is KLA's Control Plane API document, in order. Its base URL
// is https://api.kla.digital/v1, so its /agents is Vigil's /v1/agents.
var klaCases = []Case{
	// Authentication: a bearer token and x-tenant-id on every request.
	{Section: klaAuth, Name: "bearer token and x-tenant-id (the curl example)", Method: http.MethodGet, Path: "/v1/agents",
		Header: map[string]string{"x-tenant-id": "conformance"}, Status: 200, Types: map[string]string{"data": "array"}},
	{Section: klaAuth, Name: "no x-tenant-id", Method: http.MethodGet, Path: "/v1/agents", Status: 200,
		Deviation: "KLA requires x-tenant-id; a Vigil key belongs to one tenant, so the header is optional and, when sent, must match (docs/api.md)"},
	{Section: klaErrSec, Name: "401 missing bearer token", Method: http.MethodGet, Path: "/v1/agents", As: "none",
		Header: map[string]string{"x-tenant-id": "conformance"}, Status: 401, Values: map[string]any{"code": "unauthorized"}},
	{Section: klaErrSec, Name: "401 invalid bearer token", Method: http.MethodGet, Path: "/v1/agents", As: "invalid",
		Header: map[string]string{"x-tenant-id": "conformance"}, Status: 401, Values: map[string]any{"code": "unauthorized"}},
	{Section: klaErrSec, Name: "403 token valid but not for this tenant", Method: http.MethodGet, Path: "/v1/agents",
		Header: map[string]string{"x-tenant-id": "acme-prod"}, Status: 403, Values: map[string]any{"code": "forbidden"}},

	// Register an Agent.
	{Section: klaRegSec, Name: "the example registration", Method: http.MethodPost, Path: "/v1/agents",
		Header: map[string]string{"x-tenant-id": "conformance", "Idempotency-Key": "kla-register-1"}, Body: klaRegister, Status: 201,
		Types: map[string]string{"agentId": "string", "manifestHash": "string", "registeredAt": "string"},
		Save:  map[string]string{"agentId": "klaAgent", "manifestHash": "klaManifestHash"}},
	{Section: klaRegSec, Name: "the manifest hash is signed", Method: http.MethodPost, Path: "/v1/agents",
		Body: map[string]any{"name": "claims-signed", "tools": []string{"lookup_policy"}}, Status: 201,
		Types: map[string]string{"manifestHash": "string", "manifestSignature": "string"}},
	{Section: klaIdemSec, Name: "replaying the Idempotency-Key returns the original result", Method: http.MethodPost, Path: "/v1/agents",
		Header: map[string]string{"Idempotency-Key": "kla-register-1"}, Body: klaRegister, Status: 201,
		Values: map[string]any{"agentId": "{klaAgent}", "manifestHash": "{klaManifestHash}"}},
	{Section: klaErrSec, Name: "409 a duplicate registration", Method: http.MethodPost, Path: "/v1/agents",
		Body: klaRegister, Status: 409, Values: map[string]any{"code": "conflict"}},
	{Section: klaErrSec, Name: "409 Idempotency-Key reuse with a different payload", Method: http.MethodPost, Path: "/v1/agents",
		Header: map[string]string{"Idempotency-Key": "kla-register-1"}, Body: map[string]any{"name": "claims-other"}, Status: 409,
		Values: map[string]any{"code": "conflict"}},
	{Section: klaErrSec, Name: "400 malformed JSON", Method: http.MethodPost, Path: "/v1/agents",
		Body: `{"name": "claims-triage",`, Status: 400, Values: map[string]any{"code": "invalid_request"}},
	{Section: klaErrSec, Name: "400 failed schema validation", Method: http.MethodPost, Path: "/v1/agents",
		Body: map[string]any{"name": "claims-bad", "temperature": "warm"}, Status: 400, Values: map[string]any{"code": "invalid_request"}},
	{Section: klaErrSec, Name: "403 token lacks permission for the action", Method: http.MethodPost, Path: "/v1/agents", As: "viewer",
		Body: map[string]any{"name": "claims-viewer"}, Status: 403, Values: map[string]any{"code": "forbidden"}},

	// Evaluate a Policy Decision.
	{Section: klaEvalSec, Name: "publish the policies the examples evaluate", Method: http.MethodPost, Path: "/v1/policies",
		Body: klaPolicy, Status: 201, Deviation: "KLA publishes policies outside this API; Vigil's POST /v1/policies does it"},
	{Section: klaEvalSec, Name: "the example: require_approval", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Header: map[string]string{"x-tenant-id": "conformance", "Idempotency-Key": "kla-eval-1"}, Body: klaEvaluate("execute_refund", 1250.00), Status: 200,
		Types:  klaDecision,
		Values: map[string]any{"decision": "require_approval", "reasonCodes": []string{"AMOUNT_OVER_THRESHOLD"}, "requiresDeskApproval": true},
		Save:   map[string]string{"decisionId": "klaDecision"}},
	{Section: klaIdemSec, Name: "replaying the Idempotency-Key returns the original decision", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Header: map[string]string{"Idempotency-Key": "kla-eval-1"}, Body: klaEvaluate("execute_refund", 1250.00), Status: 200,
		Values: map[string]any{"decisionId": "{klaDecision}", "decision": "require_approval"}},
	{Section: klaErrSec, Name: "409 Idempotency-Key reuse with a different payload", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Header: map[string]string{"Idempotency-Key": "kla-eval-1"}, Body: klaEvaluate("execute_refund", 10), Status: 409,
		Values: map[string]any{"code": "conflict"}},
	{Section: klaEvalSec, Name: "allow", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: klaEvaluate("execute_refund", 10), Status: 200, Types: klaDecision,
		Values: map[string]any{"decision": "allow", "requiresDeskApproval": false}},
	{Section: klaEvalSec, Name: "warn", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: klaEvaluate("send_notice", 10), Status: 200, Types: klaDecision,
		Values: map[string]any{"decision": "warn", "reasonCodes": []string{"CUSTOMER_CONTACT"}, "requiresDeskApproval": false}},
	{Section: klaEvalSec, Name: "block", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: klaEvaluate("purge_records", 10), Status: 200, Types: klaDecision,
		Values: map[string]any{"decision": "block", "reasonCodes": []string{"DESTRUCTIVE_ACTION"}, "requiresDeskApproval": false}},
	{Section: klaErrSec, Name: "400 field 'amount' must be a number", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: klaEvaluate("execute_refund", "1250"), Status: 400, Values: map[string]any{"code": "invalid_request"}},
	{Section: klaErrSec, Name: "400 malformed JSON", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: `{"agentId": `, Status: 400, Values: map[string]any{"code": "invalid_request"}},
	{Section: klaErrSec, Name: "404 unknown agentId", Method: http.MethodPost, Path: "/v1/decisions.evaluate",
		Body: map[string]any{"agentId": "agt_unknown", "action": "execute_refund", "context": map[string]any{"amount": 5}}, Status: 404,
		Values: map[string]any{"code": "not_found"}},
	{Section: klaErrSec, Name: "401 missing bearer token", Method: http.MethodPost, Path: "/v1/decisions.evaluate", As: "none",
		Body: klaEvaluate("execute_refund", 10), Status: 401, Values: map[string]any{"code": "unauthorized"}},
	{Section: klaErrSec, Name: "403 token lacks permission for the action", Method: http.MethodPost, Path: "/v1/decisions.evaluate", As: "viewer",
		Body: klaEvaluate("execute_refund", 10), Status: 403, Values: map[string]any{"code": "forbidden"}},
	{Section: klaErrSec, Name: "403 an agent token evaluating for another agent", Method: http.MethodPost, Path: "/v1/decisions.evaluate", As: "agent",
		Body: klaEvaluate("execute_refund", 10), Status: 403, Values: map[string]any{"code": "forbidden"}},

	// Retrieve an Audit Proof: the decision's lineage record.
	{Section: klaProofSec, Name: "the proof of an anchored record", Method: http.MethodGet, Path: "/v1/lineage/{klaDecision}/verify", Status: 200, Wait: true,
		Types:  map[string]string{"lineageId": "string", "anchored": "boolean", "ledgerIndex": "number", "rootHash": "string", "merklePath": "array"},
		Values: map[string]any{"lineageId": "{klaDecision}", "anchored": true}},
	{Section: klaErrSec, Name: "404 unknown lineageId", Method: http.MethodGet, Path: "/v1/lineage/lr_99a1287fbc/verify", Status: 404,
		Values: map[string]any{"code": "not_found"}},
	{Section: klaErrSec, Name: "404 another tenant's lineageId", Method: http.MethodGet, Path: "/v1/lineage/{klaDecision}/verify", As: "other", Status: 404,
		Values: map[string]any{"code": "not_found"}},
	{Section: klaErrSec, Name: "404 unknown route", Method: http.MethodGet, Path: "/v1/no-such-route", Status: 404,
		Values: map[string]any{"code": "not_found"}},
	{Section: klaErrSec, Name: "404 unknown agentId on read", Method: http.MethodGet, Path: "/v1/agents/agt_unknown", Status: 404,
		Values: map[string]any{"code": "not_found"}},
	{Section: klaErrSec, Name: "5xx internal_error: a transient server fault (ClickHouse unreachable)", Method: http.MethodGet, Path: "/v1/agents/{klaAgent}/sessions",
		ClickHouseDown: true, Status: 503, Values: map[string]any{"code": "internal_error"}, Headers: []string{"Retry-After"}},
	{Section: klaErrSec, Name: "after the fault, the same read answers", Method: http.MethodGet, Path: "/v1/agents/{klaAgent}/sessions", Status: 200, Wait: true,
		Types: map[string]string{"data": "array"}},

	// 429: the other tenant lowers its own decision rate to one, then asks twice.
	{Section: klaIdemSec, Name: "a tenant's rate limit (set through Vigil's settings)", Method: http.MethodPost, Path: "/v1/settings/rate-limits", As: "other",
		Body: map[string]any{"decisions": map[string]any{"perSecond": 0.001, "burst": 1}}, Status: 200,
		Deviation: "KLA sets rate limits itself; Vigil lets a tenant lower its own"},
	{Section: klaErrSec, Name: "429 rate_limited with Retry-After", Method: http.MethodPost, Path: "/v1/decisions.evaluate", As: "other", Wait: true,
		Body: map[string]any{"agentId": "limited-agent", "action": "execute_refund", "context": map[string]any{"amount": 5}}, Status: 429,
		Values: map[string]any{"code": "rate_limited"}, Headers: []string{"Retry-After"}},
}

// TestKLA runs KLA's document against one stack.
func TestKLA(t *testing.T) {
	s := newSuite(t)
	s.run(klaCases)
}

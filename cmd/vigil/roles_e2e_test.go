package main

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
)

// routePermissions is the documented role × route matrix (docs/security.md):
// each route and the permissions any one of which admits a caller.
var routePermissions = map[string][]auth.Permission{
	"POST /v1/events":       {auth.EventsWrite},
	"POST /v1/events/batch": {auth.EventsWrite},
	"POST /v1/traces":       {auth.EventsWrite},

	"GET /v1/sessions":                             {auth.SessionsRead},
	"GET /v1/sessions/:id":                         {auth.SessionsRead},
	"GET /v1/sessions/:id/export.json":             {auth.SessionsRead},
	"POST /v1/agents":                              {auth.AgentsRegister},
	"GET /v1/agents":                               {auth.AgentsRead},
	"GET /v1/agents/:id":                           {auth.AgentsRead},
	"PATCH /v1/agents/:id":                         {auth.AgentsWrite},
	"GET /v1/agents/:id/sessions":                  {auth.SessionsRead}, // and agents:read
	"POST /v1/agents/:id/manifest":                 {auth.AgentsWrite, auth.AgentsRegister},
	"POST /v1/agents/:id/settings":                 {auth.AgentsWrite},
	"POST /v1/policies":                            {auth.PoliciesWrite},
	"GET /v1/policies":                             {auth.PoliciesRead},
	"POST /v1/policies/check":                      {auth.DecisionsEvaluate},
	"POST /v1/policies/validate":                   {auth.PoliciesRead},
	"POST /v1/policies/test":                       {auth.PoliciesRead},
	"POST /v1/policies/replay":                     {auth.VerdictsRead}, // and policies:read
	"GET /v1/policies/:id":                         {auth.PoliciesRead},
	"PATCH /v1/policies/:id":                       {auth.PoliciesWrite},
	"DELETE /v1/policies/:id":                      {auth.PoliciesWrite},
	"POST /v1/policies/:id/apply":                  {auth.PoliciesWrite},
	"GET /v1/org-policy":                           {auth.PoliciesRead},
	"POST /v1/org-policy":                          {auth.PoliciesWrite},
	"POST /v1/decisions.evaluate":                  {auth.DecisionsEvaluate},
	"GET /v1/decisions/:id":                        {auth.VerdictsRead, auth.DecisionsEvaluate},
	"POST /v1/verdicts":                            {auth.DecisionsEvaluate},
	"GET /v1/verdicts":                             {auth.VerdictsRead},
	"GET /v1/verdicts/:id":                         {auth.VerdictsRead},
	"POST /v1/verdicts/:id/status":                 {auth.VerdictsTriage},
	"POST /v1/verdicts/:id/learn":                  {auth.VerdictsTriage},
	"GET /v1/guardian/pending-actions":             {auth.ApprovalsRead},
	"GET /v1/guardian/pending-actions/:id":         {auth.ApprovalsRead},
	"POST /v1/guardian/pending-actions/:id/decide": {auth.ApprovalsDecide},
	"POST /v1/decisions/:id/redeem":                {auth.DecisionsEvaluate},
	"POST /v1/members/groups":                      {auth.MembersManage},

	"GET /v1/keys":                  {auth.KeysManage},
	"POST /v1/keys":                 {auth.KeysManage},
	"DELETE /v1/keys/:id":           {auth.KeysManage},
	"POST /v1/keys/:id/bind":        {auth.KeysManage},
	"GET /v1/members":               {auth.MembersRead},
	"POST /v1/members/invite":       {auth.MembersManage},
	"POST /v1/members/role":         {auth.MembersManage},
	"DELETE /v1/members/:email":     {auth.MembersManage},
	"GET /v1/settings/rate-limits":  {auth.SettingsRead},
	"POST /v1/settings/rate-limits": {auth.LimitsManage},
	"PUT /v1/settings/rate-limits":  {auth.LimitsManage},
	"GET /v1/settings/agents":       {auth.SettingsRead},
	"POST /v1/settings/agents":      {auth.SettingsManage},
	"PUT /v1/settings/agents":       {auth.SettingsManage},
	"GET /v1/mcp/pins":              {auth.VerdictsRead, auth.DecisionsEvaluate},
	"POST /v1/mcp/pins":             {auth.DecisionsEvaluate},
	"DELETE /v1/mcp/pins":           {auth.PoliciesWrite},
	"GET /v1/halts":                 {auth.HaltsManage},
	"POST /v1/halts":                {auth.HaltsManage},
	"DELETE /v1/halts/:id":          {auth.HaltsManage},
	"GET /v1/budgets":               {auth.BudgetsRead},
	"POST /v1/budgets":              {auth.BudgetsManage},
	"GET /v1/budgets/:id":           {auth.BudgetsRead},
	"DELETE /v1/budgets/:id":        {auth.BudgetsManage},
	"GET /v1/audit":                 {auth.AuditRead},
	"GET /v1/audit/export":          {auth.AuditRead},

	"GET /v1/ledger/checkpoint":     {auth.LedgerRead},
	"GET /v1/ledger/key":            {auth.LedgerRead},
	"GET /v1/ledger/consistency":    {auth.LedgerRead},
	"GET /v1/lineage/:id/verify":    {auth.LedgerRead},
	"GET /v1/sessions/:id/evidence": {auth.LedgerRead},

	"GET /v1/agents/profiles":    {auth.RiskRead},
	"POST /v1/agents/:id/reset":  {auth.AgentsWrite},
	"GET /v1/sessions/:id/risk":  {auth.RiskRead},
	"GET /v1/metrics/timeseries": {auth.RiskRead},

	"POST /v1/notification-channels":                                  {auth.ChannelsManage},
	"GET /v1/notification-channels":                                   {auth.ChannelsRead},
	"GET /v1/notification-channels/:id":                               {auth.ChannelsRead},
	"PATCH /v1/notification-channels/:id":                             {auth.ChannelsManage},
	"DELETE /v1/notification-channels/:id":                            {auth.ChannelsManage},
	"POST /v1/notification-channels/:id/rotate-secret":                {auth.ChannelsManage},
	"POST /v1/notification-channels/:id/test":                         {auth.ChannelsManage},
	"GET /v1/notification-channels/:id/deliveries":                    {auth.ChannelsRead},
	"GET /v1/notification-channels/:id/dead-letters":                  {auth.ChannelsRead},
	"POST /v1/notification-channels/:id/deliveries/:deliveryId/retry": {auth.ChannelsManage},
	"GET /v1/webhooks":                                                {auth.ChannelsRead},
	"POST /v1/webhooks":                                               {auth.ChannelsManage},
	"GET /v1/webhooks/:id":                                            {auth.ChannelsRead},
	"DELETE /v1/webhooks/:id":                                         {auth.ChannelsManage},
	"DELETE /v1/webhooks":                                             {auth.ChannelsManage},

	"GET /v1/settings/redaction":  {auth.SettingsRead},
	"POST /v1/settings/redaction": {auth.SettingsManage},
	"GET /v1/llm-config":          {auth.SettingsRead},
	"POST /v1/llm-config":         {auth.SettingsManage},
	"GET /v1/judge/usage":         {auth.SettingsRead},
}

// consoleRoutes are the console's browser routes (docs/console.md):
// "public" ones need nothing; "session" ones need the console's session
// cookie and, without it, redirect a GET to the sign-in page and refuse
// anything else with 401 — an API key alone never gets in, so a page can
// never be driven with a bearer token. What a signed-in person may do is
// what the API route the page dispatches to allows: the /v1 matrix below
// covers those, and TestConsoleRoles checks the dispatch keeps the
// person's role and tenant.
var consoleRoutes = map[string]string{
	"GET /console/static/console.css":     "public",
	"GET /console/static/console.js":      "public",
	"GET /console/static/verify.js":       "public",
	"GET /console/static/policy.js":       "public",
	"GET /console/static/favicon.svg":     "public",
	"GET /console/sign-in":                "public",
	"POST /console/sign-in":               "public",
	"GET /console/oidc/start":             "public",
	"GET /console/oidc/callback":          "public",
	"POST /console/sign-out":              "session",
	"GET /console":                        "session",
	"GET /console/desk":                   "session",
	"GET /console/desk/events":            "session",
	"POST /console/desk/:id/decide":       "session",
	"GET /console/sessions":               "session",
	"GET /console/sessions/:id":           "session",
	"GET /console/sessions/:id/evidence":  "session",
	"GET /console/agents":                 "session",
	"GET /console/agents/:id":             "session",
	"POST /console/agents/:id/settings":   "session",
	"GET /console/agents/:id/reset":       "session",
	"POST /console/agents/:id/reset":      "session",
	"POST /console/halts":                 "session",
	"GET /console/policies":               "session",
	"GET /console/policies/new":           "session",
	"GET /console/policies/:id/edit":      "session",
	"POST /console/policies/validate":     "session",
	"POST /console/policies/test":         "session",
	"POST /console/policies/replay":       "session",
	"POST /console/policies":              "session",
	"GET /console/verdicts":               "session",
	"POST /console/verdicts/:id/status":   "session",
	"GET /console/audit":                  "session",
	"GET /console/keys":                   "session",
	"POST /console/keys":                  "session",
	"GET /console/keys/:id/revoke":        "session",
	"POST /console/keys/:id/bind":         "session",
	"POST /console/keys/:id/revoke":       "session",
	"GET /console/members":                "session",
	"POST /console/members/invite":        "session",
	"POST /console/members/role":          "session",
	"POST /console/members/groups":        "session",
	"GET /console/members/:email/remove":  "session",
	"POST /console/members/:email/remove": "session",
	"GET /console/channels":               "session",
	"GET /console/channels/:id":           "session",
}

// checkConsoleRoutes checks that every /console route is in
// consoleRoutes and that the session ones refuse a caller with only an API
// key (owner).
func checkConsoleRoutes(t *testing.T, e *env, registered []string) {
	t.Helper()
	noRedirect := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, key := range registered {
		access, ok := consoleRoutes[key]
		if !ok {
			t.Errorf("console route %s is not in consoleRoutes (add it there and to docs/console.md)", key)
			continue
		}
		if access != "session" {
			continue
		}
		method, path, _ := strings.Cut(key, " ")
		path = regexp.MustCompile(`:[A-Za-z]+`).ReplaceAllString(path, "matrix-probe")
		req, _ := http.NewRequest(method, e.base+path, strings.NewReader("csrf=x"))
		req.Header.Set("Authorization", "Bearer "+e.owner)
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		if strings.HasSuffix(path, "/events") {
			req.Header.Set("Accept", "text/event-stream") // as EventSource sends
		}
		res, err := noRedirect.Do(req)
		if err != nil {
			t.Fatalf("%s: %v", key, err)
		}
		_ = res.Body.Close()
		switch {
		case method == http.MethodGet && key != "GET /console/desk/events":
			if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/console/sign-in") {
				t.Errorf("%s with an API key and no session: HTTP %d to %q, want 303 to the sign-in page", key, res.StatusCode, res.Header.Get("Location"))
			}
		case res.StatusCode != http.StatusUnauthorized:
			t.Errorf("%s with an API key and no session: HTTP %d, want 401", key, res.StatusCode)
		}
		if csp := res.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("%s: no CSP (%q)", key, csp)
		}
	}
	for key := range consoleRoutes {
		if !slices.Contains(registered, key) {
			t.Errorf("consoleRoutes lists %s, which is not registered", key)
		}
	}
}

// publicRoutes need no key at all.
var publicRoutes = regexp.MustCompile(`^(GET|HEAD) /(healthz|readyz|livez|metrics|openapi\.json$)`)

// agentKeyStatus is, for every route an agent key gets past
// authorisation on, the exact status of the matrix probe (body {}, every
// path parameter "matrix-probe") for a key bound to agent "matrix-probe"
// and for an unbound key (one created before keys were bound); 403 means
// refused. Every route missing here must refuse both with 403. It is
// spelled out rather than derived from the grants, so that widening what
// an agent key may do shows up here.
var agentKeyStatus = map[string][2]int{
	"POST /v1/events":       {400, 400}, // admitted; {} lacks eventId
	"POST /v1/events/batch": {400, 400}, // admitted; {} is an empty batch
	"POST /v1/traces":       {200, 200}, // admitted; {} is an OTLP export of nothing
	"GET /v1/agents":        {200, 200},
	"GET /v1/agents/:id":    {200, 200},
	// Registering itself: matrix-probe exists, so 409; unbound: refused.
	"POST /v1/agents": {409, 403},
	// {} declares nothing: a narrowing, which a bound key may make.
	"POST /v1/agents/:id/manifest": {200, 403},
	"POST /v1/decisions.evaluate":  {400, 403}, // {} lacks the action
	"POST /v1/policies/check":      {200, 403}, // attributed to matrix-probe
	"POST /v1/verdicts":            {400, 403}, // {} lacks tool and target
	"GET /v1/decisions/:id":        {404, 403},
	// {} lacks the arguments.
	"POST /v1/decisions/:id/redeem": {400, 403},
	"GET /v1/mcp/pins":              {400, 403}, // admitted; no server named
	"POST /v1/mcp/pins":             {400, 403}, // admitted; {} lacks decisionId
}

// TestRoleMatrix sends every registered route with a key of every role,
// and with an agent key bound to an agent and one not bound, and checks
// that exactly the callers the matrix admits get past authorisation (any
// status but 401/403), that the others get 403 in the envelope, that
// agent keys get exactly agentKeyStatus, and that no route is missing
// from the matrix.
func TestRoleMatrix(t *testing.T) {
	e := newEnv(t)
	e.httpc = stacktest.ContractClient(t) // every answer also checked against the OpenAPI document
	type caller struct {
		name string
		key  string
		p    auth.Principal
	}
	var callers []caller
	for _, r := range auth.Roles {
		callers = append(callers, caller{string(r), e.key("matrix", r), auth.Principal{Role: r}})
	}
	// The role's agent key above is unbound; add a bound one. Bound to the
	// probe's path id, a route's own-agent check passes, so what is tested
	// here is the permission; TestAgentKeys tests the ownership checks.
	bound := auth.Principal{Role: auth.RoleAgent, Agents: []string{"matrix-probe"}}
	callers = append(callers, caller{"agent (bound)", e.key("matrix", auth.RoleAgent, "matrix-probe"), bound})
	callers[slices.IndexFunc(callers, func(c caller) bool { return c.name == string(auth.RoleAgent) })].name = "agent (unbound)"
	owner := callers[0].key
	expect(t, e.post(owner, "/v1/agents", map[string]any{"agentId": "matrix-probe"}), 201, "register the probe agent")
	var routes, console []string
	for _, r := range e.st.Echo.Routes() {
		key := r.Method + " " + r.Path
		if (r.Path == "/console" || strings.HasPrefix(r.Path, "/console/")) && r.Method != "echo_route_not_found" {
			if !slices.Contains(console, key) {
				console = append(console, key)
			}
			continue
		}
		if !strings.HasPrefix(r.Path, "/v1/") || slices.Contains(routes, key) || strings.HasSuffix(r.Path, "/*") || r.Method == "echo_route_not_found" {
			if !strings.HasPrefix(r.Path, "/v1/") && !publicRoutes.MatchString(key) && r.Method != "echo_route_not_found" && !strings.HasSuffix(r.Path, "/*") {
				t.Errorf("route %s is neither under /v1 nor public", key)
			}
			continue
		}
		routes = append(routes, key)
	}
	slices.Sort(routes)
	checkConsoleRoutes(t, e, console)
	for _, route := range routes {
		perms, ok := routePermissions[route]
		if !ok {
			t.Errorf("route %s is not in the role matrix (add it here and to docs/security.md)", route)
			continue
		}
		method, path, _ := strings.Cut(route, " ")
		path = regexp.MustCompile(`:[A-Za-z]+`).ReplaceAllString(path, "matrix-probe")
		for _, cl := range callers {
			allowed := slices.ContainsFunc(perms, cl.p.Allows)
			var body any
			if method == http.MethodPost || method == http.MethodPatch || method == http.MethodPut {
				body = map[string]any{}
			}
			r := e.do(req{method: method, path: path, key: cl.key, body: body})
			switch {
			case r.status == http.StatusUnauthorized:
				t.Errorf("%s as %s: 401 %s", route, cl.name, r.body)
			case allowed && r.status == http.StatusForbidden:
				t.Errorf("%s as %s: refused, the matrix admits it: %s", route, cl.name, r.body)
			case !allowed && r.status != http.StatusForbidden:
				t.Errorf("%s as %s: HTTP %d, the matrix refuses it", route, cl.name, r.status)
			case !allowed && route == "POST /v1/traces":
				// OTLP/HTTP answers errors with a google.rpc.Status
				// (docs/otel.md), not the envelope.
				otlpStatus(t, r, http.StatusForbidden, ctJSON, "")
			case !allowed:
				checkEnvelope(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", nil)
			}
			if cl.p.Role != auth.RoleAgent {
				continue
			}
			want, ok := agentKeyStatus[route]
			if !ok {
				want = [2]int{http.StatusForbidden, http.StatusForbidden}
			}
			w := want[0]
			if len(cl.p.Agents) == 0 {
				w = want[1]
			}
			if r.status != w {
				t.Errorf("%s as %s: HTTP %d, want %d: %s", route, cl.name, r.status, w, r.body)
			}
		}
	}
	for route := range agentKeyStatus {
		if !slices.Contains(routes, route) {
			t.Errorf("agentKeyStatus lists %s, which is not registered", route)
		}
	}
	for route := range routePermissions {
		if !slices.Contains(routes, route) {
			t.Errorf("the matrix lists %s, which is not registered", route)
		}
	}
}

// foreignIDs names, for each resource a route's :id can point at, an id
// that exists in tenant "acme".
type foreignIDs map[string]string

// foreignRoutes maps every route with a path parameter to the resource its
// parameter names; TestForeignTenantRoutes fails for a route missing here.
var foreignRoutes = map[string]string{
	"GET /v1/sessions/:id":                         "session",
	"GET /v1/sessions/:id/export.json":             "session",
	"GET /v1/agents/:id":                           "agent",
	"PATCH /v1/agents/:id":                         "agent",
	"GET /v1/agents/:id/sessions":                  "agent",
	"POST /v1/agents/:id/manifest":                 "agent",
	"POST /v1/agents/:id/settings":                 "agent",
	"GET /v1/policies/:id":                         "policy",
	"PATCH /v1/policies/:id":                       "policy",
	"DELETE /v1/policies/:id":                      "policy",
	"POST /v1/policies/:id/apply":                  "policy",
	"GET /v1/decisions/:id":                        "decision",
	"GET /v1/verdicts/:id":                         "decision",
	"POST /v1/verdicts/:id/status":                 "decision",
	"POST /v1/verdicts/:id/learn":                  "decision",
	"GET /v1/guardian/pending-actions/:id":         "approval",
	"POST /v1/guardian/pending-actions/:id/decide": "approval",
	"POST /v1/decisions/:id/redeem":                "decision",
	"DELETE /v1/keys/:id":                          "key",
	"POST /v1/keys/:id/bind":                       "key",
	"DELETE /v1/members/:email":                    "member",
	"POST /v1/agents/:id/reset":                    "agent",
	"GET /v1/sessions/:id/risk":                    "session",
	"GET /v1/sessions/:id/evidence":                "session",
	"GET /v1/lineage/:id/verify":                   "decision",

	"GET /v1/notification-channels/:id":                               "channel",
	"PATCH /v1/notification-channels/:id":                             "channel",
	"DELETE /v1/notification-channels/:id":                            "channel",
	"POST /v1/notification-channels/:id/rotate-secret":                "channel",
	"POST /v1/notification-channels/:id/test":                         "channel",
	"GET /v1/notification-channels/:id/deliveries":                    "channel",
	"GET /v1/notification-channels/:id/dead-letters":                  "channel",
	"POST /v1/notification-channels/:id/deliveries/:deliveryId/retry": "channel",
	"GET /v1/webhooks/:id":                                            "channel",
	"DELETE /v1/webhooks/:id":                                         "channel",
	"DELETE /v1/halts/:id":                                            "halt",
	"GET /v1/budgets/:id":                                             "budget",
	"DELETE /v1/budgets/:id":                                          "budget",
}

// foreignBodies are valid request bodies, so that only the tenant check
// can stop the request.
var foreignBodies = map[string]any{
	"PATCH /v1/agents/:id":                         map[string]any{"description": "hijacked"},
	"POST /v1/agents/:id/manifest":                 map[string]any{"tools": []string{"x"}},
	"POST /v1/agents/:id/settings":                 map[string]any{"paused": true},
	"PATCH /v1/policies/:id":                       map[string]any{"name": "hijacked"},
	"POST /v1/verdicts/:id/status":                 map[string]any{"status": "false_positive"},
	"POST /v1/guardian/pending-actions/:id/decide": map[string]any{"decision": "approve"},
	"POST /v1/decisions/:id/redeem":                map[string]any{"arguments": map[string]any{}},
}

// TestForeignTenantRoutes creates one of everything in tenant acme, each
// carrying a marker, and sends every route that takes an id with globex's
// owner key. No answer may carry acme's marker, and acme's data must be as
// it was. (Ids are per tenant: a route that declares an agent creates
// globex's own "iso-agent", which is not a leak, so 404 is not required.)
func TestForeignTenantRoutes(t *testing.T) {
	e := newEnv(t)
	e.httpc = stacktest.ContractClient(t) // every answer also checked against the OpenAPI document
	acme, globex := e.key("acme", auth.RoleOwner), e.key("globex", auth.RoleOwner)
	ids := foreignIDs{"agent": "iso-agent", "session": "iso-session"}
	expect(t, e.post(acme, "/v1/agents", map[string]any{"agentId": ids["agent"], "name": "acme-marker"}), 201, "agent")
	expect(t, e.post(acme, "/v1/agents/"+ids["agent"]+"/manifest", map[string]any{"tools": []string{"acme-marker"}}), 200, "manifest")
	expect(t, e.post(acme, "/v1/events", with(ev(ids["agent"], ids["session"], time.Now()), "payload", map[string]any{"note": "acme-marker"})), 202, "event")
	e.waitSession(acme, ids["session"], 1)
	r := e.do(req{method: http.MethodPost, path: "/v1/policies", key: acme, body: "id: iso\nname: acme-marker\nrules:\n  - id: gate\n    when: action.tool == \"refund\"\n    outcome: require_approval\n    approvalTimeout: 10m\n", header: map[string]string{"Content-Type": "application/yaml"}})
	expect(t, r, 201, "policy")
	ids["policy"] = "iso"
	var d struct {
		DecisionID string `json:"decisionId"`
	}
	eventually(t, 10*time.Second, func() (bool, string) {
		r := e.post(acme, "/v1/decisions.evaluate", map[string]any{"agentId": ids["agent"], "action": "refund"})
		r.decode(t, &d)
		return r.status == 200 && strings.Contains(string(r.body), "require_approval"), r.String()
	})
	ids["decision"] = d.DecisionID
	eventually(t, 10*time.Second, func() (bool, string) {
		var p page[struct {
			ID         string `json:"id"`
			DecisionID string `json:"decisionId"`
		}]
		e.get(acme, "/v1/guardian/pending-actions").decode(t, &p)
		for _, a := range p.Data {
			if a.DecisionID == d.DecisionID {
				ids["approval"] = a.ID
			}
		}
		return ids["approval"] != "", "no pending action yet"
	})
	var k keyDoc
	e.post(acme, "/v1/keys", map[string]any{"name": "iso", "role": "viewer"}).decode(t, &k)
	ids["key"] = k.ID
	expect(t, e.post(acme, "/v1/members/invite", map[string]any{"email": "iso@example.com", "role": "viewer", "name": "acme-marker"}), 201, "member")
	ids["member"] = "iso@example.com"
	addForeignIDs(t, e, acme, ids)

	for _, rt := range e.st.Echo.Routes() {
		route := rt.Method + " " + rt.Path
		if !strings.HasPrefix(rt.Path, "/v1/") || !strings.Contains(rt.Path, ":") {
			continue
		}
		res, ok := foreignRoutes[route]
		if !ok {
			t.Errorf("route %s takes an id but has no foreign-tenant case", route)
			continue
		}
		id, ok := ids[res]
		if !ok {
			t.Errorf("route %s: no %s id was created", route, res)
			continue
		}
		path := regexp.MustCompile(`:[A-Za-z]+`).ReplaceAllString(rt.Path, id)
		body, ok := foreignBodies[route]
		if !ok && rt.Method != http.MethodGet && rt.Method != http.MethodDelete {
			body = map[string]any{}
		}
		r := e.do(req{method: rt.Method, path: path, key: globex, body: body})
		if strings.Contains(string(r.body), "acme-marker") {
			t.Errorf("%s with acme's %s id leaks acme's data: HTTP %d %s", route, res, r.status, r.body)
		}
		if r.status/100 == 5 {
			t.Errorf("%s with acme's %s id: HTTP %d %s", route, res, r.status, r.body)
		}
	}
	// The collection form of a webhook delete names its id in the query.
	if r := e.do(req{method: http.MethodDelete, path: "/v1/webhooks?id=" + ids["channel"], key: globex}); r.status/100 == 2 || r.status/100 == 5 || strings.Contains(string(r.body), "acme-marker") {
		t.Errorf("globex DELETE /v1/webhooks?id= on acme's channel: %s", r)
	}
	// Nothing of acme's changed.
	if r := e.get(acme, "/v1/notification-channels/"+ids["channel"]); r.status != 200 {
		t.Errorf("globex removed acme's channel: %s", r)
	}
	if r := e.get(acme, "/v1/halts"); !strings.Contains(string(r.body), ids["halt"]) || strings.Contains(string(r.body), `"active":false`) {
		t.Errorf("globex lifted acme's halt: %s", r)
	}
	if r := e.get(acme, "/v1/budgets/"+ids["budget"]); !strings.Contains(string(r.body), `"active":true`) {
		t.Errorf("globex deleted acme's budget: %s", r)
	}
	r = e.get(acme, "/v1/agents/"+ids["agent"])
	if strings.Contains(string(r.body), "hijacked") || strings.Contains(string(r.body), `"paused":true`) || !strings.Contains(string(r.body), `"tools":["acme-marker"]`) {
		t.Errorf("globex changed acme's agent: %s", r.body)
	}
	expect(t, e.get(k.Key, "/v1/agents"), 200, "acme's key still works")
	if r := e.get(acme, "/v1/policies/iso"); r.status != 200 || strings.Contains(string(r.body), "hijacked") || strings.Contains(string(r.body), "archived") {
		t.Errorf("globex changed acme's policy: %s", r)
	}
	if r := e.get(acme, "/v1/guardian/pending-actions/"+ids["approval"]); !strings.Contains(string(r.body), `"status":"pending"`) {
		t.Errorf("globex decided acme's pending action: %s", r)
	}
	if r := e.get(acme, "/v1/members"); !strings.Contains(string(r.body), "iso@example.com") {
		t.Errorf("globex removed acme's member: %s", r)
	}
	if r := e.get(acme, "/v1/decisions/"+ids["decision"]); strings.Contains(string(r.body), "false_positive") {
		t.Errorf("globex triaged acme's decision: %s", r)
	}
}

// addForeignIDs creates acme's resources of the other services.
func addForeignIDs(t *testing.T, e *env, acme string, ids foreignIDs) {
	var ch struct {
		ID string `json:"id"`
	}
	r := e.post(acme, "/v1/notification-channels", map[string]any{"name": "acme-marker", "url": "https://93.184.216.34/acme-marker"})
	expect(t, r, 201, "notification channel")
	r.decode(t, &ch)
	ids["channel"] = ch.ID
	// A halt on an agent of acme's that nothing else in the sweep uses, so
	// the sweep's other checks still see acme's agent unhalted.
	var h struct {
		ID string `json:"id"`
	}
	r = e.post(acme, "/v1/halts", map[string]any{"scope": "agent", "agentId": "acme-halted", "reason": "acme-marker"})
	expect(t, r, 201, "halt")
	r.decode(t, &h)
	ids["halt"] = h.ID
	// A budget on an agent nothing else in the sweep uses, which carries
	// the marker, so a leak of it shows.
	r = e.post(acme, "/v1/budgets", map[string]any{"name": "acme_budget", "scope": "agent", "agentId": "acme-marker", "metric": "actions", "window": "1h", "limit": 5, "outcome": "block"})
	expect(t, r, 201, "budget")
	r.decode(t, &h)
	ids["budget"] = h.ID
}

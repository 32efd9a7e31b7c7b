package main

import (
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/auth"
)

// routePermissions is the documented role × route matrix (docs/security.md):
// each route and the permissions any one of which admits a caller.
var routePermissions = map[string][]auth.Permission{
	"POST /v1/events":       {auth.EventsWrite},
	"POST /v1/events/batch": {auth.EventsWrite},

	"GET /v1/sessions":                             {auth.SessionsRead},
	"GET /v1/sessions/:id":                         {auth.SessionsRead},
	"GET /v1/sessions/:id/export.json":             {auth.SessionsRead},
	"POST /v1/agents":                              {auth.AgentsWrite},
	"GET /v1/agents":                               {auth.AgentsRead},
	"GET /v1/agents/:id":                           {auth.AgentsRead},
	"PATCH /v1/agents/:id":                         {auth.AgentsWrite},
	"GET /v1/agents/:id/sessions":                  {auth.SessionsRead}, // and agents:read
	"POST /v1/agents/:id/manifest":                 {auth.AgentsWrite},
	"POST /v1/agents/:id/settings":                 {auth.AgentsWrite},
	"POST /v1/policies":                            {auth.PoliciesWrite},
	"GET /v1/policies":                             {auth.PoliciesRead},
	"POST /v1/policies/check":                      {auth.DecisionsEvaluate},
	"GET /v1/policies/:id":                         {auth.PoliciesRead},
	"PATCH /v1/policies/:id":                       {auth.PoliciesWrite},
	"DELETE /v1/policies/:id":                      {auth.PoliciesWrite},
	"GET /v1/org-policy":                           {auth.PoliciesRead},
	"POST /v1/org-policy":                          {auth.PoliciesWrite},
	"POST /v1/decisions.evaluate":                  {auth.DecisionsEvaluate},
	"GET /v1/decisions/:id":                        {auth.VerdictsRead, auth.DecisionsEvaluate},
	"POST /v1/verdicts":                            {auth.DecisionsEvaluate},
	"GET /v1/verdicts":                             {auth.VerdictsRead},
	"POST /v1/verdicts/:id/status":                 {auth.VerdictsTriage},
	"POST /v1/verdicts/:id/learn":                  {auth.VerdictsTriage},
	"GET /v1/guardian/pending-actions":             {auth.ApprovalsRead},
	"GET /v1/guardian/pending-actions/:id":         {auth.ApprovalsRead},
	"POST /v1/guardian/pending-actions/:id/decide": {auth.ApprovalsDecide},

	"GET /v1/keys":                  {auth.KeysManage},
	"POST /v1/keys":                 {auth.KeysManage},
	"DELETE /v1/keys/:id":           {auth.KeysManage},
	"GET /v1/members":               {auth.MembersRead},
	"POST /v1/members/invite":       {auth.MembersManage},
	"POST /v1/members/role":         {auth.MembersManage},
	"GET /v1/settings/rate-limits":  {auth.SettingsRead},
	"POST /v1/settings/rate-limits": {auth.SettingsManage},
	"PUT /v1/settings/rate-limits":  {auth.SettingsManage},
	"GET /v1/audit":                 {auth.AuditRead},
	"GET /v1/audit/export":          {auth.AuditRead},
}

// publicRoutes need no key at all.
var publicRoutes = regexp.MustCompile(`^(GET|HEAD) /(healthz|readyz|livez|metrics)`)

// TestRoleMatrix sends every registered route with a key of every role
// and checks that exactly the roles the matrix admits get past
// authorisation (any status but 401/403), that the others get 403 in the
// envelope, and that no route is missing from the matrix.
func TestRoleMatrix(t *testing.T) {
	e := newEnv(t)
	keys := map[auth.Role]string{}
	for _, r := range auth.Roles {
		keys[r] = e.key("matrix", r)
	}
	var routes []string
	for _, r := range e.st.Echo.Routes() {
		key := r.Method + " " + r.Path
		if !strings.HasPrefix(r.Path, "/v1/") || slices.Contains(routes, key) || strings.HasSuffix(r.Path, "/*") || r.Method == "echo_route_not_found" {
			if !strings.HasPrefix(r.Path, "/v1/") && !publicRoutes.MatchString(key) && r.Method != "echo_route_not_found" && !strings.HasSuffix(r.Path, "/*") {
				t.Errorf("route %s is neither under /v1 nor public", key)
			}
			continue
		}
		routes = append(routes, key)
	}
	slices.Sort(routes)
	for _, route := range routes {
		perms, ok := routePermissions[route]
		if !ok {
			t.Errorf("route %s is not in the role matrix (add it here and to docs/security.md)", route)
			continue
		}
		method, path, _ := strings.Cut(route, " ")
		path = regexp.MustCompile(`:[A-Za-z]+`).ReplaceAllString(path, "matrix-probe")
		for _, role := range auth.Roles {
			allowed := slices.ContainsFunc(perms, role.Allows)
			var body any
			if method == http.MethodPost || method == http.MethodPatch || method == http.MethodPut {
				body = map[string]any{}
			}
			r := e.do(req{method: method, path: path, key: keys[role], body: body})
			switch {
			case r.status == http.StatusUnauthorized:
				t.Errorf("%s as %s: 401 %s", route, role, r.body)
			case allowed && r.status == http.StatusForbidden:
				t.Errorf("%s as %s: refused, the matrix admits it: %s", route, role, r.body)
			case !allowed && r.status != http.StatusForbidden:
				t.Errorf("%s as %s: HTTP %d, the matrix refuses it", route, role, r.status)
			case !allowed:
				checkEnvelope(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", nil)
			}
		}
	}
	for route := range routePermissions {
		if !slices.Contains(routes, route) {
			t.Errorf("the matrix lists %s, which is not registered", route)
		}
	}
}

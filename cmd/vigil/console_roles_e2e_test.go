package main

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
)

// consoleUser is a browser-like HTTP client of the console: a cookie jar,
// no automatic redirects, and the session's CSRF token once signed in.
type consoleUser struct {
	t    *testing.T
	base string
	c    *http.Client
	csrf string
}

var (
	csrfInput = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	bodyCSRF  = regexp.MustCompile(`data-csrf="([^"]+)"`)
)

func newConsoleUser(t *testing.T, base string) *consoleUser {
	jar, _ := cookiejar.New(nil)
	return &consoleUser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// send sends a request with the console's Origin and returns status,
// Location and body.
func (u *consoleUser) send(method, path string, form url.Values, origin string) (int, string, string) {
	u.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u.base+path, body)
	if err != nil {
		u.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if origin != "" {
		req.Header.Set("Origin", origin)
	}
	res, err := u.c.Do(req)
	if err != nil {
		u.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), string(b)
}

// signIn signs in with key and returns the status of the sign-in post.
func (u *consoleUser) signIn(key string) (int, string) {
	u.t.Helper()
	_, _, page := u.send(http.MethodGet, "/console/sign-in", nil, "")
	m := csrfInput.FindStringSubmatch(page)
	if m == nil {
		u.t.Fatalf("no CSRF token on the sign-in page:\n%s", page)
	}
	status, _, body := u.send(http.MethodPost, "/console/sign-in", url.Values{"csrf": {m[1]}, "key": {key}, "next": {"/console/desk"}}, u.base)
	if status == http.StatusSeeOther {
		_, _, desk := u.send(http.MethodGet, "/console/desk", nil, "")
		if m := bodyCSRF.FindStringSubmatch(desk); m != nil {
			u.csrf = m[1]
		}
	}
	return status, body
}

// TestConsoleRoles checks, over plain HTTP, that the console applies the
// API's roles and tenant isolation (it dispatches to the API with the
// signed-in credential), refuses forms without the session's CSRF token
// or from another origin, refuses agent keys, and ends a session whose
// key was revoked.
func TestConsoleRoles(t *testing.T) {
	e := newEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	e.register("default", "refund-bot")
	agentKey := e.key("default", auth.RoleAgent, "refund-bot")
	agent := polClient{t: t, base: e.base, key: agentKey}
	owner.createPolicy(consolePolicy)
	d := agent.evaluate(map[string]any{"agentId": "refund-bot", "action": "refund", "context": map[string]any{"amount": 5000}})
	pa := pendingFor(t, owner, d.DecisionID)
	decide := "/console/desk/" + pa.ID + "/decide"
	stillPending := func(what string) {
		t.Helper()
		if got := owner.get("/v1/guardian/pending-actions/"+pa.ID).want(t, http.StatusOK, "pending action").object(t); got["status"] != "pending" {
			t.Fatalf("%s: the action is %v", what, got["status"])
		}
	}

	// The editor's validate route compiles and stores nothing.
	doc := map[string]any{"id": "validate-only", "name": "v", "rules": []any{map[string]any{"id": "r", "when": `action.tool == "x"`, "outcome": "block"}}}
	if got := owner.post("/v1/policies/validate", doc).want(t, http.StatusOK, "validate").object(t); got["valid"] != true || got["id"] != "validate-only" {
		t.Fatalf("validate: %v", got)
	}
	owner.get("/v1/policies/validate-only").want(t, http.StatusNotFound, "a validated policy is not stored")
	doc["rules"] = []any{map[string]any{"id": "r", "when": `action.tool ==`, "outcome": "block"}}
	polError(t, owner.post("/v1/policies/validate", doc), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "validate a broken policy")

	// An agent key is an agent's identity: no console session.
	if status, body := newConsoleUser(t, e.base).signIn(agentKey); status != http.StatusForbidden || !strings.Contains(body, "Agent keys cannot sign in") {
		t.Fatalf("agent key sign-in: %d %s", status, body)
	}
	// A sign-in post without the form's token is refused.
	if status, _, _ := newConsoleUser(t, e.base).send(http.MethodPost, "/console/sign-in", url.Values{"key": {e.owner}}, e.base); status != http.StatusForbidden {
		t.Fatalf("sign-in without its CSRF token: %d", status)
	}

	// A viewer sees the Desk but cannot decide: the API's 403, its words.
	viewer := newConsoleUser(t, e.base)
	if status, body := viewer.signIn(e.key("default", auth.RoleViewer)); status != http.StatusSeeOther {
		t.Fatalf("viewer sign-in: %d %s", status, body)
	}
	if status, _, body := viewer.send(http.MethodGet, "/console/desk", nil, ""); status != http.StatusOK || !strings.Contains(body, "card-"+pa.ID) {
		t.Fatalf("viewer's desk: %d (the pending action should be listed)", status)
	}
	status, _, body := viewer.send(http.MethodPost, decide, url.Values{"csrf": {viewer.csrf}, "decision": {"approve"}}, e.base)
	if status != http.StatusForbidden || !strings.Contains(body, "role viewer may not approvals:decide") {
		t.Fatalf("viewer approves: %d %s", status, body)
	}
	stillPending("viewer")
	consoleFormRoles(t, e, owner, viewer)

	// An owner's session: a form without the CSRF token, with another
	// session's token, or from another origin is refused.
	own := newConsoleUser(t, e.base)
	if status, body := own.signIn(e.owner); status != http.StatusSeeOther {
		t.Fatalf("owner sign-in: %d %s", status, body)
	}
	for _, c := range []struct {
		what   string
		form   url.Values
		origin string
	}{
		{"no token", url.Values{"decision": {"approve"}}, e.base},
		{"the viewer's token", url.Values{"csrf": {viewer.csrf}, "decision": {"approve"}}, e.base},
		{"another origin", url.Values{"csrf": {own.csrf}, "decision": {"approve"}}, "https://evil.example"},
		{"an opaque origin", url.Values{"csrf": {own.csrf}, "decision": {"approve"}}, "null"},
	} {
		if status, _, body := own.send(http.MethodPost, decide, c.form, c.origin); status != http.StatusForbidden || !strings.Contains(body, "CSRF") {
			t.Errorf("%s: %d %s", c.what, status, body)
		}
	}
	stillPending("refused forms")

	// Another tenant's owner sees nothing of this tenant and cannot decide.
	globex := newConsoleUser(t, e.base)
	if status, body := globex.signIn(e.key("globex", auth.RoleOwner)); status != http.StatusSeeOther {
		t.Fatalf("globex sign-in: %d %s", status, body)
	}
	if _, _, body := globex.send(http.MethodGet, "/console/desk", nil, ""); strings.Contains(body, pa.ID) {
		t.Fatal("another tenant's Desk shows the action")
	}
	if status, _, _ := globex.send(http.MethodPost, decide, url.Values{"csrf": {globex.csrf}, "decision": {"approve"}}, e.base); status != http.StatusNotFound {
		t.Fatalf("another tenant decides: %d", status)
	}
	stillPending("another tenant")

	// The owner decides with a good form.
	if status, loc, body := own.send(http.MethodPost, decide, url.Values{"csrf": {own.csrf}, "decision": {"reject"}, "comment": {"no"}}, e.base); status != http.StatusSeeOther || !strings.Contains(loc, "rejected") {
		t.Fatalf("owner rejects: %d %s %s", status, loc, body)
	}

	// Revoking the key ends the session at its next request.
	vk := e.key("default", auth.RoleMember)
	member := newConsoleUser(t, e.base)
	if status, _ := member.signIn(vk); status != http.StatusSeeOther {
		t.Fatal("member sign-in")
	}
	var keys struct {
		Data []struct {
			ID   string `json:"id"`
			Role string `json:"role"`
		} `json:"data"`
	}
	owner.get("/v1/keys?limit=100").want(t, http.StatusOK, "keys").decode(t, &keys)
	for _, k := range keys.Data {
		if k.Role == "member" {
			owner.do(http.MethodDelete, "/v1/keys/"+k.ID, nil).want(t, http.StatusOK, "revoke")
		}
	}
	polEventually(t, 10*time.Second, "the revoked key's session ends", func() (bool, string) {
		status, loc, _ := member.send(http.MethodGet, "/console/sessions", nil, "")
		if status != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/sign-in") {
			return false, loc
		}
		// And it stays ended.
		status, loc, _ = member.send(http.MethodGet, "/console/desk", nil, "")
		return status == http.StatusSeeOther && strings.HasPrefix(loc, "/console/sign-in"), loc
	})
}

// consoleFormRoles checks the keys and members forms as each role sees
// them: a viewer or member gets no form and a forged post is the API's 403
// in its words; an admin is offered no owner role and cannot create,
// invite or revoke one; a form without the session's token is refused; a
// created key's secret is on its answer page only (no-store) and never
// again; another tenant's owner cannot reach this tenant's keys or members.
func consoleFormRoles(t *testing.T, e *env, owner polClient, viewer *consoleUser) {
	t.Helper()
	var keys struct {
		Data []struct{ ID, Role string } `json:"data"`
	}
	owner.get("/v1/keys").want(t, http.StatusOK, "keys").decode(t, &keys)
	ownerKey := ""
	for _, k := range keys.Data {
		if k.Role == "owner" {
			ownerKey = k.ID
		}
	}
	owner.post("/v1/members/invite", map[string]any{"email": "ada@example.com", "role": "member"}).want(t, http.StatusCreated, "invite ada")
	refusedPost := func(who string, u *consoleUser, path string, form url.Values, status int, want string) {
		t.Helper()
		form.Set("csrf", u.csrf)
		if got, _, body := u.send(http.MethodPost, path, form, e.base); got != status || !strings.Contains(body, want) {
			t.Errorf("%s POST %s: %d, want %d with %q:\n%s", who, path, got, status, want, body)
		}
	}
	noForms := func(who string, u *consoleUser, path string, want ...string) {
		t.Helper()
		status, _, page := u.send(http.MethodGet, path, nil, "")
		if status != http.StatusOK {
			t.Errorf("%s GET %s: %d", who, path, status)
		}
		for _, form := range []string{`id="create-key"`, `id="invite-member"`, "Change role", "Set groups", ">Bind<", "Revoke…", "Remove…"} {
			if strings.Contains(page, form) {
				t.Errorf("%s sees %s on %s", who, form, path)
			}
		}
		for _, w := range want {
			if !strings.Contains(page, w) {
				t.Errorf("%s's %s lacks %q", who, path, w)
			}
		}
	}

	// A viewer and a member: lists (as far as their role reads), no forms,
	// forged posts refused by the API.
	member := newConsoleUser(t, e.base)
	if status, body := member.signIn(e.key("default", auth.RoleMember)); status != http.StatusSeeOther {
		t.Fatalf("member sign-in: %d %s", status, body)
	}
	for _, c := range []struct {
		who string
		u   *consoleUser
	}{{"viewer", viewer}, {"member", member}} {
		noForms(c.who, c.u, "/console/keys", "role "+c.who+" may not keys:manage")
		noForms(c.who, c.u, "/console/members", "ada@example.com")
		denied := "role " + c.who + " may not "
		refusedPost(c.who, c.u, "/console/keys", url.Values{"name": {"forged"}, "role": {"viewer"}}, http.StatusForbidden, denied+"keys:manage")
		refusedPost(c.who, c.u, "/console/keys/"+ownerKey+"/revoke", url.Values{}, http.StatusForbidden, denied+"keys:manage")
		refusedPost(c.who, c.u, "/console/keys/"+ownerKey+"/bind", url.Values{"agents": {"refund-bot"}}, http.StatusForbidden, denied+"keys:manage")
		refusedPost(c.who, c.u, "/console/members/invite", url.Values{"email": {"eve@example.com"}, "role": {"viewer"}}, http.StatusForbidden, denied+"members:manage")
		refusedPost(c.who, c.u, "/console/members/role", url.Values{"email": {"ada@example.com"}, "role": {"admin"}}, http.StatusForbidden, denied+"members:manage")
		refusedPost(c.who, c.u, "/console/members/ada@example.com/remove", url.Values{}, http.StatusForbidden, denied+"members:manage")
		refusedPost(c.who, c.u, "/console/members/groups", url.Values{"email": {"ada@example.com"}, "groups": {"finance"}}, http.StatusForbidden, denied+"members:manage")
	}

	// An admin: forms without the owner role; owner grants refused.
	admin := newConsoleUser(t, e.base)
	if status, body := admin.signIn(e.key("default", auth.RoleAdmin)); status != http.StatusSeeOther {
		t.Fatalf("admin sign-in: %d %s", status, body)
	}
	for _, path := range []string{"/console/keys", "/console/members"} {
		if _, _, page := admin.send(http.MethodGet, path, nil, ""); !strings.Contains(page, `<option value="admin"`) || strings.Contains(page, `<option value="owner"`) {
			t.Errorf("an admin's %s offers the owner role, or no roles", path)
		}
	}
	refusedPost("admin", admin, "/console/keys", url.Values{"name": {"forged"}, "role": {"owner"}}, http.StatusForbidden, "a admin cannot create owner keys")
	refusedPost("admin", admin, "/console/keys/"+ownerKey+"/revoke", url.Values{}, http.StatusForbidden, "a admin cannot revoke owner keys")
	refusedPost("admin", admin, "/console/members/invite", url.Values{"email": {"eve@example.com"}, "role": {"owner"}}, http.StatusForbidden, "a admin cannot invite owners")
	refusedPost("admin", admin, "/console/members/role", url.Values{"email": {"ada@example.com"}, "role": {"owner"}}, http.StatusForbidden, "a admin cannot change a member to owner")

	// The owner: a form without the session's token is refused; a created
	// key's secret is on the answer only.
	own := newConsoleUser(t, e.base)
	if status, body := own.signIn(e.owner); status != http.StatusSeeOther {
		t.Fatalf("owner sign-in: %d %s", status, body)
	}
	if status, _, body := own.send(http.MethodPost, "/console/keys", url.Values{"name": {"no token"}, "role": {"viewer"}}, e.base); status != http.StatusForbidden || !strings.Contains(body, "CSRF") {
		t.Errorf("create a key without the CSRF token: %d %s", status, body)
	}
	req, _ := http.NewRequest(http.MethodPost, e.base+"/console/keys", strings.NewReader(url.Values{"csrf": {own.csrf}, "name": {"once"}, "role": {"viewer"}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", e.base)
	res, err := own.c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	secret := regexp.MustCompile(`id="new-key" readonly value="(vgl_[^"]+)"`).FindSubmatch(page)
	if res.StatusCode != http.StatusCreated || secret == nil || res.Header.Get("Cache-Control") != "no-store" {
		t.Fatalf("create a key: %d, Cache-Control %q:\n%s", res.StatusCode, res.Header.Get("Cache-Control"), page)
	}
	polClient{t: t, base: e.base, key: string(secret[1])}.get("/v1/sessions").want(t, http.StatusOK, "the key created in the console")
	for _, path := range []string{"/console/keys", "/console/audit"} {
		if _, _, p := own.send(http.MethodGet, path, nil, ""); strings.Contains(p, string(secret[1])) {
			t.Errorf("%s shows the secret again", path)
		}
	}

	// Another tenant's owner cannot reach them.
	globex := newConsoleUser(t, e.base)
	if status, body := globex.signIn(e.key("globex", auth.RoleOwner)); status != http.StatusSeeOther {
		t.Fatalf("globex sign-in: %d %s", status, body)
	}
	if status, _, _ := globex.send(http.MethodGet, "/console/keys/"+ownerKey+"/revoke", nil, ""); status != http.StatusNotFound {
		t.Errorf("another tenant's revoke step: %d", status)
	}
	refusedPost("globex", globex, "/console/keys/"+ownerKey+"/revoke", url.Values{}, http.StatusNotFound, "not found")
	refusedPost("globex", globex, "/console/keys/"+ownerKey+"/bind", url.Values{"agents": {"refund-bot"}}, http.StatusNotFound, "not found")
	refusedPost("globex", globex, "/console/members/role", url.Values{"email": {"ada@example.com"}, "role": {"viewer"}}, http.StatusNotFound, "not found")
	refusedPost("globex", globex, "/console/members/ada@example.com/remove", url.Values{}, http.StatusNotFound, "not found")
	refusedPost("globex", globex, "/console/members/groups", url.Values{"email": {"ada@example.com"}, "groups": {"finance"}}, http.StatusNotFound, "not found")
	owner.get("/v1/sessions").want(t, http.StatusOK, "the owner key after the refusals")
	if m := consoleMembers(t, owner)["ada@example.com"]; m == nil || m["role"] != "member" || m["groups"] != nil {
		t.Errorf("ada after the refusals: %v", m)
	}
}

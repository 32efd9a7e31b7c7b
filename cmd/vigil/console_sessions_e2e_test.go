package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/oidc/oidctest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
)

// sessionCookie is the console session cookie's value in u's jar.
func (u *consoleUser) sessionCookie() string {
	base, _ := url.Parse(u.base + "/console/")
	for _, c := range u.c.Jar.Cookies(base) {
		if c.Name == "vigil_console" {
			return c.Value
		}
	}
	return ""
}

// setSessionCookie replaces the session cookie in u's jar.
func (u *consoleUser) setSessionCookie(v string) {
	base, _ := url.Parse(u.base + "/console/")
	u.c.Jar.SetCookies(base, []*http.Cookie{{Name: "vigil_console", Value: v, Path: "/console"}})
}

// at is the same browser (cookie jar, CSRF token) talking to another
// instance: cookies do not depend on the port.
func (u *consoleUser) at(base string) *consoleUser {
	v := *u
	v.base = base
	return &v
}

// signedIn reports whether GET /console/desk shows a signed-in page
// naming who (and not the sign-in redirect).
func (u *consoleUser) signedIn(who string) bool {
	u.t.Helper()
	status, _, body := u.send(http.MethodGet, "/console/desk", nil, "")
	return status == http.StatusOK && strings.Contains(body, who)
}

// sessionBucket reads every value of the console's session bucket.
func sessionBucket(t *testing.T, s *testStack) map[string][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := s.st.JS.KeyValue(ctx, streams.ConsoleSessionsBucket)
	if err != nil {
		t.Fatalf("the session bucket: %v", err)
	}
	keys, err := kv.Keys(ctx)
	if err != nil {
		t.Fatalf("session keys: %v", err)
	}
	out := map[string][]byte{}
	for _, k := range keys {
		if e, err := kv.Get(ctx, k); err == nil {
			out[k] = e.Value()
		}
	}
	return out
}

func sha256Hex(s string) string { h := sha256.Sum256([]byte(s)); return hex.EncodeToString(h[:]) }

// TestConsoleSessionsShared: console sessions live in a NATS bucket that
// every api instance reads, sealed and keyed by the hash of the session
// id. A sign-in survives a restart of the api; a session started on
// instance A is used on instance B; a sign-out on B is refused by A at
// once; a revoked key ends its session; forged and tampered cookies, and
// another tenant's record moved under one's own key, are refused; nothing
// in the bucket is readable.
func TestConsoleSessionsShared(t *testing.T) {
	db := chtest.New(t)
	dir := t.TempDir()
	seal := bytes.Repeat([]byte{7}, 32)
	withSeal := func(c *api.Config) { c.Judge.SealSecret = seal }
	a := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir, API: withSeal})
	ownerKey := a.st.BootstrapKey
	owner := newConsoleUser(t, a.base)
	if status, body := owner.signIn(ownerKey); status != http.StatusSeeOther {
		t.Fatalf("owner sign-in: %d %s", status, body)
	}
	const who = "· owner · default"
	if !owner.signedIn(who) {
		t.Fatal("not signed in after the sign-in")
	}

	// A restart of the api (the whole stack here) keeps the session.
	a.Stop()
	a = startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir, API: withSeal})
	owner = owner.at(a.base)
	if !owner.signedIn(who) {
		t.Fatal("the restart signed the owner out")
	}

	// Instance B on the same NATS, with the deployment's sealing key.
	cfg := api.DefaultConfig()
	withSeal(&cfg)
	b := startReplica(t, a.st, cfg).base
	onB := owner.at(b)
	if !onB.signedIn(who) {
		t.Fatal("the session started on A is not a session on B")
	}

	// Members and their sessions, for what follows.
	memberKey := a.key("default", auth.RoleMember)
	member := newConsoleUser(t, a.base)
	if status, body := member.signIn(memberKey); status != http.StatusSeeOther {
		t.Fatalf("member sign-in: %d %s", status, body)
	}
	globexKey := a.key("globex", auth.RoleOwner)
	globex := newConsoleUser(t, b)
	if status, body := globex.signIn(globexKey); status != http.StatusSeeOther {
		t.Fatalf("globex sign-in on B: %d %s", status, body)
	}

	// The bucket: keys are hashes of session ids, values sealed.
	stored := sessionBucket(t, a)
	for _, u := range []*consoleUser{owner, member, globex} {
		id := u.sessionCookie()
		if id == "" {
			t.Fatal("no session cookie")
		}
		if _, ok := stored[sha256Hex(id)]; !ok {
			t.Errorf("no record under the SHA-256 of a session id (keys: %d)", len(stored))
		}
		if _, ok := stored[id]; ok {
			t.Error("a session id is a key in clear")
		}
	}
	for k, v := range stored {
		for _, secret := range []string{owner.sessionCookie(), member.sessionCookie(), globex.sessionCookie(), ownerKey, memberKey, globexKey,
			owner.csrf, member.csrf, globex.csrf, "globex", `"owner"`, "Token"} {
			if strings.Contains(k, secret) || bytes.Contains(v, []byte(secret)) {
				t.Errorf("the bucket holds %q in clear under %s", secret, k)
			}
		}
	}

	// A forged cookie and a tampered one are refused.
	forged := newConsoleUser(t, b)
	forged.setSessionCookie("forged-session-id-that-was-never-issued")
	if forged.signedIn("·") {
		t.Error("a forged cookie was accepted")
	}
	id := member.sessionCookie()
	last := byte('A')
	if id[len(id)-1] == 'A' {
		last = 'B'
	}
	forged.setSessionCookie(id[:len(id)-1] + string(last))
	if forged.signedIn("·") {
		t.Error("a tampered cookie was accepted")
	}

	// Another tenant's record moved under the member's key: refused
	// (it does not open there), neither the member's nor globex's.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := a.st.JS.KeyValue(ctx, streams.ConsoleSessionsBucket)
	if err != nil {
		t.Fatal(err)
	}
	victim := newConsoleUser(t, a.base)
	if status, _ := victim.signIn(a.key("default", auth.RoleViewer)); status != http.StatusSeeOther {
		t.Fatal("viewer sign-in")
	}
	if _, err := kv.Put(ctx, sha256Hex(victim.sessionCookie()), stored[sha256Hex(globex.sessionCookie())]); err != nil {
		t.Fatal(err)
	}
	for _, inst := range []string{a.base, b} {
		if status, loc, _ := victim.at(inst).send(http.MethodGet, "/console/desk", nil, ""); status != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/sign-in") {
			t.Errorf("another tenant's record under my key, on %s: %d %s", inst, status, loc)
		}
	}
	if !globex.signedIn("· owner · globex") {
		t.Error("globex's own session ended")
	}

	// Sign-out on B: A refuses the session at once (no waiting).
	if status, loc, body := onB.send(http.MethodPost, "/console/sign-out", url.Values{"csrf": {onB.csrf}}, b); status != http.StatusSeeOther || loc != "/console/sign-in" {
		t.Fatalf("sign-out on B: %d %s %s", status, loc, body)
	}
	gone := newConsoleUser(t, a.base)
	gone.setSessionCookie(owner.sessionCookie()) // the jar dropped it; a thief would not
	if status, loc, _ := gone.send(http.MethodGet, "/console/desk", nil, ""); status != http.StatusSeeOther || !strings.HasPrefix(loc, "/console/sign-in") {
		t.Fatalf("A right after the sign-out on B: %d %s", status, loc)
	}
	if status, _, _ := gone.send(http.MethodPost, "/console/halts", url.Values{"csrf": {owner.csrf}}, a.base); status != http.StatusUnauthorized {
		t.Fatalf("a form on A right after the sign-out on B: %d", status)
	}

	// Revoking the member's key ends the session on both instances.
	ownerAPI := polClient{t: t, base: a.base, key: ownerKey}
	var keys struct {
		Data []struct{ ID, Role string } `json:"data"`
	}
	ownerAPI.get("/v1/keys?limit=100").want(t, http.StatusOK, "keys").decode(t, &keys)
	for _, k := range keys.Data {
		if k.Role == "member" {
			ownerAPI.do(http.MethodDelete, "/v1/keys/"+k.ID, nil).want(t, http.StatusOK, "revoke")
		}
	}
	polEventually(t, 10*time.Second, "the revoked key's session refused on B", func() (bool, string) {
		return !member.at(b).signedIn("· member ·"), "still signed in"
	})
	if _, ok := sessionBucket(t, a)[sha256Hex(id)]; ok {
		t.Error("the revoked key's session is still in the bucket")
	}
	if member.signedIn("· member ·") {
		t.Error("the revoked key's session is still accepted on A")
	}
}

// TestConsoleSSOSessions: a member's session ends when their role
// changes or they are removed; a person in several tenants picks one on
// the sign-in page, with clear errors for a missing, malformed or wrong
// tenant.
func TestConsoleSSOSessions(t *testing.T) {
	e, provider := oidcEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	provider.SignInAs(oidctest.Person{Email: "ada@example.com"})
	ada := newConsoleUser(t, e.base)
	if status, body := ada.ssoCallback(ada.ssoAuthorize()); status != http.StatusOK || !ada.signedIn("ada@example.com · admin · default") {
		t.Fatalf("ada's sign-in: %d\n%s", status, body)
	}
	// A role change ends the session; signing in again gives the new role.
	owner.post("/v1/members/role", map[string]any{"email": "ada@example.com", "role": "viewer"}).want(t, http.StatusOK, "demote ada")
	polEventually(t, 10*time.Second, "ada's admin session ends", func() (bool, string) { return !ada.signedIn("·"), "still signed in" })
	if status, body := ada.ssoCallback(ada.ssoAuthorize()); status != http.StatusOK || !ada.signedIn("ada@example.com · viewer · default") {
		t.Fatalf("ada's sign-in as a viewer: %d\n%s", status, body)
	}
	// Removal ends it too.
	owner.do(http.MethodDelete, "/v1/members/ada@example.com", nil).want(t, http.StatusNoContent, "remove ada")
	polEventually(t, 10*time.Second, "a removed member's session ends", func() (bool, string) { return !ada.signedIn("·"), "still signed in" })

	// vic belongs to default and, invited, to globex.
	globexOwner := polClient{t: t, base: e.base, key: e.key("globex", auth.RoleOwner)}
	globexOwner.post("/v1/members/invite", map[string]any{"email": "vic@example.com", "role": "admin"}).want(t, http.StatusCreated, "invite vic to globex")
	provider.SignInAs(oidctest.Person{Email: "vic@example.com"})
	vic := newConsoleUser(t, e.base)
	start := func(tenant string) (int, string) { return ssoInto(vic, tenant) }
	// The sign-in page asks for the tenant.
	if _, _, page := vic.send(http.MethodGet, "/console/sign-in", nil, ""); !strings.Contains(page, `name="tenant"`) || !strings.Contains(page, `<label for="tenant">`) {
		t.Fatalf("the sign-in page has no tenant field:\n%s", page)
	}
	for _, c := range []struct {
		what, tenant string
		status       int
		want         string
	}{
		{"no tenant, two memberships", "", http.StatusConflict, "member of several tenants: default, globex"},
		{"a malformed tenant", "Globex Corp", http.StatusBadRequest, "is not a tenant id"},
		{"a tenant vic is not in", "initech", http.StatusForbidden, "not a member of tenant initech"},
	} {
		status, body := start(c.tenant)
		if status != c.status || !strings.Contains(body, c.want) || !strings.Contains(body, `id="signin-error"`) || vic.hasSession() {
			t.Errorf("%s: %d session=%v, want %d saying %q:\n%s", c.what, status, vic.hasSession(), c.status, c.want, body)
		}
		if c.tenant == "" && !strings.Contains(body, `<option value="globex">`) {
			t.Errorf("%s: the page does not offer the tenants", c.what)
		}
	}
	if status, body := start("globex"); status != http.StatusOK || !vic.signedIn("vic@example.com · admin · globex") {
		t.Fatalf("vic into globex: %d\n%s", status, body)
	}
	other := newConsoleUser(t, e.base)
	if status, body := ssoInto(other, "default"); status != http.StatusOK || !other.signedIn("vic@example.com · viewer · default") {
		t.Fatalf("vic into default: %d\n%s", status, body)
	}
}

// ssoInto signs u in through the provider asking for tenant; it returns
// the status and body of the start page's refusal or of the callback.
func ssoInto(u *consoleUser, tenant string) (int, string) {
	u.t.Helper()
	status, loc, body := u.send(http.MethodGet, "/console/oidc/start?next=/console/desk&tenant="+url.QueryEscape(tenant), nil, "")
	if status != http.StatusFound {
		return status, body
	}
	_, back, _ := u.getAbs(loc)
	return u.ssoCallback(back)
}

// TestConsoleSessionAcrossInstancesInBrowser: chromium signs in on api
// instance A, keeps working on instance B (another port, the same site:
// the one cookie), signs out on B, and A shows the sign-in page at once.
func TestConsoleSessionAcrossInstancesInBrowser(t *testing.T) {
	db := chtest.New(t)
	seal := bytes.Repeat([]byte{9}, 32)
	a := startStack(t, stacktest.Options{DSN: db.DSN, API: func(c *api.Config) { c.Judge.SealSecret = seal }})
	cfg := api.DefaultConfig()
	cfg.Judge.SealSecret = seal
	b := startReplica(t, a.st, cfg).base
	br := newBrowser(t, a.base)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	br.do(br.ctx, "sign in on A", chromedp.Navigate(a.base+"/console/desk"), chromedp.WaitVisible(css("#key")),
		chromedp.SetValue(css("#key"), a.st.BootstrapKey), chromedp.Submit(css("#key")), chromedp.WaitVisible(css(".who")))
	br.do(br.ctx, "the Desk on B", chromedp.Navigate(b+"/console/agents"), chromedp.WaitVisible(css(".who")))
	if loc := get(br, br.ctx, "location", chromedp.Location()); !strings.HasPrefix(loc, b+"/console/agents") {
		t.Fatalf("on B: %s", loc)
	}
	br.do(br.ctx, "sign out on B", chromedp.Click(css(".who button")), chromedp.WaitVisible(css("#key")))
	br.do(br.ctx, "A after the sign-out on B", chromedp.Navigate(a.base+"/console/desk"), chromedp.WaitVisible(css("#key")))
	br.clean("sessions across instances")
}

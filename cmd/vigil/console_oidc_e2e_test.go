package main

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/oidc/oidctest"
)

// getAbs GETs an absolute URL (the provider's) with the user's cookies.
func (u *consoleUser) getAbs(raw string) (int, string, string) {
	u.t.Helper()
	res, err := u.c.Get(raw)
	if err != nil {
		u.t.Fatalf("GET %s: %v", raw, err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, res.Header.Get("Location"), string(b)
}

// ssoAuthorize starts an OIDC sign-in and lets the provider consent; it
// returns the callback URL the provider sends the browser back to.
func (u *consoleUser) ssoAuthorize() string {
	u.t.Helper()
	status, loc, body := u.send(http.MethodGet, "/console/oidc/start?next=/console/agents", nil, "")
	if status != http.StatusFound {
		u.t.Fatalf("oidc start: %d %s", status, body)
	}
	status, back, body := u.getAbs(loc)
	if status != http.StatusFound {
		u.t.Fatalf("provider authorize: %d %s", status, body)
	}
	return back
}

// ssoCallback delivers the provider's answer to the console; a success
// loads the page it moves on to and keeps the session's CSRF token.
func (u *consoleUser) ssoCallback(back string) (int, string) {
	u.t.Helper()
	status, _, body := u.getAbs(back)
	if status == http.StatusOK && strings.Contains(body, `id="continue"`) {
		_, _, desk := u.send(http.MethodGet, "/console/desk", nil, "")
		if m := bodyCSRF.FindStringSubmatch(desk); m != nil {
			u.csrf = m[1]
		}
	}
	return status, body
}

func (u *consoleUser) hasSession() bool {
	base, _ := url.Parse(u.base + "/console/")
	for _, c := range u.c.Jar.Cookies(base) {
		if c.Name == "vigil_console" && c.Value != "" {
			return true
		}
	}
	return false
}

// oidcEnv is a stack whose members sign in with a test provider on
// "localhost" (another site than the console on 127.0.0.1, as a real
// provider is); ada is an admin, vic a viewer.
func oidcEnv(t *testing.T) (*env, *oidctest.Provider) {
	t.Helper()
	provider := oidctest.New(t, oidctest.Options{Host: "localhost"})
	v, err := oidc.New(oidc.Config{Issuer: provider.Issuer, Audience: provider.ClientID})
	if err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	e := &env{testStack: startStack(t, stacktest.Options{DSN: db.DSN, OIDC: v}), db: db}
	e.owner = e.st.BootstrapKey
	expect(t, e.post(e.owner, "/v1/members/invite", map[string]any{"email": "ada@example.com", "role": "admin"}), 201, "invite ada")
	expect(t, e.post(e.owner, "/v1/members/invite", map[string]any{"email": "vic@example.com", "role": "viewer"}), 201, "invite vic")
	return e, provider
}

// TestConsoleOIDCSignIn: the authorization code flow with PKCE signs a
// member in with their role as the API applies it, and every attack on it
// ends on the sign-in page with a message and no session.
func TestConsoleOIDCSignIn(t *testing.T) {
	e, provider := oidcEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	e.register("default", "refund-bot")
	agent := polClient{t: t, base: e.base, key: e.key("default", auth.RoleAgent, "refund-bot")}
	owner.createPolicy(consolePolicy)
	d := agent.evaluate(map[string]any{"agentId": "refund-bot", "action": "refund", "context": map[string]any{"amount": 5000}})
	pa := pendingFor(t, owner, d.DecisionID)

	// The sign-in page offers the provider.
	_, _, page := newConsoleUser(t, e.base).send(http.MethodGet, "/console/sign-in", nil, "")
	if !strings.Contains(page, "Sign in with localhost") {
		t.Fatalf("the sign-in page does not offer SSO:\n%s", page)
	}

	// ada signs in and lands where she was going, as an admin.
	provider.SignInAs(oidctest.Person{Email: "ada@example.com"})
	ada := newConsoleUser(t, e.base)
	back := ada.ssoAuthorize()
	if status, body := ada.ssoCallback(back); status != http.StatusOK || !strings.Contains(body, `href="/console/agents"`) || !ada.hasSession() {
		t.Fatalf("ada's callback: %d session=%v\n%s", status, ada.hasSession(), body)
	}
	if status, _, body := ada.send(http.MethodGet, "/console/agents", nil, ""); status != http.StatusOK || !strings.Contains(body, "ada@example.com · admin · default") {
		t.Fatalf("ada's console: %d\n%s", status, body)
	}

	// Refusals: each ends on the sign-in page, with its message, and no
	// session.
	refused := func(what string, u *consoleUser, back, want string) {
		t.Helper()
		status, body := u.ssoCallback(back)
		if status < 400 || !strings.Contains(body, want) || !strings.Contains(body, `id="signin-error"`) || u.hasSession() {
			t.Errorf("%s: %d session=%v, want the sign-in page saying %q:\n%s", what, status, u.hasSession(), want, body)
		}
	}
	// A code replayed, even with the flow cookie it was issued under.
	thief := newConsoleUser(t, e.base)
	flowURL, _ := url.Parse(e.base + "/console/oidc/callback")
	back = thief.ssoAuthorize()
	flowCookies := thief.c.Jar.Cookies(flowURL)
	if _, _ = thief.ssoCallback(back); !thief.hasSession() {
		t.Fatal("the first use of a code did not sign in")
	}
	replay := newConsoleUser(t, e.base)
	replay.c.Jar.SetCookies(flowURL, flowCookies)
	exchanges := provider.Exchanges.Load()
	refused("a replayed code", replay, back, "did not accept the sign-in code (invalid_grant)")
	if provider.Exchanges.Load() != exchanges+1 {
		t.Error("the replayed code was not taken to the provider (the refusal must be the provider's)")
	}

	// A callback carrying another browser's state (and code).
	victim, attacker := newConsoleUser(t, e.base), newConsoleUser(t, e.base)
	victim.ssoAuthorize()
	refused("another browser's state", victim, attacker.ssoAuthorize(), "state mismatch")
	// A callback in a browser that started no sign-in.
	refused("no sign-in started", newConsoleUser(t, e.base), newConsoleUser(t, e.base).ssoAuthorize(), "not started in this browser")

	// ID tokens that must not be accepted.
	for _, c := range []struct {
		what, want string
		tamper     func(*jwt.Claims, map[string]any)
	}{
		{"another audience", "not accepted", func(s *jwt.Claims, _ map[string]any) { s.Audience = jwt.Audience{"another-app"} }},
		{"another nonce", "nonce mismatch", func(_ *jwt.Claims, c map[string]any) { c["nonce"] = "not-this-sign-in" }},
		{"no nonce", "nonce mismatch", func(_ *jwt.Claims, c map[string]any) { delete(c, "nonce") }},
		{"expired", "not accepted", func(s *jwt.Claims, _ map[string]any) {
			s.Expiry = jwt.NewNumericDate(time.Now().Add(-5 * time.Minute))
		}},
		{"another issuer", "not accepted", func(s *jwt.Claims, _ map[string]any) { s.Issuer = "https://evil.example" }},
	} {
		provider.Tamper(c.tamper)
		u := newConsoleUser(t, e.base)
		refused(c.what, u, u.ssoAuthorize(), c.want)
	}
	provider.Tamper(nil)

	// The provider says no.
	provider.Deny("access_denied")
	u := newConsoleUser(t, e.base)
	refused("the provider's error", u, u.ssoAuthorize(), "refused the sign-in (access_denied)")
	// Someone who is no member.
	provider.SignInAs(oidctest.Person{Email: "eve@example.com"})
	u = newConsoleUser(t, e.base)
	refused("not a member", u, u.ssoAuthorize(), "not a member")

	// A viewer's session sees the Desk but cannot approve: the API's 403.
	provider.SignInAs(oidctest.Person{Email: "vic@example.com"})
	vic := newConsoleUser(t, e.base)
	if status, body := vic.ssoCallback(vic.ssoAuthorize()); status != http.StatusOK || !vic.hasSession() {
		t.Fatalf("vic's sign-in: %d\n%s", status, body)
	}
	status, _, body := vic.send(http.MethodPost, "/console/desk/"+pa.ID+"/decide", url.Values{"csrf": {vic.csrf}, "decision": {"approve"}}, e.base)
	if status != http.StatusForbidden || !strings.Contains(body, "role viewer may not approvals:decide") {
		t.Fatalf("a viewer approves: %d %s", status, body)
	}
	// ada (admin) may; the decision is hers.
	status, loc, body := ada.send(http.MethodPost, "/console/desk/"+pa.ID+"/decide", url.Values{"csrf": {ada.csrf}, "decision": {"approve"}, "comment": {"ok"}}, e.base)
	if status != http.StatusSeeOther || !strings.Contains(loc, "approved") {
		t.Fatalf("ada approves: %d %s %s", status, loc, body)
	}
	if got := owner.get("/v1/guardian/pending-actions/"+pa.ID).want(t, http.StatusOK, "pending action").object(t); got["decidedBy"] != "member:ada@example.com" {
		t.Errorf("decided by %v", got["decidedBy"])
	}
}

// TestConsoleOIDCInBrowser: a person clicks "Sign in with …" in chromium,
// consents at the provider (another site) and lands in the console signed
// in with their role, with no console error or CSP violation.
func TestConsoleOIDCInBrowser(t *testing.T) {
	e, provider := oidcEnv(t)
	provider.SignInAs(oidctest.Person{Email: "ada@example.com"})
	b := newBrowser(t, e.base)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	b.do(b.ctx, "sign-in page", chromedp.Navigate(e.base+"/console/agents"), chromedp.WaitVisible(css("#sso")))
	b.shot(b.ctx, "sign-in")
	b.do(b.ctx, "single sign-on", chromedp.Click(css("#sso")), chromedp.WaitVisible(css(".who")))
	if who := get(b, b.ctx, "who", chromedp.Text(css(".who span"))); !strings.Contains(who, "ada@example.com · admin · default") {
		t.Fatalf("signed in as %q", who)
	}
	if loc := get(b, b.ctx, "location", chromedp.Location()); !strings.HasSuffix(loc, "/console/agents") {
		t.Fatalf("landed on %s, not where the sign-in started", loc)
	}
	b.clean("after single sign-on")
}

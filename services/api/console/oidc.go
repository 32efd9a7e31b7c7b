package console

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"golang.org/x/oauth2"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// Sign-in with the deployment's OIDC provider: the authorization code flow
// with PKCE (S256), a state and a nonce (docs/console.md). The flow's
// secrets travel in one short-lived cookie sealed with the deployment's
// secret, so the callback may reach any api instance; the cookie is
// SameSite=Lax because the callback is a navigation from the provider's
// site, which a Strict cookie would not accompany.
const (
	flowCookie = "vigil_console_oidc"
	flowPath   = Prefix + "/oidc"
	flowTTL    = 10 * time.Minute
	flowAD     = "console oidc flow"
)

// flow is what /oidc/start remembers for /oidc/callback.
type flow struct {
	State    string    `json:"state"`
	Nonce    string    `json:"nonce"`
	Verifier string    `json:"verifier"`
	Next     string    `json:"next"`
	Tenant   string    `json:"tenant,omitempty"`
	Redirect string    `json:"redirect"`
	Expires  time.Time `json:"expires"`
}

// issuerName is how the sign-in page names the provider.
func (c *Console) issuerName() string {
	if c.deps.OIDC == nil {
		return ""
	}
	if u, err := url.Parse(c.deps.OIDC.Issuer()); err == nil && u.Host != "" {
		return u.Host
	}
	return c.deps.OIDC.Issuer()
}

// authorizationOrigin is the origin of the provider's authorization
// endpoint ("" without single sign-on, or while discovery fails).
func (c *Console) authorizationOrigin(ec echo.Context) string {
	if c.deps.OIDC == nil {
		return ""
	}
	eps, err := c.deps.OIDC.Endpoints(ec.Request().Context())
	if err != nil {
		return ""
	}
	u, err := url.Parse(eps.Authorization)
	if err != nil || u.Host == "" {
		return ""
	}
	return u.Scheme + "://" + u.Host
}

// redirectURL is the callback the provider sends the browser back to: the
// configured one, else this request's own origin.
func (c *Console) redirectURL(ec echo.Context) string {
	if c.cfg.OIDCRedirectURL != "" {
		return c.cfg.OIDCRedirectURL
	}
	return ec.Scheme() + "://" + ec.Request().Host + flowPath + "/callback"
}

func (c *Console) oauthConfig(eps oidc.Endpoints, redirect string) *oauth2.Config {
	// A public client names itself in the form; with a secret, the
	// library finds which of the two styles the provider takes.
	style := oauth2.AuthStyleInParams
	if c.cfg.OIDCClientSecret != "" {
		style = oauth2.AuthStyleAutoDetect
	}
	return &oauth2.Config{
		ClientID: c.deps.OIDC.Audience(), ClientSecret: c.cfg.OIDCClientSecret, RedirectURL: redirect,
		Endpoint: oauth2.Endpoint{AuthURL: eps.Authorization, TokenURL: eps.Token, AuthStyle: style},
		Scopes:   []string{"openid", "email", "profile"},
	}
}

// oidcStart begins a sign-in: fresh state, nonce and PKCE verifier, sealed
// into the flow cookie, then off to the provider.
func (c *Console) oidcStart(ec echo.Context) error {
	if c.deps.OIDC == nil {
		return c.signInAgain(ec, http.StatusNotFound, safeNext(ec.QueryParam("next")), "Single sign-on is not configured; sign in with an API key.")
	}
	eps, err := c.deps.OIDC.Endpoints(ec.Request().Context())
	if err != nil {
		c.log.Warn("console: oidc discovery", "error", err)
		return c.signInAgain(ec, http.StatusServiceUnavailable, safeNext(ec.QueryParam("next")), "The identity provider could not be reached; try again in a moment.")
	}
	f := flow{State: randomToken(), Nonce: randomToken(), Verifier: oauth2.GenerateVerifier(), Next: safeNext(ec.QueryParam("next")),
		Tenant: strings.TrimSpace(ec.QueryParam("tenant")), Redirect: c.redirectURL(ec), Expires: time.Now().Add(flowTTL)}
	if f.Tenant != "" && !tenant.Valid(f.Tenant) {
		// Checked before the provider is involved: nothing to sign in to.
		return c.signInWith(ec, http.StatusBadRequest, signInView{Next: f.Next, Tenant: f.Tenant,
			Error: "\"" + f.Tenant + "\" is not a tenant id (lower-case letters, digits, - and _, up to 63): correct it, or leave it empty if you belong to one tenant only."})
	}
	raw, _ := json.Marshal(f)
	ec.SetCookie(&http.Cookie{Name: flowCookie, Value: c.deps.Box.Seal(raw, flowAD), Path: flowPath, MaxAge: int(flowTTL.Seconds()),
		HttpOnly: true, Secure: ec.Scheme() == "https", SameSite: http.SameSiteLaxMode})
	u := c.oauthConfig(eps, f.Redirect).AuthCodeURL(f.State, oauth2.S256ChallengeOption(f.Verifier), oauth2.SetAuthURLParam("nonce", f.Nonce))
	return ec.Redirect(http.StatusFound, u)
}

// errSignIn is a refusal whose message the sign-in page shows.
type errSignIn struct {
	status int
	msg    string
	// tenants are the tenants to choose from, when the person named none
	// and belongs to several.
	tenants []string
}

func (e errSignIn) Error() string { return e.msg }

// oidcCallback finishes a sign-in. The flow cookie is spent whatever the
// outcome; every failure ends on the sign-in page, never in a session.
func (c *Console) oidcCallback(ec echo.Context) error {
	ec.SetCookie(&http.Cookie{Name: flowCookie, Value: "", Path: flowPath, MaxAge: -1, HttpOnly: true, Secure: ec.Scheme() == "https", SameSite: http.SameSiteLaxMode})
	f, err := c.finishFlow(ec)
	v := signInView{Next: Prefix + "/desk"}
	if f != nil {
		v.Next, v.Tenant = f.Next, f.Tenant
	}
	next := v.Next
	var refusal errSignIn
	switch {
	case errors.As(err, &refusal):
		c.log.Info("console: oidc sign-in refused", "reason", refusal.msg)
		v.Error, v.Tenants = refusal.msg, refusal.tenants
		return c.signInWith(ec, refusal.status, v)
	case err != nil:
		c.log.Warn("console: oidc sign-in failed", "error", err)
		return c.signInAgain(ec, http.StatusServiceUnavailable, next, "Sign-in could not be completed (the identity provider could not be reached); try again.")
	}
	return nil
}

func (c *Console) finishFlow(ec echo.Context) (*flow, error) {
	if c.deps.OIDC == nil {
		return nil, errSignIn{status: http.StatusNotFound, msg: "Single sign-on is not configured; sign in with an API key."}
	}
	q := ec.QueryParams()
	ck, err := ec.Cookie(flowCookie)
	if err != nil {
		return nil, errSignIn{status: http.StatusBadRequest, msg: "This sign-in was not started in this browser, or it expired: start again."}
	}
	raw, err := c.deps.Box.Open(ck.Value, flowAD)
	var f flow
	if err != nil || json.Unmarshal(raw, &f) != nil || time.Now().After(f.Expires) {
		return nil, errSignIn{status: http.StatusBadRequest, msg: "This sign-in was not started in this browser, or it expired: start again."}
	}
	if !tokenEqual(q.Get("state"), f.State) {
		return &f, errSignIn{status: http.StatusBadRequest, msg: "This sign-in answer does not belong to the sign-in this browser started (state mismatch): start again."}
	}
	if e := q.Get("error"); e != "" {
		msg := "The identity provider refused the sign-in (" + e + ")"
		if d := q.Get("error_description"); d != "" && len(d) < 300 {
			msg += ": " + d
		}
		return &f, errSignIn{status: http.StatusUnauthorized, msg: msg + "."}
	}
	if iss := q.Get("iss"); iss != "" && iss != c.deps.OIDC.Issuer() {
		// RFC 9207: the answer names the provider that sent it (mix-up).
		return &f, errSignIn{status: http.StatusBadRequest, msg: "The sign-in answer came from another identity provider."}
	}
	code := q.Get("code")
	if code == "" {
		return &f, errSignIn{status: http.StatusBadRequest, msg: "The identity provider sent no authorization code."}
	}
	ctx := ec.Request().Context()
	eps, err := c.deps.OIDC.Endpoints(ctx)
	if err != nil {
		return &f, err
	}
	tok, err := c.oauthConfig(eps, f.Redirect).Exchange(ctx, code, oauth2.VerifierOption(f.Verifier))
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode < 500 {
		return &f, errSignIn{status: http.StatusUnauthorized, msg: "The identity provider did not accept the sign-in code (" + firstNonEmpty(re.ErrorCode, "refused") + "): start again."}
	}
	if err != nil {
		return &f, fmt.Errorf("console: code exchange: %w", err)
	}
	idToken, _ := tok.Extra("id_token").(string)
	if idToken == "" {
		return &f, errSignIn{status: http.StatusUnauthorized, msg: "The identity provider returned no ID token."}
	}
	claims, err := c.deps.OIDC.Verify(ctx, idToken)
	if errors.Is(err, oidc.ErrInvalid) {
		return &f, errSignIn{status: http.StatusUnauthorized, msg: "The identity provider's ID token was not accepted (" + err.Error() + ")."}
	}
	if err != nil {
		return &f, err
	}
	if !tokenEqual(claims.Nonce, f.Nonce) {
		return &f, errSignIn{status: http.StatusUnauthorized, msg: "The ID token was not issued for this sign-in (nonce mismatch): start again."}
	}
	if claims.Email == "" {
		return &f, errSignIn{status: http.StatusForbidden, msg: "That identity is a service account, not a person: the console is for people."}
	}
	// The principal is the API's own answer for this token, as every
	// dispatch will be.
	p, err := c.authenticate(ctx, idToken, f.Tenant)
	var ae *apperr.Error
	if errors.As(err, &ae) && ae.Kind != apperr.KindUnavailable {
		if f.Tenant == "" {
			if ts := c.memberTenants(claims.Email); len(ts) > 1 {
				return &f, errSignIn{status: http.StatusConflict, msg: "You (" + claims.Email + ") are a member of several tenants: " + strings.Join(ts, ", ") +
					". Enter the one to sign in to in the Tenant field and sign in again.", tenants: ts}
			}
		} else if ae.Kind == apperr.KindUnauthenticated {
			return &f, errSignIn{status: http.StatusForbidden, msg: "Signed in at the identity provider as " + claims.Email + ", but that person is not a member of tenant " + f.Tenant +
				" (or not yet bound to this identity). Check the Tenant field, or leave it empty if you belong to one tenant only."}
		}
		return &f, errSignIn{status: http.StatusForbidden, msg: "Signed in at the identity provider as " + claims.Email + ", but Vigil refused: " + ae.Message + "."}
	}
	if err != nil {
		return &f, err
	}
	if f.Tenant != "" && p.Tenant != f.Tenant {
		// The provider's tenant claim names another tenant: it wins in
		// the API, so the session could not be the one asked for.
		return &f, errSignIn{status: http.StatusForbidden, msg: "You asked for tenant " + f.Tenant + ", but your identity provider signs you in to " + p.Tenant + "."}
	}
	// The session ends when the ID token does: it is the credential every
	// page dispatches with.
	s, err := c.startSession(ec, idToken, p, claims.Expires)
	if err != nil {
		return &f, err
	}
	ec.SetCookie(cookie(ec, sessionCookie, s.id, int(time.Until(s.expires).Seconds())))
	c.log.Info("console sign-in", "tenant", p.Tenant, "actor", p.Actor(), "role", string(p.Role), "via", "oidc")
	// The browser arrived here from the provider's site: a redirect now
	// would still be that cross-site navigation, with which the browser
	// does not send the SameSite=Strict session cookie. A page that moves
	// on by itself makes the next request the console's own.
	return &f, c.render(ec, http.StatusOK, "continue", "Signed in", continueView{Next: f.Next})
}

// continueView is the page that moves on to Next after a sign-in.
type continueView struct{ Next string }

// Refresh is the page's meta refresh.
func (v continueView) Refresh() string { return "0;url=" + v.Next }

// memberTenants lists the tenants where email is a member, when the
// authenticator can tell (the catalog can).
func (c *Console) memberTenants(email string) []string {
	if mt, ok := c.deps.Auth.(interface{ MemberTenants(string) []string }); ok {
		if e, err := auth.NormalizeEmail(email); err == nil {
			ts := mt.MemberTenants(e)
			slices.Sort(ts)
			return ts
		}
	}
	return nil
}

// authenticate resolves a token as the API does for a request naming
// tenant in x-tenant-id.
func (c *Console) authenticate(ctx context.Context, token, tenant string) (auth.Principal, error) {
	if ta, ok := c.deps.Auth.(httpkit.TenantAuthenticator); ok {
		return ta.AuthenticateTenant(ctx, token, tenant)
	}
	return c.deps.Auth.Authenticate(ctx, token)
}

func firstNonEmpty(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

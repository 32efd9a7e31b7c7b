package console

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Cookie names. The session cookie is HttpOnly and SameSite=Strict, and
// Secure whenever the console is reached over TLS (directly or, as echo
// reads X-Forwarded-Proto, through a TLS-terminating proxy).
const (
	sessionCookie = "vigil_console"
	// signInCookie carries the sign-in form's CSRF token (double submit:
	// there is no session yet to hold it).
	signInCookie = "vigil_console_signin"
	csrfField    = "csrf"
	csrfHeader   = "X-CSRF-Token"
)

// session is one signed-in person. The credential stays on the server;
// the browser holds only the random session id, which is stored nowhere:
// the session's record in the bucket is keyed by its SHA-256.
type session struct {
	id        string // the cookie's value
	key       string // its KV key: hex SHA-256 of id
	token     string // the bearer credential (API key or ID token)
	principal auth.Principal
	csrf      string
	created   time.Time
	expires   time.Time // absolute: created + SessionTTL, or the ID token's expiry
	seen      time.Time // the last request, as last written (idle timeout)
	revision  uint64    // of the record read, for the compare-and-set of touch
}

// sessionRecord is what the bucket holds for a session, sealed: nothing in
// it is readable, or usable elsewhere, by someone who can read NATS.
type sessionRecord struct {
	Token     string         `json:"token"`
	Principal auth.Principal `json:"principal"`
	CSRF      string         `json:"csrf"`
	Created   time.Time      `json:"created"`
	Expires   time.Time      `json:"expires"`
	Seen      time.Time      `json:"seen"`
}

// errNoSession is a cookie naming no live session: unknown, signed out,
// expired, idle too long, or a record that does not open.
var errNoSession = errors.New("console: no such session")

// sessionStore keeps sessions in the JetStream KV bucket
// streams.ConsoleSessionsBucket, shared by every api instance: a sign-in
// on one is a session on all, a sign-out on one ends it on all at once
// (there is no cache to outlive the deleted key), and a restart keeps
// everyone signed in. The bucket's TTL is the session lifetime, so what
// nobody signs out of is dropped by NATS.
type sessionStore struct {
	kv        jetstream.KeyValue
	box       *secretbox.Box
	ttl, idle time.Duration
	// touchEvery is how stale a session's last-seen time may be before a
	// request writes it again: idle accounting at that grain, not a KV
	// write per request.
	touchEvery time.Duration
}

// openSessions creates or updates the bucket. On a NATS cluster its reads
// go to the stream's leader (natsx.ConsistentKeyValue), so that a session
// deleted through one api instance is not still read from a lagging
// follower by another.
func openSessions(ctx context.Context, js jetstream.JetStream, box *secretbox.Box, cfg Config, replicas int) (*sessionStore, error) {
	kv, err := natsx.ConsistentKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: streams.ConsoleSessionsBucket, Description: "Web console sessions, sealed, keyed by the SHA-256 of the session id",
		History: 1, TTL: cfg.SessionTTL, Storage: jetstream.FileStorage, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("console sessions: %w", err)
	}
	return &sessionStore{kv: kv, box: box, ttl: cfg.SessionTTL, idle: cfg.IdleTimeout, touchEvery: min(cfg.IdleTimeout/10, time.Minute)}, nil
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// sessionKeyOf is the bucket key of a session id.
func sessionKeyOf(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// sessionAD binds a sealed record to its key, so a record copied under
// another session's key (another person's, another tenant's) does not
// open.
func sessionAD(key string) string { return "console session " + key }

func (st *sessionStore) seal(s *session) []byte {
	raw, _ := json.Marshal(sessionRecord{Token: s.token, Principal: s.principal, CSRF: s.csrf, Created: s.created, Expires: s.expires, Seen: s.seen})
	return []byte(st.box.Seal(raw, sessionAD(s.key)))
}

// create starts a session lasting the store's TTL, or until notAfter when
// that is earlier and not zero (an ID token's expiry).
func (st *sessionStore) create(ctx context.Context, token string, p auth.Principal, now, notAfter time.Time) (*session, error) {
	s := &session{id: randomToken(), token: token, principal: p, csrf: randomToken(), created: now, expires: now.Add(st.ttl), seen: now}
	if !notAfter.IsZero() && notAfter.Before(s.expires) {
		s.expires = notAfter
	}
	s.key = sessionKeyOf(s.id)
	rev, err := st.kv.Create(ctx, s.key, st.seal(s))
	if err != nil {
		return nil, fmt.Errorf("console: store a session: %w", err)
	}
	s.revision = rev
	return s, nil
}

// get reads the live session of a cookie value. It is errNoSession for
// anything but a live session (an expired or idle one is deleted on the
// way), and another error when the bucket could not be read.
func (st *sessionStore) get(ctx context.Context, id string, now time.Time) (*session, error) {
	if id == "" {
		return nil, errNoSession
	}
	key := sessionKeyOf(id)
	e, err := st.kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errNoSession
	}
	if err != nil {
		return nil, fmt.Errorf("console: read a session: %w", err)
	}
	raw, err := st.box.Open(string(e.Value()), sessionAD(key))
	var r sessionRecord
	if err != nil || json.Unmarshal(raw, &r) != nil {
		return nil, errNoSession
	}
	s := &session{id: id, key: key, token: r.Token, principal: r.Principal, csrf: r.CSRF, created: r.Created, expires: r.Expires, seen: r.Seen, revision: e.Revision()}
	if !now.Before(s.expires) || now.Sub(s.seen) >= st.idle {
		st.drop(ctx, s)
		return nil, errNoSession
	}
	return s, nil
}

// touch records that the session was used at now, when its last-seen time
// is older than touchEvery. A concurrent touch or a sign-out in between
// wins (compare-and-set on the revision read): a deleted session is not
// brought back.
func (st *sessionStore) touch(ctx context.Context, s *session, now time.Time) {
	if now.Sub(s.seen) < st.touchEvery {
		return
	}
	s.seen = now
	if rev, err := st.kv.Update(ctx, s.key, st.seal(s), s.revision); err == nil {
		s.revision = rev
	}
}

// drop ends a session on every instance.
func (st *sessionStore) drop(ctx context.Context, s *session) error {
	if err := st.kv.Delete(ctx, s.key); err != nil {
		return fmt.Errorf("console: delete a session: %w", err)
	}
	return nil
}

const sessionKey = "console.session"

func current(c echo.Context) *session { s, _ := c.Get(sessionKey).(*session); return s }

func cookie(c echo.Context, name, value string, maxAge int) *http.Cookie {
	return &http.Cookie{Name: name, Value: value, Path: Prefix, MaxAge: maxAge, HttpOnly: true,
		Secure: c.Scheme() == "https", SameSite: http.SameSiteStrictMode}
}

// requireSession admits requests with a live session; pages without one
// go to the sign-in page, everything else gets 401.
func (c *Console) requireSession(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		s, err := c.liveSession(ec)
		if err == nil {
			ec.Set(sessionKey, s)
			return next(ec)
		}
		if !errors.Is(err, errNoSession) {
			// Fail closed, but keep the session: the bucket or the
			// identity provider is out of reach for a moment.
			c.log.Warn("console: a session could not be checked", "error", err)
			ec.Response().Header().Set("Retry-After", "5")
			return c.fail(ec, http.StatusServiceUnavailable, "Your session could not be checked just now; try again in a moment.")
		}
		if _, cerr := ec.Cookie(sessionCookie); cerr == nil {
			ec.SetCookie(cookie(ec, sessionCookie, "", -1))
		}
		if ec.Request().Method == http.MethodGet && ec.Request().Header.Get("Accept") != "text/event-stream" {
			return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in?next="+url.QueryEscape(ec.Request().URL.RequestURI()))
		}
		return c.fail(ec, http.StatusUnauthorized, "Your session has ended: sign in again.")
	}
}

// liveSession is the session of the request's cookie, read from the
// bucket, if it is live and its credential still authenticates — now, on
// this instance's view of CONTROL — as the very principal that signed in.
// A revoked or expired key, a removed member or a changed role ends it
// (roles are never upgraded or downgraded under a running session: the
// person signs in again and gets the role the API gives them).
func (c *Console) liveSession(ec echo.Context) (*session, error) {
	if c.sessions == nil {
		return nil, errors.New("console: the session bucket is not open (EnsureSessions)")
	}
	ck, err := ec.Cookie(sessionCookie)
	if err != nil {
		return nil, errNoSession
	}
	ctx, now := ec.Request().Context(), time.Now()
	s, err := c.sessions.get(ctx, ck.Value, now)
	if err != nil {
		return nil, err
	}
	p, err := c.authenticate(ctx, s.token, s.principal.Tenant)
	if err != nil && !apperr.Is(err, apperr.KindUnauthenticated) && !apperr.Is(err, apperr.KindForbidden) {
		return nil, err
	}
	if err != nil || !samePrincipal(p, s.principal) {
		c.log.Info("console session ended: its credential no longer signs in as it did", "tenant", s.principal.Tenant, "actor", s.principal.Actor(),
			"role", string(s.principal.Role), "now", string(p.Role))
		if derr := c.sessions.drop(ctx, s); derr != nil {
			return nil, derr
		}
		return nil, errNoSession
	}
	c.sessions.touch(ctx, s, now)
	return s, nil
}

// samePrincipal reports whether a and b are the same identity with the
// same role in the same tenant.
func samePrincipal(a, b auth.Principal) bool {
	return a.Tenant == b.Tenant && a.Role == b.Role && a.KeyID == b.KeyID && a.Member == b.Member && a.Subject == b.Subject && a.Service == b.Service
}

// sameOrigin rejects a state-changing request whose Origin (sent by every
// current browser on POST) names another site: a second line behind the
// CSRF token and SameSite=Strict.
func sameOrigin(ec echo.Context) bool {
	o := ec.Request().Header.Get("Origin")
	if o == "" || o == "null" {
		return o == ""
	}
	u, err := url.Parse(o)
	return err == nil && strings.EqualFold(u.Host, ec.Request().Host)
}

func tokenEqual(a, b string) bool {
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// requireCSRF checks the session's synchronizer token, sent as the csrf
// form field or (from the script) the X-CSRF-Token header.
func (c *Console) requireCSRF(next echo.HandlerFunc) echo.HandlerFunc {
	return func(ec echo.Context) error {
		s := current(ec)
		got := ec.Request().Header.Get(csrfHeader)
		if got == "" {
			got = ec.FormValue(csrfField)
		}
		if s == nil || !tokenEqual(got, s.csrf) || !sameOrigin(ec) {
			return c.fail(ec, http.StatusForbidden, "The form expired or did not come from this console (CSRF check failed): reload the page and try again.")
		}
		return next(ec)
	}
}

type signInView struct {
	CSRF, Next, Error string
	// SSO names the OIDC provider the page offers ("" when none is set).
	SSO string
	// Tenant is the tenant the person asked for in the last single
	// sign-on; Tenants the tenants they may choose from, when the last
	// one failed because they belong to several.
	Tenant  string
	Tenants []string
}

func (c *Console) signInPage(ec echo.Context) error {
	return c.signInAgain(ec, http.StatusOK, safeNext(ec.QueryParam("next")), "")
}

// signInAgain renders the sign-in page with a fresh form token and msg.
func (c *Console) signInAgain(ec echo.Context, status int, next, msg string) error {
	return c.signInWith(ec, status, signInView{Next: next, Error: msg})
}

// signInWith renders the sign-in page v with a fresh form token.
func (c *Console) signInWith(ec echo.Context, status int, v signInView) error {
	v.CSRF, v.SSO = randomToken(), c.issuerName()
	if o := c.authorizationOrigin(ec); o != "" {
		// The single sign-on form's submission is redirected to the
		// provider, and form-action governs redirects too.
		ec.Response().Header().Set("Content-Security-Policy", strings.Replace(CSP, "form-action 'self'", "form-action 'self' "+o, 1))
	}
	ec.SetCookie(cookie(ec, signInCookie, v.CSRF, 600))
	return c.render(ec, status, "signin", "Sign in", v)
}

// safeNext keeps a post-sign-in redirect inside the console.
func safeNext(n string) string {
	if !strings.HasPrefix(n, Prefix) || strings.HasPrefix(n, "//") || strings.Contains(n, "\\") {
		return Prefix + "/desk"
	}
	return n
}

func (c *Console) signIn(ec echo.Context) error {
	ck, err := ec.Cookie(signInCookie)
	if err != nil || !tokenEqual(ec.FormValue(csrfField), ck.Value) || !sameOrigin(ec) {
		return c.fail(ec, http.StatusForbidden, "The sign-in form expired (CSRF check failed): reload the page and try again.")
	}
	next := safeNext(ec.FormValue("next"))
	again := func(status int, msg string) error { return c.signInAgain(ec, status, next, msg) }
	key := strings.TrimSpace(ec.FormValue("key"))
	if key == "" {
		return again(http.StatusBadRequest, "Enter an API key.")
	}
	p, err := c.deps.Auth.Authenticate(ec.Request().Context(), key)
	if err != nil {
		return again(http.StatusUnauthorized, "That key was not accepted (unknown, revoked or expired).")
	}
	if p.Role == auth.RoleAgent {
		// Agent keys are an agent's identity, not a person's: they cannot
		// decide, triage or govern, and a console is for people.
		return again(http.StatusForbidden, "Agent keys cannot sign in to the console; use a key of a person's role.")
	}
	s, err := c.startSession(ec, key, p, time.Time{})
	if err != nil {
		c.log.Warn("console: sign-in", "error", err)
		return again(http.StatusServiceUnavailable, "Sessions cannot be stored right now; try again in a moment.")
	}
	ec.SetCookie(cookie(ec, signInCookie, "", -1))
	ec.SetCookie(cookie(ec, sessionCookie, s.id, int(time.Until(s.expires).Seconds())))
	c.log.Info("console sign-in", "tenant", p.Tenant, "actor", p.Actor(), "role", string(p.Role))
	return ec.Redirect(http.StatusSeeOther, next)
}

// startSession stores a new session for a principal signed in with token.
func (c *Console) startSession(ec echo.Context, token string, p auth.Principal, notAfter time.Time) (*session, error) {
	if c.sessions == nil {
		return nil, errors.New("console: the session bucket is not open (EnsureSessions)")
	}
	return c.sessions.create(ec.Request().Context(), token, p, time.Now(), notAfter)
}

// signOut deletes the session from the bucket: every instance refuses it
// from then on.
func (c *Console) signOut(ec echo.Context) error {
	if err := c.sessions.drop(ec.Request().Context(), current(ec)); err != nil {
		c.log.Warn("console: sign-out", "error", err)
		return c.fail(ec, http.StatusServiceUnavailable, "Signing out failed (the session store could not be reached): try again.")
	}
	ec.SetCookie(cookie(ec, sessionCookie, "", -1))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in")
}

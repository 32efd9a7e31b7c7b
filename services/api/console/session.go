package console

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
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
// the browser holds only the random session id.
type session struct {
	id        string
	token     string // the bearer credential (API key or ID token)
	principal auth.Principal
	csrf      string
	expires   time.Time
}

type sessionStore struct {
	ttl time.Duration
	mu  sync.Mutex
	m   map[string]*session
	// swept is when expired sessions were last dropped (at most once a
	// minute, on a sign-in).
	swept time.Time
}

func newSessionStore(ttl time.Duration) *sessionStore {
	return &sessionStore{ttl: ttl, m: map[string]*session{}}
}

func randomToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go ≥ 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}

// create starts a session lasting the store's TTL, or until notAfter when
// that is earlier and not zero (an ID token's expiry).
func (st *sessionStore) create(token string, p auth.Principal, now, notAfter time.Time) *session {
	s := &session{id: randomToken(), token: token, principal: p, csrf: randomToken(), expires: now.Add(st.ttl)}
	if !notAfter.IsZero() && notAfter.Before(s.expires) {
		s.expires = notAfter
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if now.Sub(st.swept) > time.Minute {
		st.sweepLocked(now)
	}
	st.m[s.id] = s
	return s
}

func (st *sessionStore) get(id string, now time.Time) (*session, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	s, ok := st.m[id]
	if !ok || now.After(s.expires) {
		delete(st.m, id)
		return nil, false
	}
	return s, true
}

func (st *sessionStore) drop(id string) {
	st.mu.Lock()
	delete(st.m, id)
	st.mu.Unlock()
}

func (st *sessionStore) sweepLocked(now time.Time) {
	st.swept = now
	for id, s := range st.m {
		if now.After(s.expires) {
			delete(st.m, id)
		}
	}
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
		if ck, err := ec.Cookie(sessionCookie); err == nil {
			if s, ok := c.sessions.get(ck.Value, time.Now()); ok {
				ec.Set(sessionKey, s)
				return next(ec)
			}
		}
		if ec.Request().Method == http.MethodGet && ec.Request().Header.Get("Accept") != "text/event-stream" {
			return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in?next="+url.QueryEscape(ec.Request().URL.RequestURI()))
		}
		return c.fail(ec, http.StatusUnauthorized, "Your session has ended: sign in again.")
	}
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
}

func (c *Console) signInPage(ec echo.Context) error {
	return c.signInAgain(ec, http.StatusOK, safeNext(ec.QueryParam("next")), "")
}

// signInAgain renders the sign-in page with a fresh form token and msg.
func (c *Console) signInAgain(ec echo.Context, status int, next, msg string) error {
	tok := randomToken()
	ec.SetCookie(cookie(ec, signInCookie, tok, 600))
	return c.render(ec, status, "signin", "Sign in", signInView{CSRF: tok, Next: next, Error: msg, SSO: c.issuerName()})
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
	s := c.sessions.create(key, p, time.Now(), time.Time{})
	ec.SetCookie(cookie(ec, signInCookie, "", -1))
	ec.SetCookie(cookie(ec, sessionCookie, s.id, int(c.cfg.SessionTTL.Seconds())))
	c.log.Info("console sign-in", "tenant", p.Tenant, "actor", p.Actor(), "role", string(p.Role))
	return ec.Redirect(http.StatusSeeOther, next)
}

func (c *Console) signOut(ec echo.Context) error {
	c.sessions.drop(current(ec).id)
	ec.SetCookie(cookie(ec, sessionCookie, "", -1))
	return ec.Redirect(http.StatusSeeOther, Prefix+"/sign-in")
}

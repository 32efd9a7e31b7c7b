// Package console is Vigil's web console, served by Vigil itself at
// /console: server-rendered pages (html/template, embedded) with a small
// script of its own and no third-party JavaScript. A signed-in person's
// session holds the bearer credential they signed in with, and every page
// reads and writes by dispatching the very API route a client would call
// with that credential, in-process: authentication, roles, tenant
// isolation, validation and the audit trail are the API's, never a second
// copy (docs/console.md).
package console

import (
	"context"
	"embed"
	"errors"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/secretbox"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// CSP is the Content-Security-Policy of every console response: scripts
// and styles only from the console's own files, no inline script, no
// plugins, no framing, forms only to the console.
const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// Prefix is where the console is mounted.
const Prefix = "/console"

// Config tunes the console.
type Config struct {
	// SessionTTL is how long a sign-in lasts (absolute; an API key revoked
	// or an ID token expired ends it earlier). It is also the TTL of the
	// session bucket.
	SessionTTL time.Duration
	// IdleTimeout ends a session that has made no request for this long.
	IdleTimeout time.Duration
	// Heartbeat is how often the Decision Desk's event stream sends a
	// comment, so that proxies keep it open.
	Heartbeat time.Duration
	// OIDCRedirectURL is the sign-in callback registered at the identity
	// provider (…/console/oidc/callback); empty: derived from each
	// request's scheme and host.
	OIDCRedirectURL string
	// OIDCClientSecret authenticates the console to the provider's token
	// endpoint; empty for a public client (PKCE alone).
	OIDCClientSecret string
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{SessionTTL: 8 * time.Hour, IdleTimeout: 30 * time.Minute, Heartbeat: 15 * time.Second}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if c.SessionTTL < time.Minute {
		errs = append(errs, errors.New("console: SessionTTL must be at least 1m"))
	}
	if c.IdleTimeout < time.Minute || c.IdleTimeout > c.SessionTTL {
		errs = append(errs, errors.New("console: IdleTimeout must be at least 1m and at most SessionTTL"))
	}
	if c.OIDCRedirectURL != "" {
		if u, err := url.Parse(c.OIDCRedirectURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Path != Prefix+"/oidc/callback" {
			errs = append(errs, errors.New("console: OIDCRedirectURL must be an absolute http(s) URL ending in "+Prefix+"/oidc/callback"))
		}
	}
	if c.Heartbeat <= 0 {
		errs = append(errs, errors.New("console: Heartbeat must be positive"))
	}
	return errors.Join(errs...)
}

// Deps are the console's collaborators.
type Deps struct {
	// Auth checks the credential a person signs in with (the catalog).
	Auth httpkit.Authenticator
	// Board wakes the Decision Desk's event streams on every change of a
	// pending action.
	Board *approval.Board
	Log   *slog.Logger
	// OIDC, when set, offers sign-in with the deployment's identity
	// provider (the verifier the catalog checks ID tokens with).
	OIDC *oidc.Verifier
	// Box seals the sign-in flow's cookie and the sessions in their
	// bucket.
	Box *secretbox.Box
}

// Console serves the pages.
type Console struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	// sessions is the session bucket, opened by EnsureSessions.
	sessions *sessionStore
	pages    pages
	// api is the echo instance the console is mounted on: pages dispatch
	// API requests to it.
	api *echo.Echo
	// stopping is closed when the HTTP server starts shutting down, which
	// ends the Desk's event streams (it would otherwise wait for them).
	stopping chan struct{}
	stopOnce sync.Once
}

// New validates cfg and deps and parses the templates.
func New(cfg Config, deps Deps) (*Console, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Auth == nil || deps.Board == nil || deps.Log == nil || deps.Box == nil {
		return nil, errors.New("console: Auth, Board, Log and Box are required")
	}
	p, err := parsePages()
	if err != nil {
		return nil, err
	}
	return &Console{cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "console")), pages: p, stopping: make(chan struct{})}, nil
}

// EnsureSessions creates or updates the session bucket
// (streams.ConsoleSessionsBucket) with replicas copies; until it has run,
// sign-in and every signed-in page answer 503.
func (c *Console) EnsureSessions(ctx context.Context, js jetstream.JetStream, replicas int) error {
	st, err := openSessions(ctx, js, c.deps.Box, c.cfg, replicas)
	if err != nil {
		return err
	}
	c.sessions = st
	return nil
}

// Routes mounts the console on e and keeps e to dispatch API requests to.
func (c *Console) Routes(e *echo.Echo) {
	c.api = e
	e.Server.RegisterOnShutdown(func() { c.stopOnce.Do(func() { close(c.stopping) }) })
	static, _ := fs.Sub(staticFS, "static")
	files := http.StripPrefix(Prefix+"/static/", http.FileServer(http.FS(static)))
	g := e.Group(Prefix, secureHeaders)
	// One route per embedded file, not a wildcard: the route table
	// (pkg/routes) lists exact routes only.
	names, _ := fs.ReadDir(static, ".")
	for _, n := range names {
		g.GET("/static/"+n.Name(), echo.WrapHandler(files))
	}
	g.GET("/sign-in", c.signInPage)
	g.POST("/sign-in", c.signIn)
	g.GET("/oidc/start", c.oidcStart)
	g.GET("/oidc/callback", c.oidcCallback)
	s := g.Group("", c.requireSession)
	s.POST("/sign-out", c.signOut, c.requireCSRF)
	s.GET("", c.home)
	s.GET("/desk", c.desk)
	s.GET("/desk/events", c.deskEvents)
	s.POST("/desk/:id/decide", c.decide, c.requireCSRF)
	s.GET("/sessions", c.sessionsPage)
	s.GET("/sessions/:id", c.sessionPage)
	s.GET("/sessions/:id/evidence", c.evidence)
	s.GET("/agents", c.agentsPage)
	s.GET("/agents/:id", c.agentPage)
	s.POST("/agents/:id/settings", c.agentSettings, c.requireCSRF)
	s.GET("/agents/:id/reset", c.resetBaselinePage)
	s.POST("/agents/:id/reset", c.resetBaseline, c.requireCSRF)
	s.POST("/halts", c.halt, c.requireCSRF)
	s.GET("/policies", c.policiesPage)
	s.GET("/policies/new", c.policyEditor)
	s.GET("/policies/:id/edit", c.policyEditor)
	s.POST("/policies/validate", c.validatePolicy, c.requireCSRF)
	s.POST("/policies/test", c.testPolicy, c.requireCSRF)
	s.POST("/policies/replay", c.replayPolicy, c.requireCSRF)
	s.POST("/policies", c.savePolicy, c.requireCSRF)
	s.GET("/verdicts", c.verdictsPage)
	s.POST("/verdicts/:id/status", c.triage, c.requireCSRF)
	s.GET("/audit", c.auditPage)
	s.GET("/keys", c.keysPage)
	s.POST("/keys", c.createKey, c.requireCSRF)
	s.GET("/keys/:id/revoke", c.revokeKeyPage)
	s.POST("/keys/:id/revoke", c.revokeKey, c.requireCSRF)
	s.POST("/keys/:id/bind", c.bindKey, c.requireCSRF)
	s.GET("/members", c.membersPage)
	s.POST("/members/invite", c.inviteMember, c.requireCSRF)
	s.POST("/members/role", c.setMemberRole, c.requireCSRF)
	s.POST("/members/groups", c.setMemberGroups, c.requireCSRF)
	s.GET("/members/:email/remove", c.removeMemberPage)
	s.POST("/members/:email/remove", c.removeMember, c.requireCSRF)
	s.GET("/channels", c.channelsPage)
	s.GET("/channels/:id", c.channelPage)
}

// secureHeaders sets the CSP and the other browser protections on every
// console response; pages are never cached (they carry tenant data).
func secureHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Content-Security-Policy", CSP)
		h.Set("X-Content-Type-Options", "nosniff")
		// same-origin, not no-referrer: with no-referrer a browser sends
		// "Origin: null" on form posts, which the origin check refuses.
		h.Set("Referrer-Policy", "same-origin")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if !strings.HasPrefix(c.Request().URL.Path, Prefix+"/static/") {
			h.Set("Cache-Control", "no-store")
		}
		return next(c)
	}
}

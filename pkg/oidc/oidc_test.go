package oidc

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// provider is an identity provider run by the test: discovery and JWKS
// over real HTTP, ES256-signed tokens. Its JWKS endpoint can be made to
// fail or to hang until released.
type provider struct {
	srv    *httptest.Server
	key    *ecdsa.PrivateKey
	signer jose.Signer

	hits    atomic.Int64
	failing atomic.Bool
	mu      sync.Mutex
	hold    chan struct{} // when set, JWKS waits for it to close
	started chan struct{} // closed when a held request arrives
}

func newProvider(t *testing.T) *provider {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p := &provider{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": p.srv.URL, "jwks_uri": p.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.hits.Add(1)
		p.mu.Lock()
		hold, started := p.hold, p.started
		p.mu.Unlock()
		if hold != nil {
			close(started)
			<-hold
		}
		if p.failing.Load() {
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	})
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	p.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// holdJWKS makes the next JWKS request wait until the returned release
// is called; started is closed once it is waiting.
func (p *provider) holdJWKS() (started chan struct{}, release func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.hold, p.started = make(chan struct{}), make(chan struct{})
	hold := p.hold
	return p.started, func() {
		p.mu.Lock()
		p.hold = nil
		p.mu.Unlock()
		close(hold)
	}
}

type tokenOpts struct {
	std    jwt.Claims
	claims map[string]any
	kid    string
}

func (p *provider) token(t *testing.T, mod func(*tokenOpts)) string {
	t.Helper()
	now := time.Now()
	o := tokenOpts{
		std: jwt.Claims{Issuer: p.srv.URL, Subject: "sub-ada", Audience: jwt.Audience{"vigil"},
			IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))},
		claims: map[string]any{"email": "ada@example.com", "email_verified": true},
		kid:    "k1",
	}
	if mod != nil {
		mod(&o)
	}
	signer := p.signer
	if o.kid != "k1" {
		var err error
		signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: p.key, KeyID: o.kid}}, (&jose.SignerOptions{}).WithType("JWT"))
		if err != nil {
			t.Fatal(err)
		}
	}
	tok, err := jwt.Signed(signer).Claims(o.std).Claims(o.claims).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// clock is a settable time source for the verifier's pacing.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newVerifier(t *testing.T, p *provider, mod func(*Config)) (*Verifier, *clock) {
	t.Helper()
	cfg := Config{Issuer: p.srv.URL, Audience: "vigil", TenantClaim: "vigil_tenant",
		ServiceAccounts: map[string]ServiceAccount{"ci-bot": {Tenant: "acme", Role: "admin"}, "sub-bot": {Tenant: "acme", Role: "viewer"}}}
	if mod != nil {
		mod(&cfg)
	}
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	v.now = c.now
	return v, c
}

func TestVerifyClaims(t *testing.T) {
	p := newProvider(t)
	v, _ := newVerifier(t, p, nil)
	hmac := func() string {
		s, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
		tok, _ := jwt.Signed(s).Claims(jwt.Claims{Issuer: p.srv.URL, Audience: jwt.Audience{"vigil"}, Expiry: jwt.NewNumericDate(time.Now().Add(time.Hour))}).
			Claims(map[string]any{"email": "ada@example.com", "email_verified": true}).Serialize()
		return tok
	}()
	cases := []struct {
		name  string
		tok   string
		want  error
		check func(Claims) bool
	}{
		{"person with a verified email", p.token(t, nil), nil, func(c Claims) bool { return c.Email == "ada@example.com" && c.ClientID == "" }},
		{"tenant claim", p.token(t, func(o *tokenOpts) { o.claims["vigil_tenant"] = "acme" }), nil, func(c Claims) bool { return c.Tenant == "acme" }},
		{"email_verified absent is not true", p.token(t, func(o *tokenOpts) { delete(o.claims, "email_verified") }), ErrInvalid, nil},
		{"email_verified false", p.token(t, func(o *tokenOpts) { o.claims["email_verified"] = false }), ErrInvalid, nil},
		{"email_verified as a string", p.token(t, func(o *tokenOpts) { o.claims["email_verified"] = "true" }), ErrInvalid, nil},
		{"another audience", p.token(t, func(o *tokenOpts) { o.std.Audience = jwt.Audience{"another-app"} }), ErrInvalid, nil},
		{"no audience", p.token(t, func(o *tokenOpts) { o.std.Audience = nil }), ErrInvalid, nil},
		{"another issuer", p.token(t, func(o *tokenOpts) { o.std.Issuer = "https://evil.example" }), ErrInvalid, nil},
		{"expired", p.token(t, func(o *tokenOpts) { o.std.Expiry = jwt.NewNumericDate(time.Now().Add(-time.Hour)) }), ErrInvalid, nil},
		{"no expiry", p.token(t, func(o *tokenOpts) { o.std.Expiry = nil }), ErrInvalid, nil},
		{"HMAC-signed", hmac, ErrInvalid, nil},
		{"service account by client_id", p.token(t, func(o *tokenOpts) { o.claims = map[string]any{"client_id": "ci-bot"}; o.std.Subject = "ci-bot-sub" }), nil,
			func(c Claims) bool { return c.ClientID == "ci-bot" && c.Email == "" }},
		{"service account by azp", p.token(t, func(o *tokenOpts) { o.claims = map[string]any{"azp": "ci-bot"} }), nil, func(c Claims) bool { return c.ClientID == "ci-bot" }},
		{"service account by sub", p.token(t, func(o *tokenOpts) { o.claims = map[string]any{}; o.std.Subject = "sub-bot" }), nil, func(c Claims) bool { return c.ClientID == "sub-bot" }},
		{"unconfigured client", p.token(t, func(o *tokenOpts) { o.claims = map[string]any{"client_id": "stranger"} }), ErrInvalid, nil},
		{"client_id names a configured client but sub is not it", p.token(t, func(o *tokenOpts) { o.claims = map[string]any{"client_id": "other"}; o.std.Subject = "ci-bot" }), ErrInvalid, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := v.Verify(context.Background(), tc.tok)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Verify = %+v, %v; want %v", c, err, tc.want)
				}
				return
			}
			if err != nil || !tc.check(c) {
				t.Fatalf("Verify = %+v, %v", c, err)
			}
		})
	}
}

func TestNewRequiresAudience(t *testing.T) {
	if _, err := New(Config{Issuer: "https://idp.example"}); err == nil {
		t.Fatal("an issuer without an audience was accepted")
	}
	if _, err := New(Config{Audience: "vigil"}); err == nil {
		t.Fatal("no issuer was accepted")
	}
}

// TestFetchOutlivesTheRequest is issue 14's reproduction: a client that
// hung up mid-fetch made every valid token fail for 30 s. The fetch now
// runs on its own context; the next token verifies with its result.
func TestFetchOutlivesTheRequest(t *testing.T) {
	p := newProvider(t)
	v, _ := newVerifier(t, p, nil)
	tok := p.token(t, nil)
	started, release := p.holdJWKS()
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { _, err := v.Verify(ctx, tok); errc <- err }()
	<-started
	cancel()
	if err := <-errc; !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("the hung-up request: %v", err)
	}
	release()
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("the next valid token: %v", err)
	}
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d JWKS fetches, want the one the first request started", n)
	}
}

// TestFailedFetchIsNotFresh: a failed fetch is "unavailable" (retry), not
// "invalid"; it is retried after a backoff, not after RefreshEvery, and
// not on every request meanwhile.
func TestFailedFetchIsNotFresh(t *testing.T) {
	p := newProvider(t)
	v, clk := newVerifier(t, p, func(c *Config) { c.RetryMin, c.RetryMax = time.Second, 4*time.Second })
	tok := p.token(t, nil)
	p.failing.Store(true)
	for range 3 {
		if _, err := v.Verify(context.Background(), tok); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalid) {
			t.Fatalf("while the provider fails: %v", err)
		}
	}
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches while backing off, want 1", n)
	}
	p.failing.Store(false)
	clk.add(5 * time.Second) // past the backoff, well within RefreshEvery
	if _, err := v.Verify(context.Background(), tok); err != nil {
		t.Fatalf("after the provider recovered: %v", err)
	}
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2", n)
	}
}

// TestUnknownKeyIsRateLimited: tokens naming unknown key ids cause at
// most one fetch per RefreshEvery.
func TestUnknownKeyIsRateLimited(t *testing.T) {
	p := newProvider(t)
	v, clk := newVerifier(t, p, nil)
	if _, err := v.Verify(context.Background(), p.token(t, nil)); err != nil {
		t.Fatal(err)
	}
	forged := p.token(t, func(o *tokenOpts) { o.kid = "rotated-or-forged" })
	for range 100 {
		if _, err := v.Verify(context.Background(), forged); !errors.Is(err, ErrInvalid) {
			t.Fatalf("unknown kid: %v", err)
		}
	}
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for 100 unknown-kid tokens within RefreshEvery, want 1", n)
	}
	clk.add(31 * time.Second)
	if _, err := v.Verify(context.Background(), forged); !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown kid: %v", err)
	}
	if n := p.hits.Load(); n != 2 {
		t.Fatalf("%d fetches after RefreshEvery, want 2", n)
	}
}

// TestColdStartSharesOneFetch: concurrent first requests share a fetch.
func TestColdStartSharesOneFetch(t *testing.T) {
	p := newProvider(t)
	v, _ := newVerifier(t, p, nil)
	tok := p.token(t, nil)
	started, release := p.holdJWKS()
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() { defer wg.Done(); _, err := v.Verify(context.Background(), tok); errs <- err }()
	}
	<-started
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := p.hits.Load(); n != 1 {
		t.Fatalf("%d fetches for 50 concurrent first requests, want 1", n)
	}
}

func TestParseServiceAccounts(t *testing.T) {
	cases := []struct {
		in   string
		want map[string]ServiceAccount
		ok   bool
	}{
		{"", map[string]ServiceAccount{}, true},
		{"ci=acme:admin, etl=globex:viewer", map[string]ServiceAccount{"ci": {"acme", "admin"}, "etl": {"globex", "viewer"}}, true},
		{"ci=acme", nil, false},
		{"=acme:admin", nil, false},
		{"ci=acme:admin,ci=globex:viewer", nil, false},
	}
	for _, tc := range cases {
		got, err := ParseServiceAccounts(tc.in)
		if (err == nil) != tc.ok || (tc.ok && len(got) != len(tc.want)) {
			t.Errorf("ParseServiceAccounts(%q) = %v, %v", tc.in, got, err)
		}
		for k, w := range tc.want {
			if got[k] != w {
				t.Errorf("ParseServiceAccounts(%q)[%s] = %v, want %v", tc.in, k, got[k], w)
			}
		}
	}
}

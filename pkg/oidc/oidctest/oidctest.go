// Package oidctest runs an OpenID Connect provider inside a test, over
// real HTTP: discovery, a JWKS, RS256-signed tokens minted on demand, and
// the authorization code flow with PKCE — /authorize consents at once for
// the person the test signs in as and redirects back with a code; /token
// checks the code (single use, same client and redirect URI, unexpired)
// and its PKCE verifier against the S256 challenge before it issues an
// ID token carrying the request's nonce.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Options configure a provider.
type Options struct {
	// ClientID is the only client the provider knows (default "vigil").
	ClientID string
	// Host is the host name of the issuer URL (default 127.0.0.1); a
	// browser test names it "localhost" so that the provider is another
	// site than a console on 127.0.0.1, as a real provider is.
	Host string
}

// Person is whom /authorize signs in.
type Person struct {
	Email   string
	Subject string // default "sub-" + Email
	Name    string
}

// Provider is a running provider.
type Provider struct {
	// Issuer is the provider's URL and the tokens' "iss".
	Issuer   string
	ClientID string

	srv    *httptest.Server
	signer jose.Signer

	mu     sync.Mutex
	person Person
	codes  map[string]grant
	// denial, when set, is the error /authorize answers with.
	denial string
	// tamper changes the claims of the ID tokens /token issues.
	tamper func(std *jwt.Claims, claims map[string]any)

	// Exchanges counts token requests; Redeemed counts codes exchanged.
	Exchanges, Redeemed atomic.Int64
}

type grant struct {
	clientID, redirectURI, challenge, nonce string
	person                                  Person
	expires                                 time.Time
}

// New starts a provider; it stops at the test's cleanup.
func New(t testing.TB, o Options) *Provider {
	t.Helper()
	if o.ClientID == "" {
		o.ClientID = "vigil"
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p := &Provider{ClientID: o.ClientID, codes: map[string]grant{}}
	p.signer, err = jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: priv, KeyID: "k1"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{
			"issuer": p.Issuer, "jwks_uri": p.Issuer + "/jwks",
			"authorization_endpoint": p.Issuer + "/authorize", "token_endpoint": p.Issuer + "/token",
			"response_types_supported": []string{"code"}, "code_challenge_methods_supported": []string{"S256"},
			"id_token_signing_alg_values_supported": []string{"RS256"},
		})
	})
	mux.HandleFunc("GET /jwks", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &priv.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("GET /authorize", p.authorize)
	mux.HandleFunc("POST /token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	_, port, _ := net.SplitHostPort(p.srv.Listener.Addr().String())
	p.Issuer = "http://" + net.JoinHostPort(o.Host, port)
	return p
}

// SignInAs makes /authorize sign in person from now on.
func (p *Provider) SignInAs(person Person) {
	if person.Subject == "" {
		person.Subject = "sub-" + person.Email
	}
	p.mu.Lock()
	p.person, p.denial = person, ""
	p.mu.Unlock()
}

// Deny makes /authorize answer with the OAuth error code (such as
// "access_denied") until the next SignInAs.
func (p *Provider) Deny(code string) {
	p.mu.Lock()
	p.denial = code
	p.mu.Unlock()
}

// Tamper makes /token issue ID tokens whose claims f changed (another
// audience, another nonce, an expired token); nil stops it.
func (p *Provider) Tamper(f func(std *jwt.Claims, claims map[string]any)) {
	p.mu.Lock()
	p.tamper = f
	p.mu.Unlock()
}

// Token mints an ID token for email (empty: a client-credentials token
// whose claims come from extra) issued by issuer (empty: the provider),
// valid for ttl (negative: already expired), for audience (empty: the
// client id); extra claims are added, a nil value removes one.
func (p *Provider) Token(t testing.TB, issuer, email string, ttl time.Duration, extra map[string]any) string {
	t.Helper()
	if issuer == "" {
		issuer = p.Issuer
	}
	now := time.Now()
	std := jwt.Claims{Issuer: issuer, Subject: "sub-" + email, Audience: jwt.Audience{p.ClientID}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(ttl))}
	claims := map[string]any{}
	if email != "" {
		claims["email"], claims["email_verified"] = email, true
	}
	for k, v := range extra {
		if v == nil {
			delete(claims, k)
			continue
		}
		claims[k] = v
	}
	tok, err := p.sign(std, claims)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (p *Provider) sign(std jwt.Claims, claims map[string]any) (string, error) {
	return jwt.Signed(p.signer).Claims(std).Claims(claims).Serialize()
}

// authorize consents at once: it checks the request as a provider does
// (known client, a redirect URI, a code, an S256 challenge) and redirects
// back with a code bound to all of it.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	redirect, err := url.Parse(q.Get("redirect_uri"))
	if err != nil || redirect.Host == "" || q.Get("client_id") != p.ClientID {
		// Never redirect to an unverified URI: answer here.
		http.Error(w, "unknown client or bad redirect_uri", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		params.Set("state", q.Get("state"))
		params.Set("iss", p.Issuer)
		u := *redirect
		u.RawQuery = params.Encode()
		http.Redirect(w, r, u.String(), http.StatusFound)
	}
	p.mu.Lock()
	person, denial := p.person, p.denial
	p.mu.Unlock()
	switch {
	case denial != "":
		back(url.Values{"error": {denial}, "error_description": {"the provider refused the sign-in"}})
		return
	case q.Get("response_type") != "code" || q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "" || q.Get("state") == "":
		back(url.Values{"error": {"invalid_request"}, "error_description": {"code flow with an S256 PKCE challenge and a state required"}})
		return
	case person.Email == "":
		back(url.Values{"error": {"login_required"}})
		return
	}
	code := random()
	p.mu.Lock()
	p.codes[code] = grant{clientID: p.ClientID, redirectURI: redirect.String(), challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), person: person, expires: time.Now().Add(time.Minute)}
	p.mu.Unlock()
	back(url.Values{"code": {code}})
}

// token exchanges a code: once, for the client and redirect URI it was
// issued to, with the verifier whose S256 hash is the challenge.
func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	p.Exchanges.Add(1)
	if err := r.ParseForm(); err != nil {
		oauthError(w, "invalid_request", "bad form")
		return
	}
	clientID := r.PostForm.Get("client_id")
	if id, _, ok := r.BasicAuth(); ok {
		clientID, _ = url.QueryUnescape(id)
	}
	code := r.PostForm.Get("code")
	p.mu.Lock()
	g, found := p.codes[code]
	delete(p.codes, code) // single use, whatever happens next
	tamper := p.tamper
	p.mu.Unlock()
	sum := sha256.Sum256([]byte(r.PostForm.Get("code_verifier")))
	switch {
	case r.PostForm.Get("grant_type") != "authorization_code":
		oauthError(w, "unsupported_grant_type", "")
		return
	case !found || time.Now().After(g.expires):
		oauthError(w, "invalid_grant", "unknown, used or expired code")
		return
	case clientID != g.clientID || r.PostForm.Get("redirect_uri") != g.redirectURI:
		oauthError(w, "invalid_grant", "client or redirect_uri differs from the authorization request")
		return
	case subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(g.challenge)) != 1:
		oauthError(w, "invalid_grant", "PKCE verification failed")
		return
	}
	now := time.Now()
	std := jwt.Claims{Issuer: p.Issuer, Subject: g.person.Subject, Audience: jwt.Audience{g.clientID}, IssuedAt: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}
	claims := map[string]any{"email": g.person.Email, "email_verified": true, "azp": g.clientID}
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	if g.person.Name != "" {
		claims["name"] = g.person.Name
	}
	if tamper != nil {
		tamper(&std, claims)
	}
	id, err := p.sign(std, claims)
	if err != nil {
		oauthError(w, "server_error", err.Error())
		return
	}
	p.Redeemed.Add(1)
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, map[string]any{"access_token": random(), "token_type": "Bearer", "expires_in": 3600, "id_token": id})
}

func oauthError(w http.ResponseWriter, code, desc string) {
	writeJSON(w, http.StatusBadRequest, map[string]string{"error": code, "error_description": desc})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func random() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

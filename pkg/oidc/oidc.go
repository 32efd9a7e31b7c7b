// Package oidc verifies ID and access tokens issued by the OpenID Connect
// provider a deployment configures, against the provider's published
// signing keys (JWKS). It is how console members sign in, and how machine
// clients holding OAuth client-credentials tokens act as a configured
// service account; API keys stay the credential of agents and automation.
package oidc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v4"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Config names the provider.
type Config struct {
	// Issuer must equal the tokens' "iss" claim.
	Issuer string
	// Audience must be among the tokens' "aud"; required, so that a token
	// the same provider issued for another application is not accepted.
	Audience string
	// JWKSURL is where the signing keys are published; empty: discovered
	// from Issuer + "/.well-known/openid-configuration".
	JWKSURL string
	// TenantClaim, if set, names a claim carrying the tenant the member
	// signs in to (besides the x-tenant-id header).
	TenantClaim string
	// ServiceAccounts maps OAuth clients to the principal their
	// client-credentials tokens act as. Such a token carries no email; it
	// is matched by its "client_id" claim, else "azp", else "sub".
	ServiceAccounts map[string]ServiceAccount
	// Leeway tolerates clock skew on exp/nbf/iat.
	Leeway time.Duration
	// HTTP fetches discovery and keys; nil uses a client with a 10 s timeout.
	HTTP *http.Client
	// RefreshEvery is the least time between two key set fetches caused by
	// tokens naming an unknown key (default 30 s).
	RefreshEvery time.Duration
	// FetchTimeout bounds one fetch of discovery and keys (default 10 s).
	FetchTimeout time.Duration
	// RetryMin and RetryMax bound the exponential backoff after a failed
	// fetch (defaults 1 s and 1 min).
	RetryMin, RetryMax time.Duration
}

// ServiceAccount is the principal a machine client acts as.
type ServiceAccount struct {
	Tenant string
	Role   string
}

// ParseServiceAccounts parses "client=tenant:role" entries separated by
// commas or spaces, as given in configuration.
func ParseServiceAccounts(s string) (map[string]ServiceAccount, error) {
	out := map[string]ServiceAccount{}
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		client, rest, ok1 := strings.Cut(f, "=")
		tenant, role, ok2 := strings.Cut(rest, ":")
		if !ok1 || !ok2 || client == "" || tenant == "" || role == "" {
			return nil, fmt.Errorf("oidc: service account %q is not client=tenant:role", f)
		}
		if _, dup := out[client]; dup {
			return nil, fmt.Errorf("oidc: service account %q is listed twice", client)
		}
		out[client] = ServiceAccount{Tenant: tenant, Role: role}
	}
	return out, nil
}

// Claims are what Vigil uses from a verified token.
type Claims struct {
	Subject string
	Email   string
	Name    string
	// Tenant is the TenantClaim's value, or "".
	Tenant string
	// ClientID is set, instead of Email, for a service account's token.
	ClientID string
	// Nonce is the token's "nonce" claim: a relying party that sent one in
	// its authorization request (the console's sign-in) compares it.
	Nonce string
	// Expires is the token's expiry.
	Expires time.Time
}

// ErrInvalid is returned (wrapped) for any token that does not verify.
var ErrInvalid = errors.New("invalid token")

// ErrUnavailable is returned (wrapped) when the provider's keys could not
// be fetched: the token may be fine, so the answer is "retry", never
// "invalid".
var ErrUnavailable = errors.New("identity provider unavailable")

// algorithms are the signature algorithms accepted; "none" and HMAC are
// not, so a token cannot be forged with a public key as the HMAC secret.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA}

// Verifier checks tokens. It fetches the provider's keys lazily and again
// when a token names a key it has not seen (key rotation), at most once
// per RefreshEvery. A fetch runs detached from the request that caused it
// (a client hanging up does not abort it), concurrent requests share it,
// and a failed fetch is retried with exponential backoff without ever
// counting as a fresh key set.
type Verifier struct {
	cfg Config
	now func() time.Time

	mu       sync.Mutex
	keys     jose.JSONWebKeySet
	okAt     time.Time // last successful fetch
	retryAt  time.Time // no fetch before this, after a failure
	lastErr  error     // the last fetch's failure
	backoff  *backoff.ExponentialBackOff
	inflight chan struct{} // closed when the running fetch ends
	jwksURL  string

	eps endpoints // discovery.go
}

// New returns a verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("oidc: issuer is required")
	}
	if cfg.Audience == "" {
		return nil, errors.New("oidc: an audience is required with an issuer (the client id Vigil's tokens are issued for)")
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = time.Minute
	}
	if cfg.RefreshEvery == 0 {
		cfg.RefreshEvery = 30 * time.Second
	}
	if cfg.FetchTimeout == 0 {
		cfg.FetchTimeout = 10 * time.Second
	}
	if cfg.RetryMin == 0 {
		cfg.RetryMin = time.Second
	}
	if cfg.RetryMax == 0 {
		cfg.RetryMax = time.Minute
	}
	bo := backoff.NewExponentialBackOff()
	bo.InitialInterval, bo.MaxInterval, bo.MaxElapsedTime = cfg.RetryMin, cfg.RetryMax, 0
	bo.Reset()
	return &Verifier{cfg: cfg, now: time.Now, jwksURL: cfg.JWKSURL, backoff: bo}, nil
}

// ServiceAccount returns the principal a client id acts as.
func (v *Verifier) ServiceAccount(clientID string) (ServiceAccount, bool) {
	sa, ok := v.cfg.ServiceAccounts[clientID]
	return sa, ok
}

// LooksLikeJWT reports whether token has the three-part compact shape, so
// callers can route it here rather than to API-key lookup.
func LooksLikeJWT(token string) bool { return strings.Count(token, ".") == 2 }

// Verify checks raw's signature, issuer, audience and validity window and
// returns its claims. A person's token must carry an email with
// email_verified true; a token without email must be a configured service
// account's. Errors wrap ErrInvalid or ErrUnavailable.
func (v *Verifier) Verify(ctx context.Context, raw string) (Claims, error) {
	tok, err := jwt.ParseSigned(raw, algorithms)
	if err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if len(tok.Headers) != 1 {
		return Claims{}, fmt.Errorf("%w: expected one signature", ErrInvalid)
	}
	key, err := v.key(ctx, tok.Headers[0].KeyID)
	if err != nil {
		return Claims{}, err
	}
	var std jwt.Claims
	custom := map[string]any{}
	if err := tok.Claims(key.Key, &std, &custom); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	exp := jwt.Expected{Issuer: v.cfg.Issuer, AnyAudience: jwt.Audience{v.cfg.Audience}, Time: v.now()}
	if err := std.ValidateWithLeeway(exp, v.cfg.Leeway); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if std.Expiry == nil {
		return Claims{}, fmt.Errorf("%w: token has no expiry", ErrInvalid)
	}
	c := Claims{Subject: std.Subject, Expires: std.Expiry.Time()}
	c.Email, _ = custom["email"].(string)
	c.Name, _ = custom["name"].(string)
	c.Nonce, _ = custom["nonce"].(string)
	if v.cfg.TenantClaim != "" {
		c.Tenant, _ = custom[v.cfg.TenantClaim].(string)
	}
	if c.Email == "" {
		// A client-credentials token: it names a client, not a person.
		for _, claim := range []string{"client_id", "azp"} {
			if id, _ := custom[claim].(string); id != "" {
				c.ClientID = id
				break
			}
		}
		if c.ClientID == "" {
			c.ClientID = std.Subject
		}
		if _, ok := v.cfg.ServiceAccounts[c.ClientID]; !ok || c.ClientID == "" {
			return Claims{}, fmt.Errorf("%w: token carries no email and names no configured service account", ErrInvalid)
		}
		return c, nil
	}
	// Absent is not true: an unverified address must never bind to an
	// invitation someone else sent to it.
	if verified, _ := custom["email_verified"].(bool); !verified {
		return Claims{}, fmt.Errorf("%w: email_verified is not true", ErrInvalid)
	}
	return c, nil
}

// key returns the signing key kid, fetching the key set when it is not
// known yet (see Verifier).
func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	waited := false
	for {
		v.mu.Lock()
		if k, ok := v.find(kid); ok {
			v.mu.Unlock()
			return k, nil
		}
		if ch := v.inflight; ch != nil {
			v.mu.Unlock()
			select {
			case <-ch:
				waited = true
				continue
			case <-ctx.Done():
				return jose.JSONWebKey{}, fmt.Errorf("%w: gave up waiting for the signing keys: %w", ErrUnavailable, ctx.Err())
			}
		}
		now := v.now()
		switch {
		case waited && v.lastErr != nil, now.Before(v.retryAt):
			err := v.lastErr
			v.mu.Unlock()
			return jose.JSONWebKey{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
		case waited, !v.okAt.IsZero() && now.Sub(v.okAt) < v.cfg.RefreshEvery:
			v.mu.Unlock()
			return jose.JSONWebKey{}, fmt.Errorf("%w: unknown signing key %q", ErrInvalid, kid)
		}
		ch := make(chan struct{})
		v.inflight = ch
		v.mu.Unlock()
		go v.fetch(ch)
	}
}

// fetch downloads the key set on a context of its own and records the
// outcome: a success replaces the keys, a failure only schedules a retry.
func (v *Verifier) fetch(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), v.cfg.FetchTimeout)
	defer cancel()
	v.mu.Lock()
	url := v.jwksURL
	v.mu.Unlock()
	set, url, err := v.download(ctx, url)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err == nil {
		v.keys, v.jwksURL, v.okAt, v.retryAt, v.lastErr = set, url, v.now(), time.Time{}, nil
		v.backoff.Reset()
	} else {
		v.lastErr, v.retryAt = err, v.now().Add(v.backoff.NextBackOff())
	}
	v.inflight = nil
	close(done)
}

func (v *Verifier) find(kid string) (jose.JSONWebKey, bool) {
	var match []jose.JSONWebKey
	if kid != "" {
		match = v.keys.Key(kid)
	} else if len(v.keys.Keys) == 1 {
		match = v.keys.Keys
	}
	for _, k := range match {
		if k.Use == "" || k.Use == "sig" {
			return k, true
		}
	}
	return jose.JSONWebKey{}, false
}

// download reads the key set, discovering its URL first when url is empty.
func (v *Verifier) download(ctx context.Context, url string) (jose.JSONWebKeySet, string, error) {
	var set jose.JSONWebKeySet
	if url == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, strings.TrimSuffix(v.cfg.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
			return set, "", err
		}
		if doc.Issuer != v.cfg.Issuer || doc.JWKSURI == "" {
			return set, "", fmt.Errorf("oidc discovery: issuer %q / jwks_uri %q do not match the configured issuer", doc.Issuer, doc.JWKSURI)
		}
		url = doc.JWKSURI
	}
	if err := v.getJSON(ctx, url, &set); err != nil {
		return set, "", err
	}
	return set, url, nil
}
func (v *Verifier) getJSON(ctx context.Context, url string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("oidc: %w", err)
	}
	resp, err := v.cfg.HTTP.Do(req)
	if err != nil {
		return fmt.Errorf("oidc: fetch %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oidc: fetch %s: status %d", url, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("oidc: decode %s: %w", url, err)
	}
	return nil
}

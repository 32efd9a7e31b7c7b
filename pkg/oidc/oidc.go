// Package oidc verifies ID and access tokens issued by the OpenID Connect
// provider a deployment configures, against the provider's published
// signing keys (JWKS). It is how console members sign in; API keys stay
// the credential of agents and automation.
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

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Config names the provider.
type Config struct {
	// Issuer must equal the tokens' "iss" claim.
	Issuer string
	// Audience, if set, must be among the tokens' "aud".
	Audience string
	// JWKSURL is where the signing keys are published; empty: discovered
	// from Issuer + "/.well-known/openid-configuration".
	JWKSURL string
	// TenantClaim, if set, names a claim carrying the tenant the member
	// signs in to; needed only when one email is a member of several
	// tenants.
	TenantClaim string
	// Leeway tolerates clock skew on exp/nbf/iat.
	Leeway time.Duration
	// HTTP fetches discovery and keys; nil uses a client with a 10 s timeout.
	HTTP *http.Client
}

// Claims are what Vigil uses from a verified token.
type Claims struct {
	Subject string
	Email   string
	Name    string
	// Tenant is the TenantClaim's value, or "".
	Tenant string
}

// ErrInvalid is returned (wrapped) for any token that does not verify.
var ErrInvalid = errors.New("invalid token")

// algorithms are the signature algorithms accepted; "none" and HMAC are
// not, so a token cannot be forged with a public key as the HMAC secret.
var algorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.ES256, jose.ES384, jose.EdDSA}

// Verifier checks tokens. It fetches the provider's keys lazily and again
// when a token names a key it has not seen (key rotation), at most once
// per refreshEvery.
type Verifier struct {
	cfg          Config
	refreshEvery time.Duration

	mu      sync.Mutex
	keys    jose.JSONWebKeySet
	fetched time.Time
	jwksURL string
}

// New returns a verifier for cfg.
func New(cfg Config) (*Verifier, error) {
	if cfg.Issuer == "" {
		return nil, errors.New("oidc: issuer is required")
	}
	if cfg.HTTP == nil {
		cfg.HTTP = &http.Client{Timeout: 10 * time.Second}
	}
	if cfg.Leeway == 0 {
		cfg.Leeway = time.Minute
	}
	return &Verifier{cfg: cfg, refreshEvery: 30 * time.Second, jwksURL: cfg.JWKSURL}, nil
}

// LooksLikeJWT reports whether token has the three-part compact shape, so
// callers can route it here rather than to API-key lookup.
func LooksLikeJWT(token string) bool { return strings.Count(token, ".") == 2 }

// Verify checks raw's signature, issuer, audience and validity window and
// returns its claims. Errors wrap ErrInvalid, or report that the provider
// could not be reached.
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
	exp := jwt.Expected{Issuer: v.cfg.Issuer, Time: time.Now()}
	if v.cfg.Audience != "" {
		exp.AnyAudience = jwt.Audience{v.cfg.Audience}
	}
	if err := std.ValidateWithLeeway(exp, v.cfg.Leeway); err != nil {
		return Claims{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if std.Expiry == nil {
		return Claims{}, fmt.Errorf("%w: token has no expiry", ErrInvalid)
	}
	c := Claims{Subject: std.Subject}
	c.Email, _ = custom["email"].(string)
	c.Name, _ = custom["name"].(string)
	if verified, ok := custom["email_verified"].(bool); ok && !verified {
		return Claims{}, fmt.Errorf("%w: email is not verified", ErrInvalid)
	}
	if v.cfg.TenantClaim != "" {
		c.Tenant, _ = custom[v.cfg.TenantClaim].(string)
	}
	if c.Email == "" {
		return Claims{}, fmt.Errorf("%w: token carries no email", ErrInvalid)
	}
	return c, nil
}

// key returns the signing key kid, refreshing the key set if it is not
// known yet.
func (v *Verifier) key(ctx context.Context, kid string) (jose.JSONWebKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if k, ok := v.find(kid); ok {
		return k, nil
	}
	if !v.fetched.IsZero() && time.Since(v.fetched) < v.refreshEvery {
		return jose.JSONWebKey{}, fmt.Errorf("%w: unknown signing key %q", ErrInvalid, kid)
	}
	if err := v.refresh(ctx); err != nil {
		return jose.JSONWebKey{}, err
	}
	if k, ok := v.find(kid); ok {
		return k, nil
	}
	return jose.JSONWebKey{}, fmt.Errorf("%w: unknown signing key %q", ErrInvalid, kid)
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

func (v *Verifier) refresh(ctx context.Context) error {
	v.fetched = time.Now()
	if v.jwksURL == "" {
		var doc struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := v.getJSON(ctx, strings.TrimSuffix(v.cfg.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
			return err
		}
		if doc.Issuer != v.cfg.Issuer || doc.JWKSURI == "" {
			return fmt.Errorf("oidc discovery: issuer %q / jwks_uri %q do not match the configured issuer", doc.Issuer, doc.JWKSURI)
		}
		v.jwksURL = doc.JWKSURI
	}
	var set jose.JSONWebKeySet
	if err := v.getJSON(ctx, v.jwksURL, &set); err != nil {
		return err
	}
	v.keys = set
	return nil
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

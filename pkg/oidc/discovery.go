package oidc

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// Endpoints are the provider's OAuth endpoints a relying party that signs
// people in (the console) needs, read from the discovery document.
type Endpoints struct {
	Authorization string
	Token         string
}

// Issuer is the configured issuer.
func (v *Verifier) Issuer() string { return v.cfg.Issuer }

// Audience is the audience tokens must carry: the client id the console
// signs people in as.
func (v *Verifier) Audience() string { return v.cfg.Audience }

// endpoints caches a successful discovery (a failed one is retried on the
// next call: sign-in is rare and the provider may come back).
type endpoints struct {
	mu  sync.Mutex
	got *Endpoints
}

// Endpoints returns the provider's authorization and token endpoints from
// its discovery document, which must name the configured issuer.
func (v *Verifier) Endpoints(ctx context.Context) (Endpoints, error) {
	v.eps.mu.Lock()
	defer v.eps.mu.Unlock()
	if v.eps.got != nil {
		return *v.eps.got, nil
	}
	ctx, cancel := context.WithTimeout(ctx, v.cfg.FetchTimeout)
	defer cancel()
	var doc struct {
		Issuer        string   `json:"issuer"`
		Authorization string   `json:"authorization_endpoint"`
		Token         string   `json:"token_endpoint"`
		PKCE          []string `json:"code_challenge_methods_supported"`
	}
	if err := v.getJSON(ctx, strings.TrimSuffix(v.cfg.Issuer, "/")+"/.well-known/openid-configuration", &doc); err != nil {
		return Endpoints{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	if doc.Issuer != v.cfg.Issuer {
		return Endpoints{}, fmt.Errorf("%w: discovery names issuer %q, not %q", ErrUnavailable, doc.Issuer, v.cfg.Issuer)
	}
	for _, u := range []string{doc.Authorization, doc.Token} {
		if p, err := url.Parse(u); err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" {
			return Endpoints{}, fmt.Errorf("%w: discovery has no usable authorization_endpoint/token_endpoint (%q, %q)", ErrUnavailable, doc.Authorization, doc.Token)
		}
	}
	// A provider that lists its PKCE methods must list S256: plain would
	// send the verifier itself through the browser.
	if len(doc.PKCE) > 0 && !slices.Contains(doc.PKCE, "S256") {
		return Endpoints{}, fmt.Errorf("%w: the provider does not support PKCE S256 (it lists %v)", ErrUnavailable, doc.PKCE)
	}
	e := Endpoints{Authorization: doc.Authorization, Token: doc.Token}
	v.eps.got = &e
	return e, nil
}

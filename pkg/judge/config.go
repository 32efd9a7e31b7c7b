// Package judge is Vigil's LLM judge: a second opinion on flagged verdicts
// (warn, anomaly) from an OpenAI-compatible chat completions endpoint the
// tenant configures. It holds the tenant's configuration (the API key
// sealed with AES-GCM under a deployment key, never returned), the
// client, the prompt, the daily token budget and the judgement that
// amends a verdict.
//
// The judge never sits on the decision path: the policy service runs it
// asynchronously on recorded verdicts, with a per-call timeout, and any
// failure leaves the verdict as it was.
package judge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/ssrf"
)

// Deployment is the judge's deployment-wide configuration.
type Deployment struct {
	// SealSecret (32 bytes or more) seals tenants' LLM API keys at rest.
	// Required by the services that seal or open them (api, policy); it
	// comes from a file or the environment, never from NATS.
	SealSecret []byte
	// Allow lists CIDRs the judge may reach although the SSRF guard
	// refuses them by default (a self-hosted model on the private
	// network; tests allow loopback).
	Allow []netip.Prefix
}

// Guard returns the SSRF guard for this deployment.
func (d Deployment) Guard() *ssrf.Guard { return ssrf.New(d.Allow) }

// NewBox returns the box that seals LLM API keys under secret.
func NewBox(secret []byte) (*secretbox.Box, error) { return secretbox.New(secret, "llm-api-key") }

// Limits on configuration values.
const (
	MaxBaseURLBytes = 2048
	MaxModelBytes   = 200
	MaxAPIKeyBytes  = 4096
	MaxDailyBudget  = 1_000_000_000
	// DefaultDailyBudget applies when a configuration does not set one.
	DefaultDailyBudget = 200_000
	// DefaultThreshold applies when a configuration does not set one.
	DefaultThreshold = 0.7
)

// ConfigRecord is a tenant's judge configuration as stored on CONTROL.
type ConfigRecord struct {
	Tenant  string `json:"tenant"`
	BaseURL string `json:"baseUrl"`
	Model   string `json:"model"`
	// SealedKey is the API key sealed with AES-GCM, bound to the tenant;
	// "" when the endpoint needs none.
	SealedKey string `json:"sealedKey,omitempty"`
	// KeyHint is the key's last four characters (for keys of 12 or more),
	// so a human can tell which key is set.
	KeyHint string `json:"keyHint,omitempty"`
	// Provider names the endpoint's vendor when the configuration gave
	// one (or took its default base URL).
	Provider            string    `json:"provider,omitempty"`
	DailyTokenBudget    int64     `json:"dailyTokenBudget"`
	ConfidenceThreshold float64   `json:"confidenceThreshold"`
	UpdatedAt           time.Time `json:"updatedAt"`
	By                  string    `json:"by,omitempty"`
}

// sealAD binds a sealed key to its tenant: copied onto another tenant's
// record it does not open.
func sealAD(tenant string) string { return "llm-config/" + tenant }

// OpenKey returns the record's API key in clear.
func (r ConfigRecord) OpenKey(box *secretbox.Box) (string, error) {
	if r.SealedKey == "" {
		return "", nil
	}
	k, err := box.Open(r.SealedKey, sealAD(r.Tenant))
	if err != nil {
		return "", fmt.Errorf("judge: open api key: %w", err)
	}
	return string(k), nil
}

// Hint is what may be shown of an API key.
func Hint(key string) string {
	if len(key) < 12 {
		return ""
	}
	return "…" + key[len(key)-4:]
}

// ProviderURLs are the OpenAI-compatible chat completions endpoints of
// the providers a configuration may name instead of a base URL.
var ProviderURLs = map[string]string{
	"openai":     "https://api.openai.com/v1",
	"anthropic":  "https://api.anthropic.com/v1",
	"groq":       "https://api.groq.com/openai/v1",
	"mistral":    "https://api.mistral.ai/v1",
	"openrouter": "https://openrouter.ai/api/v1",
	"together":   "https://api.together.xyz/v1",
	"deepseek":   "https://api.deepseek.com/v1",
}

// snakeNames are the Kaizen (snake_case) spellings of Update's fields.
var snakeNames = map[string]string{
	"base_url": "baseUrl", "api_key": "apiKey", "daily_token_budget": "dailyTokenBudget", "confidence_threshold": "confidenceThreshold",
}

// UpdateFields are the field names a POST /v1/llm-config body may use,
// in either spelling.
var UpdateFields = []string{"provider", "baseUrl", "model", "apiKey", "dailyTokenBudget", "confidenceThreshold",
	"base_url", "api_key", "daily_token_budget", "confidence_threshold"}

// Update is a POST /v1/llm-config body. Absent fields keep their value;
// apiKey "" removes the key. Each field may also be spelled in
// snake_case (Kaizen's documents: daily_token_budget, …).
type Update struct {
	// Provider selects a default base URL (ProviderURLs) when baseUrl is
	// absent.
	Provider            *string  `json:"provider"`
	BaseURL             *string  `json:"baseUrl"`
	Model               *string  `json:"model"`
	APIKey              *string  `json:"apiKey"`
	DailyTokenBudget    *int64   `json:"dailyTokenBudget"`
	ConfidenceThreshold *float64 `json:"confidenceThreshold"`
}

// Resolver resolves host names for the SSRF check.
type Resolver = ssrf.Resolver

// Apply validates body and applies it to cur (the zero record for a
// first configuration), sealing a new key with box. Every invalid field
// is reported, with its path.
func Apply(ctx context.Context, cur ConfigRecord, body []byte, box *secretbox.Box, guard *ssrf.Guard, res Resolver) (ConfigRecord, error) {
	body, err := camelCase(body)
	if err != nil {
		return cur, err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var u Update
	if err := dec.Decode(&u); err != nil {
		return cur, apperr.Validation("body must be a JSON object with provider, baseUrl, model, apiKey, dailyTokenBudget, confidenceThreshold",
			apperr.FieldError{Path: "", Code: "invalid_type", Message: err.Error()})
	}
	var errs []apperr.FieldError
	add := func(path, code, format string, args ...any) {
		errs = append(errs, apperr.FieldError{Path: path, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	next := cur
	if u.Model != nil {
		next.Model = strings.TrimSpace(*u.Model)
	}
	defaultURL := false
	switch {
	case u.BaseURL != nil:
		next.BaseURL = strings.TrimRight(strings.TrimSpace(*u.BaseURL), "/")
		if u.Provider == nil {
			next.Provider = ""
		}
	case u.Provider != nil || cur.BaseURL == "":
		// No base URL: the named provider's, or for a first configuration
		// naming none, the one its model implies.
		p := inferProvider(next.Model)
		if u.Provider != nil {
			p = *u.Provider
		}
		url, ok := ProviderURLs[p]
		if !ok {
			add("provider", "invalid_format", "provider must be one of %s, or give baseUrl", strings.Join(providerNames(), ", "))
			break
		}
		next.BaseURL, next.Provider, defaultURL = url, p, true
	}
	if u.Provider != nil && u.BaseURL != nil {
		if _, ok := ProviderURLs[*u.Provider]; !ok {
			add("provider", "invalid_format", "provider must be one of %s", strings.Join(providerNames(), ", "))
		}
		next.Provider = *u.Provider
	}
	if u.DailyTokenBudget != nil {
		next.DailyTokenBudget = *u.DailyTokenBudget
	} else if cur.BaseURL == "" {
		next.DailyTokenBudget = DefaultDailyBudget
	}
	if u.ConfidenceThreshold != nil {
		next.ConfidenceThreshold = *u.ConfidenceThreshold
	} else if cur.BaseURL == "" {
		next.ConfidenceThreshold = DefaultThreshold
	}
	switch {
	case next.BaseURL == "":
		if u.Provider == nil {
			add("baseUrl", "required", "baseUrl (or a provider) is required")
		}
	case len(next.BaseURL) > MaxBaseURLBytes:
		add("baseUrl", "too_long", "baseUrl must be at most %d bytes", MaxBaseURLBytes)
	case defaultURL:
		// A provider's public endpoint, fixed in the code: nothing to
		// resolve ahead. The judge's client dials through the guard all
		// the same, so a resolver answering a private address is still
		// refused at connection time.
	default:
		if err := checkURL(ctx, next.BaseURL, guard, res); err != nil {
			add("baseUrl", "invalid_format", "%s", err.Error())
		}
	}
	switch {
	case next.Model == "":
		add("model", "required", "model is required")
	case len(next.Model) > MaxModelBytes:
		add("model", "too_long", "model must be at most %d bytes", MaxModelBytes)
	}
	if next.DailyTokenBudget < 0 || next.DailyTokenBudget > MaxDailyBudget {
		add("dailyTokenBudget", "out_of_range", "dailyTokenBudget must be 0-%d (0 stops the judge)", MaxDailyBudget)
	}
	if next.ConfidenceThreshold < 0 || next.ConfidenceThreshold > 1 {
		add("confidenceThreshold", "out_of_range", "confidenceThreshold must be between 0 and 1")
	}
	if u.APIKey != nil {
		k := *u.APIKey
		switch {
		case len(k) > MaxAPIKeyBytes:
			add("apiKey", "too_long", "apiKey must be at most %d bytes", MaxAPIKeyBytes)
		case strings.ContainsAny(k, "\r\n"):
			add("apiKey", "invalid_format", "apiKey must be one line")
		case k == "":
			next.SealedKey, next.KeyHint = "", ""
		default:
			next.SealedKey, next.KeyHint = box.Seal([]byte(k), sealAD(cur.Tenant)), Hint(k)
		}
	}
	if len(errs) > 0 {
		return cur, apperr.Validation("llm config failed validation", errs...)
	}
	return next, nil
}

// camelCase renames the snake_case spellings of body's top-level fields
// to Update's; a field given in both spellings is a validation error.
func camelCase(body []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(body, &fields) != nil || fields == nil {
		return body, nil // the strict decode reports it
	}
	renamed := false
	for snake, camel := range snakeNames {
		raw, ok := fields[snake]
		if !ok {
			continue
		}
		if _, both := fields[camel]; both {
			return nil, apperr.Validation("a field is given twice", apperr.FieldError{Path: snake, Code: "duplicate", Message: fmt.Sprintf("give %s or %s, not both", snake, camel)})
		}
		fields[camel] = raw
		delete(fields, snake)
		renamed = true
	}
	if !renamed {
		return body, nil
	}
	return json.Marshal(fields)
}

// inferProvider is the provider a first configuration without a base URL
// or provider means: Anthropic for Claude models, OpenAI otherwise.
func inferProvider(model string) string {
	if strings.HasPrefix(strings.ToLower(model), "claude") {
		return "anthropic"
	}
	return "openai"
}

func providerNames() []string {
	names := make([]string, 0, len(ProviderURLs))
	for n := range ProviderURLs {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// checkURL accepts http(s) URLs without credentials, query or fragment
// whose host resolves only to addresses the guard allows.
func checkURL(ctx context.Context, raw string, guard *ssrf.Guard, res Resolver) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("baseUrl does not parse")
	}
	if u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("baseUrl must not have a query or fragment")
	}
	if res == nil {
		res = net.DefaultResolver
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return guard.CheckURL(ctx, res, raw)
}

// ResealConfig re-encrypts the API key of a stored configuration record
// from old to next (vigil secrets rotate); see secretbox.ResealJSON.
func ResealConfig(data []byte, old, next *secretbox.Box) ([]byte, bool, error) {
	var r ConfigRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, false, fmt.Errorf("judge: config record: %w", err)
	}
	return secretbox.ResealJSON(data, "sealedKey", sealAD(r.Tenant), old, next)
}

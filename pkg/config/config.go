// Package config reads settings from flags with VIGIL_* environment
// variables as defaults, so that every setting has both forms and
// --help lists them together.
package config

import (
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// FlagSet is a flag.FlagSet whose flags fall back to environment variables.
type FlagSet struct {
	*flag.FlagSet
	envs   map[string]string // flag name → env var
	errs   []error
	shared map[string]any // settings declared once per concern (shared.go)
}

// New returns a FlagSet for command name; summary heads its --help.
func New(name, summary string) *FlagSet {
	fs := &FlagSet{FlagSet: flag.NewFlagSet(name, flag.ContinueOnError), envs: map[string]string{}, shared: map[string]any{}}
	fs.Usage = func() {
		out := fs.Output()
		fmt.Fprintf(out, "%s\n\nUsage: %s [flags]\n\nFlags (each also read from the environment variable shown):\n", summary, name)
		fs.VisitAll(func(f *flag.Flag) {
			env := ""
			if e := fs.envs[f.Name]; e != "" {
				env = "  $" + e
			}
			fmt.Fprintf(out, "  --%s%s\n      %s (default %q)\n", f.Name, env, f.Usage, f.DefValue)
		})
	}
	return fs
}

func (fs *FlagSet) lookup(env string) (string, bool) {
	if env == "" {
		return "", false
	}
	return os.LookupEnv(env)
}

// String defines a string setting.
func (fs *FlagSet) String(name, env, def, usage string) *string {
	if v, ok := fs.lookup(env); ok {
		def = v
	}
	fs.envs[name] = env
	return fs.FlagSet.String(name, def, usage)
}

// fromEnv returns def, or env's value parsed when env is set; a value
// that does not parse is recorded for Parse to report ("is not <what>").
func fromEnv[T any](fs *FlagSet, name, env, what string, def T, parse func(string) (T, error)) T {
	fs.envs[name] = env
	v, ok := fs.lookup(env)
	if !ok {
		return def
	}
	x, err := parse(v)
	if err != nil {
		fs.errs = append(fs.errs, fmt.Errorf("$%s: %q is not %s", env, v, what))
		return def
	}
	return x
}

// Int defines an integer setting.
func (fs *FlagSet) Int(name, env string, def int, usage string) *int {
	return fs.FlagSet.Int(name, fromEnv(fs, name, env, "an integer", def, strconv.Atoi), usage)
}

// BoolEnv defines a boolean setting ("true", "false", "1", "0"). It is not
// named Bool so as not to shadow flag.FlagSet.Bool, which commands use for
// switches that have no environment variable.
func (fs *FlagSet) BoolEnv(name, env string, def bool, usage string) *bool {
	return fs.FlagSet.Bool(name, fromEnv(fs, name, env, "a boolean", def, strconv.ParseBool), usage)
}

// Float64 defines a decimal setting ("0.25").
func (fs *FlagSet) Float64(name, env string, def float64, usage string) *float64 {
	return fs.FlagSet.Float64(name, fromEnv(fs, name, env, "a number", def, func(v string) (float64, error) { return strconv.ParseFloat(v, 64) }), usage)
}

// Duration defines a duration setting ("500ms", "2m").
func (fs *FlagSet) Duration(name, env string, def time.Duration, usage string) *time.Duration {
	return fs.FlagSet.Duration(name, fromEnv(fs, name, env, "a duration", def, time.ParseDuration), usage)
}

// Parse parses args after reporting any malformed environment variable.
func (fs *FlagSet) Parse(args []string) error {
	if len(fs.errs) > 0 {
		return fs.errs[0]
	}
	return fs.FlagSet.Parse(args)
}

// Discard silences usage output (tests).
func (fs *FlagSet) Discard() { fs.SetOutput(io.Discard) }

// Common are the settings every Vigil process shares.
type Common struct {
	NATSURL *string
	// NATS is the whole NATS client configuration (NATSURL is NATS.URL).
	NATS          NATS
	ClickHouseDSN *string
	// ClickHouseWait is how long to wait for ClickHouse at start (a
	// compose start often brings it up after its clients).
	ClickHouseWait *time.Duration
	// ClickHouseCluster names the ClickHouse cluster whose replicas the
	// DSN lists ("": one server); see chx.OpenCluster.
	ClickHouseCluster *string
	HTTPAddr          *string
	LogLevel          *string
	LogFormat         *string
	// Telemetry says where the process's own traces go (off by default).
	Telemetry Telemetry
}

// DefaultClickHouseWait is --clickhouse-wait's default.
const DefaultClickHouseWait = time.Minute

// NATS are the settings of a connection to NATS: where, as whom (an NKey
// seed file, see pkg/natsauth) and over TLS when a CA or certificate is
// given.
type NATS struct {
	URL, Creds, NKey, TLSCA, TLSCert, TLSKey *string
}

// AddNATS defines the NATS client settings on fs; creds is the default
// seed file ("" connects without credentials, which an authenticated
// server refuses).
func AddNATS(fs *FlagSet, creds string) NATS {
	return NATS{
		URL:     fs.String("nats-url", "VIGIL_NATS_URL", "nats://127.0.0.1:4222", "NATS server URL"),
		Creds:   fs.String("nats-creds", "VIGIL_NATS_CREDS", creds, "NKey seed file this process authenticates to NATS with (`vigil nats init` writes one per service)"),
		NKey:    fs.String("nats-nkey", "VIGIL_NATS_NKEY", "", "NKey seed itself, instead of --nats-creds (compose passes it from the env file `vigil nats init` writes)"),
		TLSCA:   fs.String("nats-tls-ca", "VIGIL_NATS_TLS_CA", "", "PEM CA that verifies the NATS server's certificate (enables TLS)"),
		TLSCert: fs.String("nats-tls-cert", "VIGIL_NATS_TLS_CERT", "", "PEM client certificate for a NATS server that verifies clients"),
		TLSKey:  fs.String("nats-tls-key", "VIGIL_NATS_TLS_KEY", "", "PEM key of --nats-tls-cert"),
	}
}

// AddCommon defines the shared settings on fs.
func AddCommon(fs *FlagSet) Common {
	n := AddNATS(fs, "")
	return Common{
		NATSURL:        n.URL,
		NATS:           n,
		ClickHouseDSN:  fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil", "ClickHouse DSN (the database is created if missing); several servers comma-separated (clickhouse://h1:9000,h2:9000/vigil) are tried in order"),
		ClickHouseWait: fs.Duration("clickhouse-wait", "VIGIL_CLICKHOUSE_WAIT", DefaultClickHouseWait, "how long to wait for ClickHouse at start"),
		ClickHouseCluster: fs.String("clickhouse-cluster", "VIGIL_CLICKHOUSE_CLUSTER", "",
			"ClickHouse cluster (remote_servers name) whose replicas --clickhouse-dsn lists comma-separated: tables are created Replicated and Distributed ON CLUSTER, inserts are synchronous; empty: one server (give every process the same value)"),
		HTTPAddr:  fs.HTTPAddr(),
		LogLevel:  fs.LogLevel(),
		LogFormat: fs.LogFormat(),
		Telemetry: fs.Telemetry(),
	}
}

// HTTPAddr declares --http-addr, where a process serves HTTP.
func (fs *FlagSet) HTTPAddr() *string {
	return once(fs, "http-addr", func() *string {
		return fs.String("http-addr", "VIGIL_HTTP_ADDR", ":8080", "HTTP listen address")
	})
}

// LogLevel declares --log-level.
func (fs *FlagSet) LogLevel() *string {
	return once(fs, "log-level", func() *string {
		return fs.String("log-level", "VIGIL_LOG_LEVEL", "info", "log level: debug, info, warn, error")
	})
}

// LogFormat declares --log-format.
func (fs *FlagSet) LogFormat() *string {
	return once(fs, "log-format", func() *string {
		return fs.String("log-format", "VIGIL_LOG_FORMAT", "text", "log format: text or json")
	})

}

// Telemetry are the settings of a process's own tracing (pkg/telemetry).
type Telemetry struct {
	Endpoint    *string
	SampleRatio *float64
}

// Telemetry declares --otel-endpoint and --otel-sample-ratio. The
// endpoint defaults to the standard OTEL_EXPORTER_OTLP_ENDPOINT, so a
// deployment that configures OpenTelemetry the usual way needs nothing
// Vigil-specific; OTEL_SDK_DISABLED=true turns that default off.
func (fs *FlagSet) Telemetry() Telemetry {
	return once(fs, "telemetry", func() Telemetry {
		def := os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
		if disabled, _ := strconv.ParseBool(os.Getenv("OTEL_SDK_DISABLED")); disabled {
			def = ""
		}
		return Telemetry{
			Endpoint: fs.String("otel-endpoint", "VIGIL_OTEL_ENDPOINT", def,
				"OTLP/HTTP collector this process sends its own traces to (base URL such as http://collector:4318, or its /v1/traces URL); empty: tracing off (default: $OTEL_EXPORTER_OTLP_ENDPOINT)"),
			SampleRatio: fs.Float64("otel-sample-ratio", "VIGIL_OTEL_SAMPLE_RATIO", 1,
				"share of new traces recorded, 0 to 1; a request carrying a traceparent follows its caller's sampling"),
		}
	})
}

// Config is the tracing configuration of a process named service.
func (t Telemetry) Config(service string) telemetry.Config {
	return telemetry.Config{Endpoint: *t.Endpoint, SampleRatio: *t.SampleRatio, Service: service}
}

// OIDC holds the flags that configure members' sign-in.
type OIDC struct {
	Issuer, Audience, JWKSURL, TenantClaim, ServiceAccounts *string
	// RedirectURL and ClientSecret are the console's as an OAuth client
	// (its client id is the audience).
	RedirectURL, ClientSecret *string
}

// OIDC declares the flags that configure members' sign-in. Every process
// that serves authenticated routes declares them (its catalog checks
// members' tokens), under the same names as `vigil dev`.
func (fs *FlagSet) OIDC() OIDC {
	return once(fs, "oidc", func() OIDC {
		return OIDC{
			Issuer:      fs.String("oidc-issuer", "VIGIL_OIDC_ISSUER", "", "OIDC issuer whose tokens console members sign in with (empty: API keys only)"),
			Audience:    fs.String("oidc-audience", "VIGIL_OIDC_AUDIENCE", "", "audience every token must carry (required with --oidc-issuer)"),
			JWKSURL:     fs.String("oidc-jwks-url", "VIGIL_OIDC_JWKS_URL", "", "the provider's JWKS URL (default: from the issuer's discovery document)"),
			TenantClaim: fs.String("oidc-tenant-claim", "VIGIL_OIDC_TENANT_CLAIM", "", "claim naming the tenant, for people who are members of several (else they send x-tenant-id)"),
			ServiceAccounts: fs.String("oidc-service-accounts", "VIGIL_OIDC_SERVICE_ACCOUNTS", "",
				"OAuth clients whose client-credentials tokens act as a service account: client=tenant:role, comma-separated"),
			RedirectURL: fs.String("oidc-redirect-url", "VIGIL_OIDC_REDIRECT_URL", "",
				"the console's sign-in callback as registered at the provider, https://vigil.example.com/console/oidc/callback (default: from each request's host; the console's client id is --oidc-audience)"),
			ClientSecret: fs.String("oidc-client-secret", "VIGIL_OIDC_CLIENT_SECRET", "",
				"the console's client secret at the provider's token endpoint (empty: a public client, PKCE only); prefer the environment variable"),
		}
	})
}

// ConsoleSessions are the web console's session lifetimes (the api serves
// the console; `vigil dev` runs the api).
type ConsoleSessions struct{ TTL, Idle *time.Duration }

// ConsoleSessions declares --console-session-ttl and --console-idle-timeout.
func (fs *FlagSet) ConsoleSessions() ConsoleSessions {
	return once(fs, "console-sessions", func() ConsoleSessions {
		return ConsoleSessions{
			TTL: fs.Duration("console-session-ttl", "VIGIL_CONSOLE_SESSION_TTL", 8*time.Hour,
				"how long a console sign-in lasts at most (also the TTL of the console_sessions bucket)"),
			Idle: fs.Duration("console-idle-timeout", "VIGIL_CONSOLE_IDLE_TIMEOUT", 30*time.Minute,
				"a console session that makes no request for this long ends (an open Decision Desk counts as use)"),
		}
	})
}

// Client returns the console's redirect URL and client secret.
func (o OIDC) Client() (redirectURL, clientSecret string) { return *o.RedirectURL, *o.ClientSecret }

// Verifier returns the configured verifier, or nil when no issuer is set.
func (o OIDC) Verifier() (*oidc.Verifier, error) {
	if *o.Issuer == "" {
		return nil, nil
	}
	sas, err := oidc.ParseServiceAccounts(*o.ServiceAccounts)
	if err != nil {
		return nil, fmt.Errorf("--oidc-service-accounts: %w", err)
	}
	for client, sa := range sas {
		if !tenant.Valid(sa.Tenant) {
			return nil, fmt.Errorf("--oidc-service-accounts: %s: %q is not a tenant id", client, sa.Tenant)
		}
		if _, err := auth.ParseRole(sa.Role); err != nil {
			return nil, fmt.Errorf("--oidc-service-accounts: %s: %w", client, err)
		}
	}
	return oidc.New(oidc.Config{Issuer: *o.Issuer, Audience: *o.Audience, JWKSURL: *o.JWKSURL, TenantClaim: *o.TenantClaim, ServiceAccounts: sas})
}

package config_test

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
)

type settings struct {
	name *string
	n    *int
	d    *time.Duration
}

func define(fs *config.FlagSet) settings {
	return settings{
		name: fs.String("name", "VIGIL_TEST_NAME", "def", "a name"),
		n:    fs.Int("count", "VIGIL_TEST_COUNT", 3, "a count"),
		d:    fs.Duration("linger", "VIGIL_TEST_LINGER", 200*time.Millisecond, "a linger"),
	}
}

func TestSources(t *testing.T) {
	cases := []struct {
		name  string
		env   map[string]string
		args  []string
		wantS string
		wantN int
		wantD time.Duration
	}{
		{"defaults", nil, nil, "def", 3, 200 * time.Millisecond},
		{"env fallback", map[string]string{"VIGIL_TEST_NAME": "env", "VIGIL_TEST_COUNT": "7", "VIGIL_TEST_LINGER": "2m"}, nil, "env", 7, 2 * time.Minute},
		{"empty env is a value", map[string]string{"VIGIL_TEST_NAME": ""}, nil, "", 3, 200 * time.Millisecond},
		{"flags without env", nil, []string{"--name=flag", "--count", "9", "-linger=1s"}, "flag", 9, time.Second},
		{"flag overrides env", map[string]string{"VIGIL_TEST_NAME": "env", "VIGIL_TEST_COUNT": "7", "VIGIL_TEST_LINGER": "2m"},
			[]string{"--name=flag", "--count=9", "--linger=1s"}, "flag", 9, time.Second},
		{"mixed", map[string]string{"VIGIL_TEST_COUNT": "7"}, []string{"--linger=5ms"}, "def", 7, 5 * time.Millisecond},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := config.New("svc", "test service")
			fs.Discard()
			s := define(fs)
			if err := fs.Parse(tc.args); err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if *s.name != tc.wantS || *s.n != tc.wantN || *s.d != tc.wantD {
				t.Errorf("got %q %d %s, want %q %d %s", *s.name, *s.n, *s.d, tc.wantS, tc.wantN, tc.wantD)
			}
		})
	}
}

func TestBadValues(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		wantErr string
	}{
		{"env int", map[string]string{"VIGIL_TEST_COUNT": "seven"}, nil, `$VIGIL_TEST_COUNT: "seven" is not an integer`},
		{"env int float", map[string]string{"VIGIL_TEST_COUNT": "1.5"}, nil, `$VIGIL_TEST_COUNT: "1.5" is not an integer`},
		{"env duration without unit", map[string]string{"VIGIL_TEST_LINGER": "500"}, nil, `$VIGIL_TEST_LINGER: "500" is not a duration`},
		{"env duration garbage", map[string]string{"VIGIL_TEST_LINGER": "soon"}, nil, `$VIGIL_TEST_LINGER: "soon" is not a duration`},
		{"first bad env is reported", map[string]string{"VIGIL_TEST_COUNT": "x", "VIGIL_TEST_LINGER": "y"}, nil, `$VIGIL_TEST_COUNT`},
		{"flag int", nil, []string{"--count=x"}, `invalid value "x" for flag -count`},
		{"flag duration", nil, []string{"--linger=10"}, `invalid value "10" for flag -linger`},
		{"unknown flag", nil, []string{"--nope"}, "flag provided but not defined: -nope"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := config.New("svc", "test service")
			fs.Discard()
			define(fs)
			err := fs.Parse(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Parse error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Setenv("VIGIL_TEST_COUNT", "11")
	fs := config.New("vigil-ingest", "Vigil ingest: receives agent events.")
	var out bytes.Buffer
	fs.SetOutput(&out)
	define(fs)
	config.AddCommon(fs)
	fs.Bool("plain", false, "a flag without an environment variable")
	if err := fs.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("Parse(--help) = %v, want flag.ErrHelp", err)
	}
	help := out.String()
	for _, want := range []string{
		"Vigil ingest: receives agent events.",
		"Usage: vigil-ingest [flags]",
		"--name  $VIGIL_TEST_NAME",
		"--count  $VIGIL_TEST_COUNT",
		"--linger  $VIGIL_TEST_LINGER",
		"--nats-url  $VIGIL_NATS_URL",
		"--clickhouse-dsn  $VIGIL_CLICKHOUSE_DSN",
		"--http-addr  $VIGIL_HTTP_ADDR",
		"--log-level  $VIGIL_LOG_LEVEL",
		"--log-format  $VIGIL_LOG_FORMAT",
		`a count (default "11")`, // the environment's value is the effective default
		`a linger (default "200ms")`,
		"--plain\n",
	} {
		if !strings.Contains(help, want) {
			t.Errorf("help lacks %q:\n%s", want, help)
		}
	}
}

func TestAddCommon(t *testing.T) {
	t.Setenv("VIGIL_NATS_URL", "nats://nats:4222")
	fs := config.New("svc", "s")
	fs.Discard()
	c := config.AddCommon(fs)
	if err := fs.Parse([]string{"--http-addr=:9090"}); err != nil {
		t.Fatal(err)
	}
	got := []string{*c.NATSURL, *c.ClickHouseDSN, *c.HTTPAddr, *c.LogLevel, *c.LogFormat}
	want := []string{"nats://nats:4222", "clickhouse://127.0.0.1:9000/vigil", ":9090", "info", "text"}
	for i := range got {
		if got[i] != want[i] {
			t.Errorf("setting %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestBoolEnv(t *testing.T) {
	cases := []struct {
		name    string
		env     map[string]string
		args    []string
		want    bool
		wantErr string
	}{
		{"default", nil, nil, false, ""},
		{"env true", map[string]string{"VIGIL_TEST_ON": "true"}, nil, true, ""},
		{"env 1", map[string]string{"VIGIL_TEST_ON": "1"}, nil, true, ""},
		{"flag overrides env", map[string]string{"VIGIL_TEST_ON": "true"}, []string{"--on=false"}, false, ""},
		{"bare flag", nil, []string{"--on"}, true, ""},
		{"env garbage", map[string]string{"VIGIL_TEST_ON": "yes please"}, nil, false, `$VIGIL_TEST_ON: "yes please" is not a boolean`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			fs := config.New("svc", "test service")
			fs.Discard()
			on := fs.BoolEnv("on", "VIGIL_TEST_ON", false, "a switch")
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || *on != tc.want {
				t.Fatalf("got %v (%v), want %v", *on, err, tc.want)
			}
		})
	}
}

func TestOIDCVerifier(t *testing.T) {
	cases := []struct {
		name    string
		args    []string
		wantNil bool
		wantErr string
	}{
		{"off without an issuer", nil, true, ""},
		{"issuer needs an audience", []string{"--oidc-issuer=https://idp.example"}, false, "audience is required"},
		{"issuer and audience", []string{"--oidc-issuer=https://idp.example", "--oidc-audience=vigil"}, false, ""},
		{"service accounts", []string{"--oidc-issuer=https://idp.example", "--oidc-audience=vigil", "--oidc-service-accounts=ci=acme:admin,dash=globex:viewer"}, false, ""},
		{"service account with an unknown role", []string{"--oidc-issuer=https://idp.example", "--oidc-audience=vigil", "--oidc-service-accounts=ci=acme:root"}, false, "unknown role"},
		{"service account with a bad tenant", []string{"--oidc-issuer=https://idp.example", "--oidc-audience=vigil", "--oidc-service-accounts=ci=Acme Corp:admin"}, false, "client=tenant:role"},
		{"service account with an invalid tenant id", []string{"--oidc-issuer=https://idp.example", "--oidc-audience=vigil", "--oidc-service-accounts=ci=ACME:admin"}, false, "not a tenant id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fs := config.New("svc", "test service")
			fs.Discard()
			o := fs.OIDC()
			if err := fs.Parse(tc.args); err != nil {
				t.Fatal(err)
			}
			v, err := o.Verifier()
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Verifier error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || (v == nil) != tc.wantNil {
				t.Fatalf("Verifier = %v, %v", v, err)
			}
		})
	}
}

// TestTelemetry: --otel-endpoint defaults to the standard
// OTEL_EXPORTER_OTLP_ENDPOINT (unless OTEL_SDK_DISABLED), which
// $VIGIL_OTEL_ENDPOINT and the flag override; tracing is off by default.
func TestTelemetry(t *testing.T) {
	cases := []struct {
		name      string
		env       map[string]string
		args      []string
		wantURL   string
		wantRatio float64
		wantErr   string
	}{
		{"off by default", nil, nil, "", 1, ""},
		{"standard variable", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}, nil, "http://otel:4318", 1, ""},
		{"sdk disabled", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "OTEL_SDK_DISABLED": "true"}, nil, "", 1, ""},
		{"vigil variable wins", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318", "VIGIL_OTEL_ENDPOINT": "http://v:4318", "VIGIL_OTEL_SAMPLE_RATIO": "0.25"}, nil, "http://v:4318", 0.25, ""},
		{"flags win", map[string]string{"VIGIL_OTEL_ENDPOINT": "http://v:4318"}, []string{"--otel-endpoint=https://f/v1/traces", "--otel-sample-ratio=0.5"}, "https://f/v1/traces", 0.5, ""},
		{"flag turns it off", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel:4318"}, []string{"--otel-endpoint="}, "", 1, ""},
		{"bad ratio variable", map[string]string{"VIGIL_OTEL_SAMPLE_RATIO": "most"}, nil, "", 0, `$VIGIL_OTEL_SAMPLE_RATIO: "most" is not a number`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SDK_DISABLED", "VIGIL_OTEL_ENDPOINT", "VIGIL_OTEL_SAMPLE_RATIO"} {
				t.Setenv(k, tc.env[k])
				if _, set := tc.env[k]; !set {
					os.Unsetenv(k)
				}
			}
			fs := config.New("svc", "test service")
			fs.Discard()
			tel := config.AddCommon(fs).Telemetry
			err := fs.Parse(tc.args)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Parse error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := tel.Config("vigil-x")
			if got.Endpoint != tc.wantURL || got.SampleRatio != tc.wantRatio || got.Service != "vigil-x" {
				t.Errorf("got %+v, want endpoint %q ratio %g", got, tc.wantURL, tc.wantRatio)
			}
			if fs.Telemetry() != tel {
				t.Error("asking twice declared the settings twice")
			}
		})
	}
}

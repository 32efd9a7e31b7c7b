package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/config"
)

// TestDevHelpListsEverySetting: every deployment setting of the services
// `vigil dev` runs is a flag with its environment variable, so --help
// shows it (the notifier's key and private networks used to be read from
// the environment only).
func TestDevHelpListsEverySetting(t *testing.T) {
	fset := config.New("vigil dev", "test")
	var out bytes.Buffer
	fset.SetOutput(&out)
	addDevFlags(fset)
	if err := fset.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{
		"--notifier-key  $VIGIL_NOTIFIER_KEY", "--notifier-allow-private  $VIGIL_NOTIFIER_ALLOW_PRIVATE",
		"--signing-key  $VIGIL_SIGNING_KEY", "--redaction-key  $VIGIL_REDACTION_KEY", "--judge-seal-key  $VIGIL_JUDGE_SEAL_KEY",
		"--judge-allow  $VIGIL_JUDGE_ALLOW", "--stream-replicas  $VIGIL_STREAM_REPLICAS", "--dedupe-window  $VIGIL_DEDUPE_WINDOW",
		"--clickhouse-wait  $VIGIL_CLICKHOUSE_WAIT", "--clickhouse-cluster  $VIGIL_CLICKHOUSE_CLUSTER", "--metrics-tenant-labels  $VIGIL_METRICS_TENANT_LABELS",
		"--oidc-issuer  $VIGIL_OIDC_ISSUER", "--max-agents  $VIGIL_MAX_AGENTS",
		"--console-session-ttl  $VIGIL_CONSOLE_SESSION_TTL", "--console-idle-timeout  $VIGIL_CONSOLE_IDLE_TIMEOUT",
		"--otel-endpoint  $VIGIL_OTEL_ENDPOINT", "--otel-sample-ratio  $VIGIL_OTEL_SAMPLE_RATIO",
		"--memory-limit-mib  $VIGIL_MEMORY_LIMIT_MIB",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestNoHiddenSettings: no code outside pkg/config (and the test kit)
// reads the environment, so no setting can hide from --help.
func TestNoHiddenSettings(t *testing.T) {
	root := filepath.Join("..", "..")
	read := regexp.MustCompile(`os\.(Getenv|LookupEnv|Environ)\(`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || rel == filepath.Join("pkg", "config") || rel == filepath.Join("pkg", "chtest")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if read.Match(b) {
			t.Errorf("%s reads the environment directly: declare the setting in pkg/config", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestServiceBinariesShareSettings: a service binary declares no setting
// pkg/config already declares (so a name means the same everywhere), and
// every binary whose service serves HTTP routes configures members'
// OIDC sign-in on its catalog, as `vigil dev` does: a member's token
// authenticates on every route, whichever process serves it.
func TestServiceBinariesShareSettings(t *testing.T) {
	root := filepath.Join("..", "..")
	flagDecl := regexp.MustCompile(`fs\.(?:String|Int|BoolEnv|Bool|Duration|Float64)\("([a-z0-9-]+)"`)
	shared := map[string]bool{}
	cfgFiles, err := filepath.Glob(filepath.Join(root, "pkg", "config", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range cfgFiles {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagDecl.FindAllSubmatch(b, -1) {
			shared[string(m[1])] = true
		}
	}
	if !shared["oidc-issuer"] || !shared["metrics-tenant-labels"] {
		t.Fatalf("pkg/config declares %v: the scan found no OIDC or metrics settings", shared)
	}
	mains, err := filepath.Glob(filepath.Join(root, "services", "*", "cmd", "*", "main.go"))
	if err != nil || len(mains) == 0 {
		t.Fatalf("no service binaries (%v)", err)
	}
	routes := regexp.MustCompile(`daemon\.Component\{[^}]*Routes:`)
	for _, main := range mains {
		b, err := os.ReadFile(main)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range flagDecl.FindAllSubmatch(b, -1) {
			if shared[string(m[1])] {
				t.Errorf("%s declares --%s itself; use pkg/config's declaration", main, m[1])
			}
		}
		svcDir := filepath.Dir(filepath.Dir(filepath.Dir(main)))
		files, err := filepath.Glob(filepath.Join(svcDir, "*.go"))
		if err != nil {
			t.Fatal(err)
		}
		serves := false
		for _, f := range files {
			src, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			serves = serves || !strings.HasSuffix(f, "_test.go") && routes.Match(src)
		}
		wired := strings.Contains(string(b), "fs.OIDC()") && strings.Contains(string(b), "control.WithOIDC(")
		if serves && !wired {
			t.Errorf("%s: its service serves routes but the binary does not configure OIDC (fs.OIDC, control.WithOIDC)", main)
		}
	}
}

// TestDevPassesMetricsTenantLabels: `vigil dev --metrics-tenant-labels`
// reaches the ledger, as the ledger binary's flag does.
func TestDevPassesMetricsTenantLabels(t *testing.T) {
	for _, tt := range []struct {
		args []string
		want bool
	}{{nil, false}, {[]string{"--metrics-tenant-labels=true"}, true}} {
		fset := config.New("vigil dev", "test")
		fset.Discard()
		f := addDevFlags(fset)
		if err := fset.Parse(append([]string{"--data-dir", t.TempDir()}, tt.args...)); err != nil {
			t.Fatal(err)
		}
		cfg, err := f.stackConfig(slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		if cfg.TenantMetrics != tt.want {
			t.Errorf("%v: TenantMetrics = %v, want %v", tt.args, cfg.TenantMetrics, tt.want)
		}
	}
}

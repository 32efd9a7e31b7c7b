package config_test

import (
	"bytes"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/config"
)

func b64(n int) string { return base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, n)) }

// TestSharedDeclaredOnce: asking twice for a shared setting (as `vigil
// dev` does for every service) returns the one setting, not a second flag.
func TestSharedDeclaredOnce(t *testing.T) {
	fs := config.New("svc", "test")
	fs.Discard()
	if fs.SigningKey() != fs.SigningKey() || fs.Streams() != fs.Streams() || fs.InstanceID() != fs.InstanceID() || fs.JudgeAllow() != fs.JudgeAllow() ||
		fs.MetricsTenantLabels() != fs.MetricsTenantLabels() || fs.OIDC() != fs.OIDC() {
		t.Fatal("a shared setting was declared twice")
	}
	if err := fs.Parse([]string{"--signing-key", b64(32), "--stream-replicas", "3", "--instance-id", "api-1", "--metrics-tenant-labels=true", "--oidc-issuer", "https://idp.example"}); err != nil {
		t.Fatal(err)
	}
	o, err := fs.Streams().Options()
	if err != nil || o.Replicas != 3 {
		t.Fatalf("Options = %+v, %v", o, err)
	}
	if id := fs.InstanceID().ID(); id != "api-1" {
		t.Fatalf("ID = %q", id)
	}
	if !*fs.MetricsTenantLabels() || *fs.OIDC().Issuer != "https://idp.example" {
		t.Fatalf("metrics-tenant-labels = %v, oidc-issuer = %q", *fs.MetricsTenantLabels(), *fs.OIDC().Issuer)
	}
}

func TestInstanceDefault(t *testing.T) {
	fs := config.New("svc", "test")
	id := fs.InstanceID()
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if got := id.ID(); !strings.HasPrefix(got, host+"-") || got == host+"-" {
		t.Fatalf("default instance id %q, want <host>-<pid>", got)
	}
}

func TestStreamReplicasRange(t *testing.T) {
	for _, n := range []string{"0", "6", "-1"} {
		fs := config.New("svc", "test")
		fs.Discard()
		so := fs.Streams()
		if err := fs.Parse([]string{"--stream-replicas", n}); err != nil {
			t.Fatal(err)
		}
		if _, err := so.Options(); err == nil || !strings.Contains(err.Error(), "--stream-replicas") {
			t.Errorf("replicas %s: %v, want an error naming the flag", n, err)
		}
	}
}

// TestSecrets: every deployment key is checked by one rule — a seed is
// exactly its size, a key at least its size — wherever it is given.
func TestSecrets(t *testing.T) {
	tests := []struct {
		name     string
		key      func(*config.FlagSet) *config.Secret
		value    string
		required bool
		wantLen  int
		wantErr  string
	}{
		{"seed exact", (*config.FlagSet).SigningKey, b64(32), true, 32, ""},
		{"seed too long", (*config.FlagSet).SigningKey, b64(40), true, 0, "32-byte seed"},
		{"seed missing", (*config.FlagSet).SigningKey, "", true, 0, "--signing-key / $VIGIL_SIGNING_KEY is required"},
		{"key longer is fine", (*config.FlagSet).NotifierKey, b64(48), true, 48, ""},
		{"key too short", (*config.FlagSet).NotifierKey, b64(16), true, 0, "at least 32 bytes"},
		{"not base64", (*config.FlagSet).RedactionKey, "not base64!", false, 0, "--redaction-key / $VIGIL_REDACTION_KEY is not base64"},
		{"optional unset", (*config.FlagSet).JudgeSealKey, "", false, 0, ""},
		{"optional set", (*config.FlagSet).JudgeSealKey, b64(32), false, 32, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := config.New("svc", "test")
			k := tt.key(fs)
			var args []string
			if tt.value != "" {
				args = []string{"--" + flagName(fs), tt.value}
			}
			if err := fs.Parse(args); err != nil {
				t.Fatal(err)
			}
			get := k.Optional
			if tt.required {
				get = k.Required
			}
			b, err := get()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || len(b) != tt.wantLen {
				t.Fatalf("got %d bytes, %v; want %d", len(b), err, tt.wantLen)
			}
		})
	}
}

// flagName is the one flag a fresh FlagSet holds.
func flagName(fs *config.FlagSet) string {
	var name string
	fs.VisitAll(func(f *flag.Flag) { name = f.Name })
	return name
}

// TestKeyFile: dev's generated keys survive restarts, are private, and a
// corrupt file is refused rather than silently replaced (channel
// credentials sealed under the old key would become unreadable).
func TestKeyFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "sub", "notifier.key")
	first, err := config.KeyFile(file, 32, false)
	if err != nil || len(first) != 32 {
		t.Fatalf("generated: %d bytes, %v", len(first), err)
	}
	info, err := os.Stat(file)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, info.Mode())
	}
	again, err := config.KeyFile(file, 32, false)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatal("a restart got another key")
	}
	fs := config.New("svc", "test")
	k := fs.NotifierKey()
	if err := fs.Parse([]string{"--notifier-key", b64(40)}); err != nil {
		t.Fatal(err)
	}
	if b, err := k.OrFile(file); err != nil || len(b) != 40 {
		t.Fatalf("a configured key wins over the file: %d bytes, %v", len(b), err)
	}
	corrupt := filepath.Join(dir, "corrupt.key")
	if err := os.WriteFile(corrupt, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.KeyFile(corrupt, 32, false); err == nil {
		t.Fatal("corrupt key file accepted")
	}
	seed := filepath.Join(dir, "signing.key")
	if err := os.WriteFile(seed, []byte(b64(40)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.KeyFile(seed, 32, true); err == nil {
		t.Fatal("a 40-byte seed file accepted")
	}
}

func TestCIDRs(t *testing.T) {
	fs := config.New("svc", "test")
	fs.Discard()
	c := fs.NotifierAllowPrivate()
	if err := fs.Parse([]string{"--notifier-allow-private", "10.0.0.0/8, 192.168.1.1"}); err != nil {
		t.Fatal(err)
	}
	if p, err := c.Prefixes(); err != nil || len(p) != 2 {
		t.Fatalf("Prefixes = %v, %v", p, err)
	}
	fs = config.New("svc", "test")
	c = fs.JudgeAllow()
	if err := fs.Parse([]string{"--judge-allow", "nonsense"}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Prefixes(); err == nil || !strings.Contains(err.Error(), "--judge-allow") {
		t.Fatalf("bad CIDR: %v, want an error naming the flag", err)
	}
}

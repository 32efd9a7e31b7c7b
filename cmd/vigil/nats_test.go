package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/services/ingest"
)

// TestKeysCreateNeedsAdmin reproduces the review's finding that any local
// process could mint owner keys over NATS: against a running stack, `vigil
// keys create` without the admin credential is refused, with a service's
// credential it is refused, and with the data directory's admin
// credential it works.
func TestKeysCreateNeedsAdmin(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dataDir := t.TempDir()
	st, err := StartStack(ctx, StackConfig{DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1, Ingest: ingest.DefaultConfig(), API: benchAPIConfig(), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	url := st.NATS.ClientURL()
	empty := t.TempDir()
	for _, tc := range []struct {
		name string
		args []string
		// ok is whether a key must come out; else authErr says the error
		// must be an authorization violation.
		ok, authErr bool
	}{
		{"no credential", []string{"--nats-url", url, "--data-dir", empty}, false, true},
		{"a service's credential", []string{"--nats-url", url, "--data-dir", empty, "--nats-creds", natsauth.SeedFile(CredsDir(dataDir), "notifier")}, false, false},
		{"admin credential of the data directory", []string{"--nats-url", url, "--data-dir", dataDir}, true, false},
		{"admin credential given", []string{"--nats-url", url, "--data-dir", empty, "--nats-creds", natsauth.SeedFile(CredsDir(dataDir), natsauth.Admin)}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			// A refused publish is never acknowledged: bound the wait.
			limit := 15 * time.Second
			if !tc.ok {
				limit = 2 * time.Second
			}
			kctx, kcancel := context.WithTimeout(ctx, limit)
			defer kcancel()
			err := runKeysCreate(kctx, append(tc.args, "--tenant", "acme", "--json"), &out)
			if !tc.ok {
				if err == nil {
					t.Fatalf("created a key: %s", out.String())
				}
				if tc.authErr && !errors.Is(err, nats.ErrAuthorization) {
					t.Fatalf("err = %v, want an authorization violation", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var k struct{ Key, Tenant string }
			if err := json.Unmarshal(out.Bytes(), &k); err != nil || k.Tenant != "acme" || k.Key == "" {
				t.Fatalf("output %q (%v)", out.String(), err)
			}
		})
	}
	fi, err := os.Stat(natsauth.SeedFile(CredsDir(dataDir), natsauth.Admin))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("admin credential is %v, want 0600", fi.Mode().Perm())
	}
}

// TestNATSInit runs `vigil nats init` twice and checks what compose
// mounts: a server configuration nats-server accepts that lists every
// user, env files (0600) whose seeds it admits, and seeds kept on rerun.
func TestNATSInit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nats")
	if err := runNATSInit([]string{"--dir", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(filepath.Join(dir, natsConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := runNATSInit([]string{"--dir", dir, "--tls-cert", "/etc/nats/tls/server.pem", "--tls-key", "/etc/nats/tls/server-key.pem"}, io.Discard); err != nil {
		t.Fatal(err)
	}
	second, err := os.ReadFile(filepath.Join(dir, natsConfFile))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(second), string(first)) || !strings.Contains(string(second), "/etc/nats/tls/server.pem") {
		t.Fatalf("rerun changed the users or left out TLS:\n%s", second)
	}
	opts, err := server.ProcessConfigFile(filepath.Join(dir, natsConfFile))
	if err == nil || !strings.Contains(err.Error(), "server.pem") {
		// The TLS files do not exist here: the server must complain
		// about them, which shows it read the tls block.
		t.Fatalf("config with missing TLS files: %v", err)
	}
	if err := runNATSInit([]string{"--dir", dir}, io.Discard); err != nil {
		t.Fatal(err)
	}
	if opts, err = server.ProcessConfigFile(filepath.Join(dir, natsConfFile)); err != nil {
		t.Fatal(err)
	}
	users := natsauth.Users()
	if len(opts.Nkeys) != len(users) {
		t.Fatalf("%d users in nats.conf, want %d", len(opts.Nkeys), len(users))
	}
	for _, u := range users {
		fi, err := os.Stat(natsauth.EnvFile(dir, u))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", fi.Name(), fi.Mode().Perm())
		}
	}
	if err := runNATSInit([]string{"--dir", dir, "--tls-ca", "/ca.pem"}, io.Discard); err == nil {
		t.Fatal("accepted a CA without a server certificate")
	}
}

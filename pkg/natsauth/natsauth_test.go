package natsauth_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

var discard = slog.New(slog.DiscardHandler)

// connect connects as user and returns the connection with the channel its
// asynchronous errors (permission violations) arrive on.
func connect(t *testing.T, env *natstest.Env, user string) (*nats.Conn, jetstream.JetStream, <-chan error) {
	t.Helper()
	opts, err := natsauth.ClientOptions(natsauth.FileCredential(natsauth.SeedFile(env.CredsDir, user)), natsauth.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 16)
	opts = append(opts, nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		select {
		case errs <- err:
		default:
		}
	}))
	nc, js, err := natsx.Connect(env.Server.ClientURL(), user, discard, opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc, js, errs
}

// violation waits for a permission violation on errs that names subject.
func violation(t *testing.T, errs <-chan error, subject string) {
	t.Helper()
	timeout := time.After(5 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), subject) {
				return
			}
		case <-timeout:
			t.Fatalf("no permission violation for %q", subject)
		}
	}
}

func TestUnauthenticatedClientRefused(t *testing.T) {
	env := natstest.Start(t)
	stranger := filepath.Join(t.TempDir(), "stranger")
	if _, err := natsauth.Init(stranger); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opts []nats.Option
	}{
		{"no credential", nil},
		{"user and password", []nats.Option{nats.UserInfo("admin", "admin")}},
		{"token", []nats.Option{nats.Token("secret")}},
		{"seed the server does not know", mustOpts(t, natsauth.SeedFile(stranger, natsauth.Admin))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := nats.Connect(env.Server.ClientURL(), tc.opts...)
			if err == nil {
				nc.Close()
				t.Fatal("connected")
			}
			if !errors.Is(err, nats.ErrAuthorization) {
				t.Fatalf("err = %v, want authorization violation", err)
			}
		})
	}
}

func mustOpts(t *testing.T, seed string) []nats.Option {
	t.Helper()
	opts, err := natsauth.ClientOptions(natsauth.FileCredential(seed), natsauth.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	return opts
}

// TestServicesConfined checks the reproductions of the security review:
// a service cannot mint API keys, write another service's stream, read a
// bucket it does not use or answer another service's requests, while what
// it needs works.
func TestServicesConfined(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	so := streams.DefaultOptions
	if err := natsx.EnsureStreams(ctx, env.JS, streams.ControlConfig(so), streams.IngestConfig(so), streams.PolicyConfig(so)); err != nil {
		t.Fatal(err)
	}
	if _, err := env.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: streams.IdempotencyBucket}); err != nil {
		t.Fatal(err)
	}

	t.Run("allowed", func(t *testing.T) {
		_, ingestJS, _ := connect(t, env, streams.ServiceIngest)
		if _, err := ingestJS.Publish(ctx, streams.EventReceivedSubject("t1", "a1"), []byte(`{}`)); err != nil {
			t.Fatalf("ingest publishing an event: %v", err)
		}
		_, notifierJS, _ := connect(t, env, streams.ServiceNotifier)
		if _, err := notifierJS.Publish(ctx, streams.ChannelSubject("t1", "c1"), []byte(`{}`)); err != nil {
			t.Fatalf("notifier recording a channel: %v", err)
		}
		_, apiJS, _ := connect(t, env, streams.ServiceAPI)
		if _, _, err := control.NewStore(apiJS).CreateKey(ctx, "t1", auth.RoleOwner, "k", "test"); err != nil {
			t.Fatalf("api creating a key: %v", err)
		}
		// Reading CONTROL (the catalog every HTTP service keeps).
		cat := control.NewCatalog(ingestJS, discard)
		if err := cat.Run(ctx); err != nil {
			t.Fatalf("ingest following CONTROL: %v", err)
		}
		if err := cat.Sync(ctx); err != nil {
			t.Fatalf("ingest syncing the catalog: %v", err)
		}
	})

	for _, tc := range []struct {
		name, user, subject string
	}{
		{"notifier mints an owner key", streams.ServiceNotifier, "control.v1.key_changed.t1.~"},
		{"ingest records a decision", streams.ServiceIngest, streams.DecisionSubject("t1", "a1", "allow")},
		{"ledger rewrites an event", streams.ServiceLedger, streams.EventReceivedSubject("t1", "a1")},
		{"policy writes a KV bucket it does not use", streams.ServicePolicy, "$KV." + streams.IdempotencyBucket + ".k"},
		{"ingest reads a console session", streams.ServiceIngest, "$JS.API.DIRECT.GET.KV_" + streams.ConsoleSessionsBucket + ".$KV." + streams.ConsoleSessionsBucket + ".k"},
		{"notifier writes a console session", streams.ServiceNotifier, "$KV." + streams.ConsoleSessionsBucket + ".k"},
		{"risk creates a stream it does not own", streams.ServiceRisk, "$JS.API.STREAM.CREATE." + streams.Control},
		{"guardian deletes a stream", streams.ServiceGuardian, "$JS.API.STREAM.DELETE." + streams.Guardian},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, _, errs := connect(t, env, tc.user)
			if err := nc.Publish(tc.subject, []byte(`{}`)); err != nil {
				t.Fatal(err)
			}
			if err := nc.Flush(); err != nil {
				t.Fatal(err)
			}
			violation(t, errs, tc.subject)
		})
	}

	t.Run("key created through the store is refused", func(t *testing.T) {
		_, js, errs := connect(t, env, streams.ServiceNotifier)
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		if _, _, err := control.NewStore(js).CreateKey(cctx, "t1", auth.RoleOwner, "k", "x"); err == nil {
			t.Fatal("notifier created a key")
		}
		violation(t, errs, "control.v1.key_changed")
	})

	t.Run("reading another service's replies", func(t *testing.T) {
		nc, _, errs := connect(t, env, streams.ServiceLedger)
		if _, err := nc.Subscribe("_INBOX.>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		if _, err := nc.Subscribe(natsauth.InboxPrefix("UOTHER")+".>", func(*nats.Msg) {}); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, "_INBOX.>")
		violation(t, errs, "_INBOX_UOTHER")
	})

	t.Run("answering decisions in policy's place", func(t *testing.T) {
		nc, _, errs := connect(t, env, streams.ServiceNotifier)
		if _, err := nc.QueueSubscribe(streams.EvaluateRPC, "vigil-policy", func(m *nats.Msg) { _ = m.Respond([]byte(`{"decision":"allow"}`)) }); err != nil {
			t.Fatal(err)
		}
		violation(t, errs, streams.EvaluateRPC)
	})

	t.Run("policy serves and api calls", func(t *testing.T) {
		pnc, _, _ := connect(t, env, streams.ServicePolicy)
		srv, err := micro.AddService(pnc, micro.Config{Name: "vigil-policy", Version: "1.0.0", QueueGroup: "vigil-policy"})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = srv.Stop() }()
		if err := srv.AddEndpoint("evaluate", micro.HandlerFunc(func(r micro.Request) { _ = r.Respond([]byte("ok")) }), micro.WithEndpointSubject(streams.EvaluateRPC)); err != nil {
			t.Fatal(err)
		}
		if err := pnc.Flush(); err != nil {
			t.Fatal(err)
		}
		anc, _, _ := connect(t, env, streams.ServiceAPI)
		msg, err := anc.RequestWithContext(ctx, streams.EvaluateRPC, []byte(`{}`))
		if err != nil {
			t.Fatalf("api asking policy: %v", err)
		}
		if string(msg.Data) != "ok" {
			t.Fatalf("reply %q", msg.Data)
		}
	})
}

// TestInitKeepsSeeds runs Init twice and checks the seeds (0600) survive.
func TestInitKeepsSeeds(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "creds")
	first, err := natsauth.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	again, err := natsauth.Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := natsauth.Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(first) != len(natsauth.Users()) {
		t.Fatalf("%d users, want %d", len(first), len(natsauth.Users()))
	}
	for i := range first {
		if first[i] != again[i] || first[i] != loaded[i] {
			t.Fatalf("user %s changed: %v %v %v", first[i].Name, first[i], again[i], loaded[i])
		}
		fi, err := os.Stat(natsauth.SeedFile(dir, first[i].Name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s is %v, want 0600", fi.Name(), fi.Mode().Perm())
		}
	}
	if err := os.Remove(natsauth.SeedFile(dir, streams.ServiceAPI)); err != nil {
		t.Fatal(err)
	}
	if _, err := natsauth.Load(dir); !errors.Is(err, natsauth.ErrNoCredential) {
		t.Fatalf("Load without api's seed: %v", err)
	}
}

// TestServerConfigFile checks that the configuration file compose runs
// gives nats-server the very users and permissions the embedded server
// gets, and that a server started from it admits a service.
func TestServerConfigFile(t *testing.T) {
	dir := t.TempDir()
	users, err := natsauth.Init(filepath.Join(dir, "creds"))
	if err != nil {
		t.Fatal(err)
	}
	text, err := natsauth.ServerConfig(users, natsauth.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "nats.conf")
	full := text + "port: -1\njetstream { store_dir: " + `"` + filepath.Join(dir, "js") + `"` + " }\n"
	if err := os.WriteFile(conf, []byte(full), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	want, err := natsauth.ServerUsers(users)
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Nkeys) != len(want) {
		t.Fatalf("config has %d users, want %d", len(opts.Nkeys), len(want))
	}
	for i, w := range want {
		got := opts.Nkeys[i]
		if got.Nkey != w.Nkey {
			t.Fatalf("user %d: %s, want %s", i, got.Nkey, w.Nkey)
		}
		if (got.Permissions == nil) != (w.Permissions == nil) {
			t.Fatalf("user %s: permissions %v, want %v", users[i].Name, got.Permissions, w.Permissions)
		}
		if w.Permissions == nil {
			continue
		}
		if strings.Join(got.Permissions.Publish.Allow, " ") != strings.Join(w.Permissions.Publish.Allow, " ") ||
			strings.Join(got.Permissions.Subscribe.Allow, " ") != strings.Join(w.Permissions.Subscribe.Allow, " ") ||
			(got.Permissions.Response == nil) != (w.Permissions.Response == nil) {
			t.Fatalf("user %s: permissions differ\n got %+v\nwant %+v", users[i].Name, got.Permissions, w.Permissions)
		}
	}
	opts.NoSigs, opts.NoLog = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Start()
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	if nc, err := nats.Connect(srv.ClientURL()); err == nil {
		nc.Close()
		t.Fatal("anonymous client admitted")
	}
	nc, js, err := natsx.Connect(srv.ClientURL(), "ingest", discard, mustOpts(t, natsauth.SeedFile(filepath.Join(dir, "creds"), streams.ServiceIngest))...)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := natsx.EnsureStreams(ctx, js, streams.IngestConfig(streams.DefaultOptions)); err != nil {
		t.Fatalf("ingest declaring its stream: %v", err)
	}
}

// TestSeedFromEnvFile connects with the seed an env file carries, as a
// container does, and checks the env files are private.
func TestSeedFromEnvFile(t *testing.T) {
	env := natstest.Start(t)
	dir := filepath.Join(t.TempDir(), "env")
	if err := natsauth.WriteEnvFiles(env.CredsDir, dir); err != nil {
		t.Fatal(err)
	}
	path := natsauth.EnvFile(dir, streams.ServiceIngest)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s is %v, want 0600", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var seed string
	for line := range strings.Lines(string(data)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "VIGIL_NATS_NKEY="); ok {
			seed = v
		}
	}
	for _, tc := range []struct {
		name    string
		cred    natsauth.Credential
		wantErr bool
	}{
		{"seed from the env file", natsauth.Credential{Seed: seed}, false},
		{"file and seed at once", natsauth.Credential{File: natsauth.SeedFile(env.CredsDir, streams.ServiceIngest), Seed: seed}, true},
		{"not a seed", natsauth.Credential{Seed: "SUNOTASEED"}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts, err := natsauth.ClientOptions(tc.cred, natsauth.TLSFiles{})
			if tc.wantErr {
				if err == nil {
					t.Fatal("accepted")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			nc, js, err := natsx.Connect(env.Server.ClientURL(), "env", discard, opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := natsx.EnsureStreams(ctx, js, streams.IngestConfig(streams.DefaultOptions)); err != nil {
				t.Fatalf("ingest declaring its stream: %v", err)
			}
		})
	}
}

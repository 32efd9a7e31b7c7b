package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
	"github.com/vigilhq/vigil/services/notifier"
)

// TestSecretsExport migrates a dev data directory whose NATS holds the
// keys an older Vigil generated: the stack refuses to start on it, `vigil
// secrets export` moves the keys into files (0600) and deletes the bucket,
// and the stack then starts with the very same keys.
func TestSecretsExport(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dataDir := t.TempDir()
	legacy := map[string][]byte{"redaction": bytes.Repeat([]byte{1}, 32), "sealing": bytes.Repeat([]byte{2}, 32)}
	func() {
		srv, local, err := stack.StartNATS(StackConfig{DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		nc, js, err := local.Connect(natsauth.Admin, "old-vigil", slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		kv, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: control.DeploymentKeysBucket})
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range legacy {
			if _, err := kv.Put(ctx, k, v); err != nil {
				t.Fatal(err)
			}
		}
	}()
	cfg := StackConfig{DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1, Ingest: ingest.DefaultConfig(), API: benchAPIConfig(), Log: slog.New(slog.DiscardHandler)}
	if st, err := StartStack(ctx, cfg); !errors.Is(err, control.ErrNoSecret) {
		if err == nil {
			st.Close()
		}
		t.Fatalf("StartStack on legacy keys: %v", err)
	}
	// No server listens: export opens the data directory itself.
	args := []string{"--nats-url", "nats://127.0.0.1:1", "--data-dir", dataDir}
	var out bytes.Buffer
	if err := runSecretsExport(ctx, args, &out); err != nil {
		t.Fatal(err)
	}
	for file, want := range map[string][]byte{redactionKeyFile: legacy["redaction"], judgeSealKeyFile: legacy["sealing"]} {
		path := filepath.Join(dataDir, file)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s is %v, want 0600", file, fi.Mode().Perm())
		}
		got, err := keyFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s = %x (%v), want the bucket's %x", file, got, err, want)
		}
	}
	out.Reset()
	if err := runSecretsExport(ctx, args, &out); err != nil || !bytes.Contains(out.Bytes(), []byte("nothing to export")) {
		t.Fatalf("second export: %v %q", err, out.String())
	}
	st, err := StartStack(ctx, cfg)
	if err != nil {
		t.Fatalf("StartStack after export: %v", err)
	}
	defer st.Close()
	if _, err := st.JS.KeyValue(ctx, control.DeploymentKeysBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("bucket after export: %v", err)
	}
}

// TestSecretsExportConflict keeps the bucket when the destination already
// holds a different key.
func TestSecretsExportConflict(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	env := natstest.Start(t)
	kv, err := env.JS.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: control.DeploymentKeysBucket})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "redaction", bytes.Repeat([]byte{1}, 32)); err != nil {
		t.Fatal(err)
	}
	envPath := filepath.Join(t.TempDir(), ".env")
	if err := envFile(envPath).set(envRedactionKey, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))); err != nil {
		t.Fatal(err)
	}
	args := []string{"--nats-url", env.Server.ClientURL(), "--nats-creds", natsauth.SeedFile(env.CredsDir, natsauth.Admin), "--env-file", envPath}
	if err := runSecretsExport(ctx, args, io.Discard); err == nil {
		t.Fatal("exported over a different key")
	}
	if _, err := env.JS.KeyValue(ctx, control.DeploymentKeysBucket); err != nil {
		t.Fatalf("bucket deleted after a refused export: %v", err)
	}
}

// TestSecretsRotate re-seals a channel's credentials and a tenant's LLM
// API key under new keys, resuming with a pending new key as an
// interrupted rotation would.
func TestSecretsRotate(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	env := natstest.Start(t)
	if err := natsx.EnsureStreams(ctx, env.JS, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	dataDir := t.TempDir()
	store := dirStore(dataDir)
	oldNotifier, oldSeal := bytes.Repeat([]byte{3}, 32), bytes.Repeat([]byte{4}, 32)
	pending := bytes.Repeat([]byte{5}, 32) // an interrupted rotation's new key
	for name, k := range map[string][]byte{envNotifierKey: oldNotifier, envJudgeSealKey: oldSeal, envJudgeSealKey + nextSuffix: pending} {
		if err := store.set(name, base64.StdEncoding.EncodeToString(k)); err != nil {
			t.Fatal(err)
		}
	}
	nbox, err := notifier.NewBox(oldNotifier)
	if err != nil {
		t.Fatal(err)
	}
	jbox, err := judge.NewBox(oldSeal)
	if err != nil {
		t.Fatal(err)
	}
	// Records as the notifier and the api store them.
	ch := notifier.Channel{ID: "ch_1", Tenant: "acme", Type: notifier.TypeWebhook, Sealed: nbox.Seal([]byte(`{"url":"https://hooks.example/x"}`), "acme/ch_1")}
	publish(t, env.JS, streams.ChannelSubject("acme", "ch_1"), ch)
	llm := judge.ConfigRecord{Tenant: "acme", BaseURL: "https://llm.example", SealedKey: jbox.Seal([]byte("sk-secret"), "llm-config/acme")}
	publish(t, env.JS, streams.LLMConfigSubject("acme"), llm)

	args := []string{"--nats-url", env.Server.ClientURL(), "--nats-creds", natsauth.SeedFile(env.CredsDir, natsauth.Admin), "--data-dir", dataDir}
	for _, which := range []string{"notifier", "judge-seal"} {
		if err := runSecretsRotate(ctx, append(args, "--secret", which), io.Discard); err != nil {
			t.Fatalf("rotate %s: %v", which, err)
		}
	}
	newSeal, err := keyFile(filepath.Join(dataDir, judgeSealKeyFile))
	if err != nil || !bytes.Equal(newSeal, pending) {
		t.Fatalf("judge seal key %x (%v), want the pending %x", newSeal, err, pending)
	}
	if _, ok, _ := store.get(envJudgeSealKey + nextSuffix); ok {
		t.Fatal("pending key left behind")
	}
	newNotifier, err := keyFile(filepath.Join(dataDir, notifierKeyFile))
	if err != nil || bytes.Equal(newNotifier, oldNotifier) {
		t.Fatalf("notifier key not rotated: %x %v", newNotifier, err)
	}

	cs := control.NewStore(env.JS)
	var gotLLM judge.ConfigRecord
	if _, err := cs.LLMConfig(ctx, "acme", &gotLLM); err != nil {
		t.Fatal(err)
	}
	newJBox, _ := judge.NewBox(newSeal)
	if k, err := gotLLM.OpenKey(newJBox); err != nil || k != "sk-secret" {
		t.Fatalf("LLM key under the new secret: %q %v", k, err)
	}
	if _, err := gotLLM.OpenKey(jbox); err == nil {
		t.Fatal("LLM key still opens with the old secret")
	}
	if gotLLM.BaseURL != llm.BaseURL {
		t.Fatalf("other fields changed: %+v", gotLLM)
	}
	msg, err := env.JS.Stream(ctx, streams.Control)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := msg.GetLastMsgForSubject(ctx, streams.ChannelSubject("acme", "ch_1"))
	if err != nil {
		t.Fatal(err)
	}
	newNBox, _ := notifier.NewBox(newNotifier)
	// Re-sealing from the new key to another succeeds only if the record
	// opens with the new key; with the old one it must not.
	other, _ := notifier.NewBox(bytes.Repeat([]byte{6}, 32))
	if _, changed, err := notifier.ResealChannel(raw.Data, newNBox, other); err != nil || !changed {
		t.Fatalf("channel under the new key: changed=%v %v", changed, err)
	}
	if _, _, err := notifier.ResealChannel(raw.Data, nbox, other); err == nil {
		t.Fatal("channel still opens with the old key")
	}
	// Rotating again starts from the key just installed.
	if err := runSecretsRotate(ctx, append(args, "--secret", "judge-seal"), io.Discard); err != nil {
		t.Fatal(err)
	}
	if err := runSecretsRotate(ctx, append(args, "--secret", "vault"), io.Discard); err == nil {
		t.Fatal("rotated an unknown secret")
	}
}

func publish(t *testing.T, js jetstream.JetStream, subject string, v any) {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(context.Background(), subject, data); err != nil {
		t.Fatal(err)
	}
}

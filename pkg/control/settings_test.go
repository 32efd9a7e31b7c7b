package control_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/redact"
	"github.com/vigilhq/vigil/pkg/streams"
)

// TestSettingsView: the view waits for CONTROL, loads what is stored,
// follows changes, keeps tenants apart, and keeps the previous policy when
// a stored record does not compile.
func TestSettingsView(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := natstest.Start(t)
	red, err := redact.New(bytes.Repeat([]byte{3}, 32))
	if err != nil {
		t.Fatal(err)
	}
	view := control.NewSettings(n.JS, red, slog.New(slog.DiscardHandler))
	// Started before CONTROL exists (the api creates it later).
	if err := view.Run(ctx); err != nil {
		t.Fatal(err)
	}
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	if _, err := view.Redaction(short, "acme"); err == nil {
		t.Fatal("Redaction answered before the view was loaded")
	}
	scancel()

	if err := natsx.EnsureStreams(ctx, n.JS, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	store := control.NewStore(n.JS)
	seq, err := store.PutRedaction(ctx, redact.Record{Tenant: "acme", Settings: redact.Settings{
		Disabled: []string{"email"}, Patterns: []redact.Pattern{{Name: "ticket", Regex: `TCK-\d+`}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if err := view.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		tenant, in string
		gone, kept []string
	}{
		{"acme", "jane@example.com TCK-42", []string{"TCK-42"}, []string{"jane@example.com", "[TICKET:"}},
		{"globex", "jane@example.com TCK-42", []string{"jane@example.com"}, []string{"TCK-42", "[EMAIL:"}},
	}
	for _, tc := range cases {
		pol, err := view.Redaction(ctx, tc.tenant)
		if err != nil {
			t.Fatal(err)
		}
		out, _ := pol.String(tc.tenant, tc.in)
		for _, g := range tc.gone {
			if strings.Contains(out, g) {
				t.Errorf("%s: %q survived in %q", tc.tenant, g, out)
			}
		}
		for _, k := range tc.kept {
			if !strings.Contains(out, k) {
				t.Errorf("%s: %q missing from %q", tc.tenant, k, out)
			}
		}
	}

	// A record that does not compile (written around the API) leaves the
	// previous policy in force.
	bad, _ := json.Marshal(redact.Record{Tenant: "acme", Settings: redact.Settings{Patterns: []redact.Pattern{{Name: "x", Regex: "("}}}})
	ack, err := n.JS.PublishMsg(ctx, &nats.Msg{Subject: streams.RedactionSubject("acme"), Data: bad})
	if err != nil {
		t.Fatal(err)
	}
	if err := view.WaitFor(ctx, ack.Sequence); err != nil {
		t.Fatal(err)
	}
	pol, _ := view.Redaction(ctx, "acme")
	if out, _ := pol.String("acme", "TCK-42"); strings.Contains(out, "TCK-42") {
		t.Errorf("the previous policy was dropped: %q", out)
	}

	// Read-your-writes through the store.
	rec, err := store.Redaction(ctx, "acme")
	if err != nil || rec.Revision != ack.Sequence {
		t.Fatalf("store read: %+v %v", rec, err)
	}
	if _, err := store.Redaction(ctx, "nobody"); err != control.ErrNotFound {
		t.Fatalf("unknown tenant: %v", err)
	}
}

// TestSecretsNotInNATS reproduces the review's finding that the redaction
// and sealing keys were generated into a KV bucket any NATS client could
// read: without a configured key the settings view refuses to start, and
// nothing creates the bucket.
func TestSecretsNotInNATS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n := natstest.Start(t)
	if _, err := control.StartSettings(ctx, n.JS, nil, slog.New(slog.DiscardHandler)); !errors.Is(err, control.ErrNoSecret) {
		t.Fatalf("StartSettings without a key: %v", err)
	}
	if _, err := control.StartSettings(ctx, n.JS, bytes.Repeat([]byte{7}, 32), slog.New(slog.DiscardHandler)); err != nil {
		t.Fatalf("StartSettings with a key: %v", err)
	}
	if _, err := n.JS.KeyValue(ctx, control.DeploymentKeysBucket); !errors.Is(err, jetstream.ErrBucketNotFound) {
		t.Fatalf("deployment keys bucket: %v, want none", err)
	}
	for _, tc := range []struct {
		key []byte
		ok  bool
	}{{nil, false}, {make([]byte, 31), false}, {make([]byte, 32), true}, {make([]byte, 64), true}} {
		if err := control.RequireSecret("--x", tc.key); (err == nil) != tc.ok || (err != nil && !errors.Is(err, control.ErrNoSecret)) {
			t.Errorf("RequireSecret(%d bytes) = %v", len(tc.key), err)
		}
	}
}

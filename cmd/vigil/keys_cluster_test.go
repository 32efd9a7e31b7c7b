package main

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// TestKeysCreateKeepsControlStream: `vigil keys create` against a running
// deployment (a one-off pod on Kubernetes) leaves CONTROL as its owner, the
// api, made it — three replicas and the deployment's duplicate window —
// rather than rewriting it with the CLI's defaults (one replica).
func TestKeysCreateKeepsControlStream(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	_, js := c.ConnectAs(t, natsauth.Admin, 0)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	deployed := streams.Options{Replicas: 3, DuplicateWindow: 3 * time.Minute}
	if err := natsx.EnsureStreams(ctx, js, streams.ControlConfig(deployed)); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	args := []string{"--nats-url", c.URL(1), "--nats-creds", natsauth.SeedFile(c.CredsDir, natsauth.Admin),
		"--data-dir", t.TempDir(), "--tenant", "acme", "--role", "admin"}
	if err := runKeysCreate(ctx, args, &out); err != nil {
		t.Fatalf("keys create: %v\n%s", err, out.String())
	}
	s, err := js.Stream(ctx, streams.ControlConfig(deployed).Name)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.CachedInfo().Config; got.Replicas != 3 || got.Duplicates != 3*time.Minute {
		t.Errorf("after keys create CONTROL has %d replicas and a %s duplicate window, want the deployment's 3 and 3m0s", got.Replicas, got.Duplicates)
	}
}

package main

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// TestDevStopsWhenAWorkerFails: in `vigil dev`, one service's worker that
// cannot start (the decisions projector's consumer cannot be created)
// stops the whole process with that cause, as a service binary would.
func TestDevStopsWhenAWorkerFails(t *testing.T) {
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	st, err := StartStack(ctx, StackConfig{
		DataDir: t.TempDir(), NATSHost: "127.0.0.1", NATSPort: -1,
		ClickHouseDSN: db.DSN, ClickHouseWait: 10 * time.Second,
		Ingest: ingest.DefaultConfig(), API: api.DefaultConfig(), Log: polLogger(t),
	})
	if err != nil {
		t.Fatalf("StartStack: %v", err)
	}
	defer st.Close()
	// The projector's durable name is taken with an ack policy that
	// cannot be updated.
	if _, err := st.JS.CreateConsumer(ctx, streams.Policy, jetstream.ConsumerConfig{
		Durable: policysvc.DecisionsProjector, AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- st.Serve(context.Background(), ln) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("vigil dev kept running with a dead projector")
	}
	if err == nil || !strings.HasPrefix(err.Error(), "policy: ") || !strings.Contains(err.Error(), policysvc.DecisionsProjector) {
		t.Fatalf("Serve = %v, want the projector's failure named after the policy component", err)
	}
}

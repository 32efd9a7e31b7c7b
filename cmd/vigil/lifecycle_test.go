package main

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	"github.com/vigilhq/vigil/services/notifier"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// TestDevStopsWhenAWorkerFails: in `vigil dev`, one service's worker that
// cannot start (its projector's consumer cannot be created) stops the
// whole process with that cause, as it stops a service binary (both run
// daemon.Supervisor) — before, the policy service kept answering
// decisions it never projected, and nothing was logged. Once stopped, no
// decision responder is left: callers fail closed.
func TestDevStopsWhenAWorkerFails(t *testing.T) {
	tests := []struct {
		component, stream, durable string
	}{
		{"policy", streams.Policy, policysvc.DecisionsProjector},
		{"api", streams.Control, api.AgentsProjector},
		{"notifier", streams.Notifier, notifier.ConsumerProject},
	}
	for _, tt := range tests {
		t.Run(tt.component, func(t *testing.T) {
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
			// The projector's durable name is taken with an ack policy
			// that cannot be updated.
			if _, err := st.JS.CreateConsumer(ctx, tt.stream, jetstream.ConsumerConfig{
				Durable: tt.durable, AckPolicy: jetstream.AckNonePolicy,
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
			if err == nil || !strings.HasPrefix(err.Error(), tt.component+": ") || !strings.Contains(err.Error(), tt.durable) {
				t.Fatalf("Serve = %v, want the projector's failure named after the %s component", err, tt.component)
			}
			if _, err := st.NC.Request(streams.EvaluateRPC, []byte(`{}`), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
				t.Fatalf("decision request after the failure: %v, want no responders", err)
			}
		})
	}
}

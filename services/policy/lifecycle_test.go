package policy_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// TestProjectorFailureStopsTheProcess: when the decisions projector
// cannot create its consumer, the policy process stops with that cause
// instead of answering decisions it never projects — and its decision
// responder is gone, so callers fail closed (no responders) rather than
// being answered by a half-working service.
func TestProjectorFailureStopsTheProcess(t *testing.T) {
	env := natstest.Start(t)
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	if err := natsx.EnsureStreams(ctx, env.JS, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	cfg := policysvc.DefaultConfig()
	cfg.SigningSeed, cfg.EvaluateEvents = rules.NewSeed(), false
	cfg.RedactionKey, cfg.Judge.SealSecret = rules.NewSeed(), rules.NewSeed()
	reg := daemon.Registry()
	catalog := control.NewCatalog(env.JS, log)
	svc, err := policysvc.New(cfg, policysvc.Deps{NC: env.Conn, JS: env.JS, CH: db.Conn, Catalog: catalog, Log: log, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	sup := &daemon.Supervisor{Log: log, Reg: reg, Components: []daemon.Component{catalog.Component(), svc.Component()}}
	defer sup.Close()
	if err := sup.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	// The responder answers from Start on.
	if _, err := env.Conn.Request(streams.EvaluateRPC, []byte(`{}`), 5*time.Second); err != nil {
		t.Fatalf("responder before Serve: %v", err)
	}
	// Someone took the projector's durable name with an ack policy that
	// cannot be updated: creating the consumer fails.
	if _, err := env.JS.CreateConsumer(ctx, streams.Policy, jetstream.ConsumerConfig{
		Durable: policysvc.DecisionsProjector, AckPolicy: jetstream.AckNonePolicy,
	}); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- sup.Serve(context.Background(), ln) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		t.Fatal("the process kept running with a dead projector")
	}
	if err == nil || !strings.HasPrefix(err.Error(), "policy: ") || !strings.Contains(err.Error(), policysvc.DecisionsProjector) {
		t.Fatalf("Serve = %v, want the projector's failure named after the policy component", err)
	}
	if _, err := env.Conn.Request(streams.EvaluateRPC, []byte(`{}`), 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("decision request after the failure: %v, want no responders", err)
	}
}

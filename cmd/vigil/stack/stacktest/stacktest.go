// Package stacktest runs the all-in-one stack (package stack, what `vigil
// dev` runs) inside a test: embedded NATS, the real ClickHouse database the
// test gives it, HTTP on a loopback port, and a shutdown at cleanup that
// goes the way a SIGTERM does. The end-to-end tests of cmd/vigil and the
// conformance suite (test/conformance) both start their stacks here.
package stacktest

import (
	"context"
	"crypto/sha256"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// SigningSeed is the policy pack signing seed of every test stack; it is
// fixed so that a stack restarted on the same data keeps its key.
var SigningSeed = func() []byte { s := sha256.Sum256([]byte("vigil e2e signing seed")); return s[:] }()

// ProjectorLinger is the ingest projector's linger in test stacks: short,
// so that reads see an event soon after it is accepted.
const ProjectorLinger = 50 * time.Millisecond

// Options configures a test stack. DSN is required; the rest defaults.
type Options struct {
	// DataDir defaults to a fresh t.TempDir().
	DataDir string
	// DSN is the ClickHouse DSN of the stack, normally a chtest.DB's;
	// ClickHouseCluster the cluster its servers form (chtest.Cluster).
	DSN               string
	ClickHouseCluster string
	// Ingest, API and Policy adjust the services' configurations after
	// the test defaults (ProjectorLinger, SigningSeed) are applied.
	Ingest func(*ingest.Config)
	API    func(*api.Config)
	Policy func(*policysvc.Config)
	// OIDC, if set, lets console members sign in with its tokens.
	OIDC *oidc.Verifier
	// Log defaults to the test's log (testkit.Logger at info).
	Log *slog.Logger
	// Tracer traces the stack's requests (nil: none).
	Tracer trace.TracerProvider
	// NATSURL and NATSCredsDir, when set, run the stack on that NATS
	// (natstest.Cluster's URL and CredsDir) instead of an embedded
	// server; Services runs only those services (one replica of a split
	// deployment), named InstanceID; Streams are the stream options
	// (replicas). See stack.Config.
	NATSURL, NATSCredsDir string
	Services              []string
	InstanceID            string
	Streams               streams.Options
	// DecideOverNATS spreads the stack's decisions over every policy
	// replica instead of its own (stack.Config.DecideOverNATS).
	DecideOverNATS bool
}

// Server is a running stack serving HTTP at URL.
type Server struct {
	*stack.Stack
	// URL is the base URL of the HTTP API, "http://127.0.0.1:port".
	URL string

	t      testing.TB
	cancel context.CancelFunc
	served chan error
	once   sync.Once
}

// Start starts a stack as o says and serves it; it is stopped at the
// test's cleanup, or earlier by Stop.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.DataDir == "" {
		o.DataDir = t.TempDir()
	}
	if o.Log == nil {
		o.Log, _ = testkit.Logger(t, slog.LevelInfo)
	}
	ic, ac, pc := ingest.DefaultConfig(), api.DefaultConfig(), policysvc.DefaultConfig()
	ic.ProjectorLinger = ProjectorLinger
	pc.SigningSeed = SigningSeed
	if o.Ingest != nil {
		o.Ingest(&ic)
	}
	if o.API != nil {
		o.API(&ac)
	}
	if o.Policy != nil {
		o.Policy(&pc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	st, err := stack.Start(ctx, stack.Config{
		DataDir: o.DataDir, NATSHost: "127.0.0.1", NATSPort: -1,
		ClickHouseDSN: o.DSN, ClickHouseCluster: o.ClickHouseCluster, ClickHouseWait: 20 * time.Second,
		Ingest: ic, API: ac, Policy: pc, OIDC: o.OIDC, Log: o.Log, Tracer: o.Tracer,
		NATSURL: o.NATSURL, NATSCredsDir: o.NATSCredsDir, Services: o.Services, InstanceID: o.InstanceID, Streams: o.Streams,
		DecideOverNATS: o.DecideOverNATS,
	})
	if err != nil {
		t.Fatalf("stack.Start: %v", err)
	}
	return Serve(t, st)
}

// Serve serves an already started stack on a loopback port; the stack is
// stopped and closed at the test's cleanup, or earlier by Stop.
func Serve(t testing.TB, st *stack.Stack) *Server {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		t.Fatalf("listen: %v", err)
	}
	sctx, scancel := context.WithCancel(context.Background())
	s := &Server{Stack: st, URL: "http://" + ln.Addr().String(), t: t, cancel: scancel, served: make(chan error, 1)}
	go func() { s.served <- st.Serve(sctx, ln) }()
	t.Cleanup(s.Stop)
	return s
}

// Kill stops the stack the way a kill -9 does, as far as one process
// can: its NATS connections close at once (nothing drained or acked, so
// what it held is redelivered to the other replicas), then it is shut
// down without waiting on what it had in flight.
func (s *Server) Kill() {
	s.once.Do(func() {
		s.Stack.Kill()
		s.cancel()
		select {
		case <-s.served:
		case <-time.After(90 * time.Second):
			s.t.Errorf("Serve did not return within 90s of a kill")
		}
		s.Close()
	})
}

// Stop shuts the stack down the way a SIGTERM does (HTTP first, then the
// workers drain and flush) and releases NATS. It is idempotent.
func (s *Server) Stop() {
	s.once.Do(func() {
		s.cancel()
		select {
		case err := <-s.served:
			if err != nil {
				s.t.Errorf("Serve returned: %v", err)
			}
		case <-time.After(90 * time.Second):
			s.t.Errorf("Serve did not return within 90s of cancel")
		}
		s.Close()
	})
}

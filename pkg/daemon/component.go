package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/readmodel"
)

// Component is one service's share of a process: what it provisions, the
// tables it migrates, the views it keeps, the routes it serves and the
// workers it runs. Every field but Name is optional. A service binary runs
// its own components; `vigil dev` runs all of them; both through one
// Supervisor, so startup and shutdown are the same code everywhere.
type Component struct {
	// Name says which component failed in errors and logs.
	Name string
	// Provision creates or updates what the component owns in NATS:
	// streams, KV buckets, generated deployment keys. It must be
	// idempotent: the supervisor runs it again after a transient
	// JetStream error (natsx.Provision).
	Provision func(ctx context.Context) error
	// Migrate applies the migrations of the ClickHouse tables it owns.
	Migrate func(ctx context.Context) error
	// Start starts the component's views and watchers (in-memory
	// projections, RPC responders) on ctx, which ends only when the
	// supervisor stops them after the workers; it returns once they are
	// loaded, so routes and workers of later components can rely on them.
	Start func(ctx context.Context) error
	// Routes mounts its HTTP endpoints.
	Routes func(e *echo.Echo)
	// Workers run until the supervisor stops them; one that fails stops
	// the whole process.
	Workers []Worker
	// Close releases what the component holds, after everything stopped.
	Close func()
}

// Supervisor runs a set of components as one process. Startup goes phase
// by phase over all components — provision, migrate (owners of tables
// before the services whose migrations read them, see pkg/readmodel),
// start views — so a component may use what an earlier one provisioned. Then HTTP serves
// every component's routes while the workers run as one Group: a worker
// that fails stops the process and its error is what Serve returns.
// Shutdown is the reverse: HTTP finishes in-flight requests, workers drain
// and flush, views stop, components close in reverse order.
type Supervisor struct {
	Log *slog.Logger
	// Reg serves /metrics; Checks feed /readyz.
	Reg    *prometheus.Registry
	Checks map[string]httpkit.Check
	// Tracer traces every HTTP request (nil or a no-op provider: none).
	Tracer     trace.TracerProvider
	Components []Component
	// Pre run before routing (echo's Pre): a service binary's guard
	// against requests meant for another service (routes.Misdirected).
	Pre []echo.MiddlewareFunc

	echo     *echo.Echo
	life     context.Context
	stopLife context.CancelFunc
}

// Start provisions, migrates and starts every component, in order, and
// builds the HTTP server. ctx bounds startup only: views keep running on
// the supervisor's own context until Close. On error, call Close.
func (s *Supervisor) Start(ctx context.Context) error {
	seen := map[string]bool{}
	for _, c := range s.Components {
		if seen[c.Name] {
			return fmt.Errorf("supervisor: two components named %q", c.Name)
		}
		seen[c.Name] = true
	}
	// Views live until Close, past ctx: after a signal they still serve
	// the requests HTTP is finishing. Cancelling ctx during startup stops
	// them at once.
	s.life, s.stopLife = context.WithCancel(context.WithoutCancel(ctx))
	abort := context.AfterFunc(ctx, s.stopLife)
	defer abort()
	phases := []struct {
		name  string
		step  func(Component) func(context.Context) error
		ctx   context.Context
		order []Component
	}{
		{"provision", s.provision, ctx, s.Components},
		{"migrate", func(c Component) func(context.Context) error { return c.Migrate }, ctx, s.migrationOrder()},
		{"start", func(c Component) func(context.Context) error { return c.Start }, s.life, s.Components},
	}
	for _, ph := range phases {
		for _, c := range ph.order {
			if f := ph.step(c); f != nil {
				if err := f(ph.ctx); err != nil {
					if ctx.Err() != nil {
						return fmt.Errorf("%s %s: %w", c.Name, ph.name, errors.Join(context.Cause(ctx), err))
					}
					return fmt.Errorf("%s %s: %w", c.Name, ph.name, err)
				}
			}
		}
	}
	e, err := httpkit.NewServer(s.Log, s.Reg, httpkit.WithTracing(s.Tracer))
	if err != nil {
		return err
	}
	e.Pre(s.Pre...)
	httpkit.HealthRoutes(e, s.Reg, s.Checks)
	for _, c := range s.Components {
		if c.Routes != nil {
			c.Routes(e)
		}
	}
	s.echo = e
	return nil
}

// provision is c's Provision retried through what passes by itself on a
// JetStream cluster that is forming or missing a node (natsx.Provision):
// every component's streams and buckets, one retry policy.
func (s *Supervisor) provision(c Component) func(context.Context) error {
	if c.Provision == nil {
		return nil
	}
	return func(ctx context.Context) error { return natsx.Provision(ctx, s.Log, c.Name, c.Provision) }
}

// migrationOrder is the components in the order the read-model
// declaration gives their owners (pkg/readmodel): an owner migrates
// before the services whose migrations read its tables.
func (s *Supervisor) migrationOrder() []Component {
	names := make([]string, len(s.Components))
	byName := make(map[string]Component, len(s.Components))
	for i, c := range s.Components {
		names[i], byName[c.Name] = c.Name, c
	}
	out := make([]Component, 0, len(names))
	for _, n := range readmodel.MigrationOrder(names) {
		out = append(out, byName[n])
	}
	return out
}

// Echo is the HTTP server Start built (nil before).
func (s *Supervisor) Echo() *echo.Echo { return s.echo }

// Serve serves HTTP on ln and runs every component's workers until ctx
// ends or a worker fails, then shuts down in order (see Serve). The error
// names the component whose worker failed.
func (s *Supervisor) Serve(ctx context.Context, ln net.Listener) error {
	if s.echo == nil {
		return errors.New("supervisor: Serve before Start")
	}
	var workers []Worker
	for _, c := range s.Components {
		for _, w := range c.Workers {
			workers = append(workers, func(ctx context.Context) error {
				if err := w(ctx); err != nil {
					return fmt.Errorf("%s: %w", c.Name, err)
				}
				return nil
			})
		}
	}
	return serve(ctx, s.life, s.Log, s.echo, ln, workers)
}

// Run is Start, Serve on addr and Close.
func (s *Supervisor) Run(ctx context.Context, addr string) error {
	defer s.Close()
	if err := s.Start(ctx); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Close stops the views and closes the components in reverse order. Call
// it after Serve returned (or after Start failed).
func (s *Supervisor) Close() {
	if s.stopLife != nil {
		s.stopLife()
	}
	for i := len(s.Components) - 1; i >= 0; i-- {
		if c := s.Components[i]; c.Close != nil {
			c.Close()
		}
	}
}

package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/routes"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// Main is the whole main function of a service binary: run with a context
// that SIGINT and SIGTERM cancel, exit 1 with the error on failure (and 0
// for --help).
func Main(name string, run func(ctx context.Context, args []string) error) {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, name+":", err)
		os.Exit(1)
	}
}

// Process holds what every standalone service connects to, built from the
// common flags.
type Process struct {
	Log *slog.Logger
	NC  *nats.Conn
	JS  jetstream.JetStream
	// CH is nil for services that do not use ClickHouse.
	CH  driver.Conn
	Reg *prometheus.Registry
	// Tracer is the process's tracer provider (--otel-endpoint; a no-op
	// one when tracing is off): the supervisor's HTTP spans and the
	// services' RPC handlers and consumers trace on it.
	Tracer trace.TracerProvider

	name, addr string
	tracing    *telemetry.Tracing
	// nats is how NC was connected, for Publishers; more are the
	// connections Publishers opened, drained by Close before NC.
	nats config.NATS
	more []*nats.Conn
}

// ProcessOptions says what a service needs besides NATS.
type ProcessOptions struct {
	// ClickHouse connects to ClickHouse, waiting up to --clickhouse-wait
	// for it to come up.
	ClickHouse bool
}

// Start sets up logging, the metrics registry and tracing (service name
// "vigil-<name>") and connects to NATS as "vigil-<name>" (and to
// ClickHouse if asked). Close releases them.
func Start(ctx context.Context, name string, common config.Common, o ProcessOptions) (*Process, error) {
	log, err := Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return nil, err
	}
	p := &Process{Log: log, Reg: Registry(), name: name, addr: *common.HTTPAddr, nats: common.NATS}
	if p.tracing, err = telemetry.Start(ctx, common.Telemetry.Config("vigil-"+name), log); err != nil {
		return nil, err
	}
	p.Tracer = p.tracing.Provider
	if p.NC, p.JS, err = ConnectNATS(common.NATS, "vigil-"+name, log); err != nil {
		p.Close()
		return nil, err
	}
	if o.ClickHouse {
		if p.CH, err = OpenClickHouse(ctx, *common.ClickHouseDSN, *common.ClickHouseCluster, *common.ClickHouseWait, log); err != nil {
			p.Close()
			return nil, err
		}
	}
	return p, nil
}

// ConnectNATS connects to NATS as n configures: its URL, credential and
// TLS files.
func ConnectNATS(n config.NATS, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	cred := natsauth.Credential{File: *n.Creds, Seed: *n.NKey}
	opts, err := natsauth.ClientOptions(cred, natsauth.TLSFiles{CA: *n.TLSCA, Cert: *n.TLSCert, Key: *n.TLSKey})
	if err != nil {
		return nil, nil, err
	}
	nc, js, err := natsx.Connect(*n.URL, name, log, opts...)
	if errors.Is(err, nats.ErrAuthorization) && cred == (natsauth.Credential{}) {
		return nil, nil, fmt.Errorf("%w: no NATS credential configured (--nats-creds or $VIGIL_NATS_NKEY; `vigil nats init` generates them)", err)
	}
	return nc, js, err
}

// Publishers returns n JetStream contexts to publish on: JS and n-1 more
// on connections of their own, authenticated as NC is (same URL,
// credential and TLS). Close drains them. Concurrent publishers on one
// connection queue on its lock while its flusher writes; spread over a
// few they do not (ingest.Config.PublishConns).
func (p *Process) Publishers(n int) ([]jetstream.JetStream, error) {
	out := []jetstream.JetStream{p.JS}
	for i := 1; i < n; i++ {
		nc, js, err := ConnectNATS(p.nats, fmt.Sprintf("vigil-%s-pub%d", p.name, i), p.Log)
		if err != nil {
			return nil, fmt.Errorf("publisher connection %d: %w", i, err)
		}
		p.more = append(p.more, nc)
		out = append(out, js)
	}
	return out, nil
}

// Close drains NATS, closes ClickHouse and exports the spans still
// queued (bounded: a collector that is down does not hold it up).
func (p *Process) Close() {
	if p.CH != nil {
		_ = p.CH.Close()
	}
	for _, nc := range p.more {
		_ = nc.Drain()
	}
	if p.NC != nil {
		_ = p.NC.Drain()
	}
	if err := p.tracing.Shutdown(context.Background()); err != nil {
		p.Log.Warn("tracing shutdown", slog.String("error", err.Error()))
	}
}

// Run runs the components under a Supervisor (see Supervisor) serving
// HTTP on the --http-addr with /healthz, /readyz (NATS and, if connected,
// ClickHouse) and /metrics, until ctx ends or a worker fails. A request
// for a route the route table gives to another service is refused with a
// 404 naming that service (routes.Misdirected): served alone, a service
// must not answer for routes that only look like its own.
func (p *Process) Run(ctx context.Context, components ...Component) error {
	checks := map[string]httpkit.Check{"nats": natsx.Ready(p.NC)}
	if p.CH != nil {
		checks["clickhouse"] = func(ctx context.Context) error { return p.CH.Ping(ctx) }
	}
	sup := &Supervisor{Log: p.Log, Reg: p.Reg, Tracer: p.Tracer, Checks: checks, Components: components,
		Pre: []echo.MiddlewareFunc{routes.Misdirected(p.name, routes.Default())}}
	return sup.Run(ctx, p.addr)
}

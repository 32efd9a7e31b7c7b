// Package daemon runs a Vigil process: logging, metrics registry,
// connecting to ClickHouse with patience, and the run loop that serves
// HTTP and background workers and shuts them down in order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/vigilhq/vigil/pkg/chx"
)

// Logger builds the process logger.
func Logger(level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, opts)), nil
	}
	return nil, fmt.Errorf("log format %q: want text or json", format)
}

// Registry returns a metrics registry with the Go runtime and process
// collectors; every component registers on it, never on a global.
func Registry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// OpenClickHouse connects, retrying with backoff for up to wait, since in
// a compose start ClickHouse often comes up after its clients. cluster
// names the ClickHouse cluster the DSN's servers belong to, or is ""
// (chx.OpenCluster).
func OpenClickHouse(ctx context.Context, dsn, cluster string, wait time.Duration, log *slog.Logger) (driver.Conn, error) {
	b := backoff.NewExponentialBackOff()
	b.MaxElapsedTime = wait
	b.MaxInterval = 3 * time.Second
	return backoff.RetryWithData(func() (driver.Conn, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := chx.OpenCluster(cctx, dsn, cluster)
		if err != nil {
			log.Warn("clickhouse not reachable yet", slog.String("error", err.Error()))
		}
		return conn, err
	}, backoff.WithContext(b, ctx))
}

// Run serves e on addr and runs the workers until ctx ends. Shutdown goes
// in dependency order: stop accepting HTTP and finish in-flight requests
// (so every acknowledged write is already durable), then stop the workers,
// which drain their consumers and flush their buffers.
func Run(ctx context.Context, log *slog.Logger, e *echo.Echo, addr string, workers ...Worker) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", addr, err)
	}
	return Serve(ctx, log, e, ln, workers...)
}

// Serve is Run on an existing listener.
func Serve(ctx context.Context, log *slog.Logger, e *echo.Echo, ln net.Listener, workers ...Worker) error {
	// The workers outlive ctx on purpose: they stop only after HTTP has
	// drained, since in-flight requests may still need them.
	return serve(ctx, context.WithoutCancel(ctx), log, e, ln, workers)
}

// serve runs workers on a child of life and HTTP on ln until ctx ends or
// a worker fails, then shuts down in order: HTTP first, then the workers.
func serve(ctx, life context.Context, log *slog.Logger, e *echo.Echo, ln net.Listener, workers []Worker) error {
	g := NewGroup(life)
	for _, w := range workers {
		g.Go(w)
	}
	e.Listener = ln
	srvErr := make(chan error, 1)
	go func() { srvErr <- e.Start("") }()
	log.Info("http listening", slog.String("addr", ln.Addr().String()))

	var errs []error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srvErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("http: %w", err))
		}
	case <-g.Failed():
		log.Error("a worker failed; shutting down", slog.String("error", g.Cause().Error()))
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	if err := e.Shutdown(shutCtx); err != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", err))
	}
	g.Stop()
	return errors.Join(append([]error{g.Wait()}, errs...)...)
}

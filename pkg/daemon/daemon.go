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
	"sync"
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
// a compose start ClickHouse often comes up after its clients.
func OpenClickHouse(ctx context.Context, dsn string, wait time.Duration, log *slog.Logger) (driver.Conn, error) {
	b := backoff.NewExponentialBackOff()
	b.MaxElapsedTime = wait
	b.MaxInterval = 3 * time.Second
	return backoff.RetryWithData(func() (driver.Conn, error) {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		conn, err := chx.Open(cctx, dsn)
		if err != nil {
			log.Warn("clickhouse not reachable yet", slog.String("error", err.Error()))
		}
		return conn, err
	}, backoff.WithContext(b, ctx))
}

// Worker is a background loop that returns after ctx ends and its
// in-flight work is finished.
type Worker func(ctx context.Context) error

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
	workCtx, stopWorkers := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWorkers()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	failed := make(chan struct{})
	var once sync.Once
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := w(workCtx); err != nil && !errors.Is(err, context.Canceled) {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				once.Do(func() { close(failed) })
			}
		}()
	}

	e.Listener = ln
	srvErr := make(chan error, 1)
	go func() { srvErr <- e.Start("") }()
	log.Info("http listening", slog.String("addr", ln.Addr().String()))

	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case err := <-srvErr:
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			mu.Lock()
			errs = append(errs, fmt.Errorf("http: %w", err))
			mu.Unlock()
		}
	case <-failed:
		log.Error("a worker failed; shutting down")
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	shutErr := e.Shutdown(shutCtx)
	stopWorkers()
	wg.Wait()
	mu.Lock()
	if shutErr != nil {
		errs = append(errs, fmt.Errorf("http shutdown: %w", shutErr))
	}
	defer mu.Unlock()
	return errors.Join(errs...)
}

package daemon_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/testkit"
)

const waitLimit = 20 * time.Second

var discard = slog.New(slog.DiscardHandler)

// recorder keeps the order in which things happened.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) add(e string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.events = append(r.events, e)
}

func (r *recorder) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.events)
}

func newEcho() *echo.Echo {
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.GET("/ping", func(c echo.Context) error { return c.String(http.StatusOK, "pong") })
	return e
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// serve runs daemon.Serve in the background and returns its result
// channel.
func serve(ctx context.Context, e *echo.Echo, ln net.Listener, workers ...daemon.Worker) <-chan error {
	done := make(chan error, 1)
	go func() { done <- daemon.Serve(ctx, discard, e, ln, workers...) }()
	return done
}

func wait[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("timed out waiting for %s", what)
	}
	panic("unreachable")
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: waitLimit}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// waitRefused polls until addr no longer accepts connections.
func waitRefused(t *testing.T, addr string) {
	t.Helper()
	testkit.EventuallyWithin(t, waitLimit, addr+" refusing connections", func() bool {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return true
		}
		_ = c.Close()
		return false
	})
}

func TestServeFinishesInFlightRequestBeforeStoppingWorkers(t *testing.T) {
	var rec recorder
	entered, release := make(chan struct{}), make(chan struct{})
	e := newEcho()
	e.GET("/slow", func(c echo.Context) error {
		close(entered)
		<-release
		rec.add("request finished")
		return c.String(http.StatusOK, "slow done")
	})
	workerRunning := make(chan struct{})
	worker := func(ctx context.Context) error {
		close(workerRunning)
		<-ctx.Done()
		rec.add("worker stopped")
		return ctx.Err() // a clean stop, not a failure
	}
	quiet := func(ctx context.Context) error { <-ctx.Done(); return nil }

	ln := listen(t)
	base := "http://" + ln.Addr().String()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := serve(ctx, e, ln, worker, quiet)

	wait(t, "the worker to start", workerRunning)
	if code, body := get(t, base+"/ping"); code != http.StatusOK || body != "pong" {
		t.Fatalf("GET /ping = %d %q", code, body)
	}

	type result struct {
		code int
		body string
		err  error
	}
	slow := make(chan result, 1)
	go func() {
		resp, err := (&http.Client{Timeout: waitLimit}).Get(base + "/slow")
		if err != nil {
			slow <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		slow <- result{resp.StatusCode, string(b), err}
	}()
	wait(t, "the slow request to start", entered)

	cancel()
	// Shutdown has begun once the listener is closed ...
	waitRefused(t, ln.Addr().String())
	// ... but the request is still running, so the workers must be too,
	// and Serve must not have returned.
	if got := rec.list(); len(got) != 0 {
		t.Fatalf("while a request was in flight: %v", got)
	}
	select {
	case err := <-done:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}

	close(release)
	r := wait(t, "the slow response", slow)
	if r.err != nil || r.code != http.StatusOK || r.body != "slow done" {
		t.Fatalf("in-flight request got %d %q, %v; want it completed", r.code, r.body, r.err)
	}
	if err := wait(t, "Serve to return", done); err != nil {
		t.Fatalf("Serve = %v, want nil after a clean shutdown", err)
	}
	rec.add("serve returned")
	want := []string{"request finished", "worker stopped", "serve returned"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}
}

func TestServeWorkerFailure(t *testing.T) {
	boom := errors.New("boom")
	flushFailed := errors.New("flush failed at shutdown")
	tests := []struct {
		name string
		// ret is what the first worker returns when told to.
		ret error
		// otherErr is what the second worker returns when stopped.
		otherErr     error
		wantShutdown bool
		wantErrs     []error
	}{
		{name: "error shuts down and is returned", ret: boom, wantShutdown: true, wantErrs: []error{boom}},
		{name: "wrapped error", ret: errors.Join(errors.New("consume"), boom), wantShutdown: true, wantErrs: []error{boom}},
		{name: "errors while stopping are returned too", ret: boom, otherErr: flushFailed, wantShutdown: true, wantErrs: []error{boom, flushFailed}},
		{name: "a worker ending cleanly does not stop the process", ret: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			fail := make(chan struct{})
			returned := make(chan struct{})
			first := func(ctx context.Context) error {
				defer close(returned)
				select {
				case <-fail:
					return tt.ret
				case <-ctx.Done():
					return nil
				}
			}
			second := func(ctx context.Context) error {
				<-ctx.Done()
				rec.add("second stopped")
				return tt.otherErr
			}
			ln := listen(t)
			base := "http://" + ln.Addr().String()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := serve(ctx, newEcho(), ln, first, second)
			if code, _ := get(t, base+"/ping"); code != http.StatusOK {
				t.Fatalf("GET /ping = %d", code)
			}

			close(fail)
			wait(t, "the first worker to return", returned)
			if !tt.wantShutdown {
				// Still serving, second worker still running.
				if code, _ := get(t, base+"/ping"); code != http.StatusOK {
					t.Fatalf("GET /ping after a worker ended = %d", code)
				}
				select {
				case err := <-done:
					t.Fatalf("Serve returned %v after a worker ended cleanly", err)
				default:
				}
				if got := rec.list(); len(got) != 0 {
					t.Fatalf("other workers stopped: %v", got)
				}
				cancel()
			}

			err := wait(t, "Serve to return", done)
			for _, want := range tt.wantErrs {
				if !errors.Is(err, want) {
					t.Errorf("Serve = %v, want it to include %v", err, want)
				}
			}
			if len(tt.wantErrs) == 0 && err != nil {
				t.Errorf("Serve = %v, want nil", err)
			}
			if got := rec.list(); !slices.Equal(got, []string{"second stopped"}) {
				t.Errorf("other worker: %v, want it stopped", got)
			}
			if c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Second); err == nil {
				_ = c.Close()
				t.Error("HTTP still accepts connections after Serve returned")
			}
		})
	}
}

func TestServeWithoutWorkers(t *testing.T) {
	ln := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := serve(ctx, newEcho(), ln)
	if code, body := get(t, "http://"+ln.Addr().String()+"/ping"); code != http.StatusOK || body != "pong" {
		t.Fatalf("GET /ping = %d %q", code, body)
	}
	cancel()
	if err := wait(t, "Serve to return", done); err != nil {
		t.Fatalf("Serve = %v", err)
	}
}

func TestRunBadAddress(t *testing.T) {
	ln := listen(t) // occupy a port
	defer ln.Close()
	var started atomic.Bool
	w := func(context.Context) error { started.Store(true); return nil }
	err := daemon.Run(context.Background(), discard, newEcho(), ln.Addr().String(), w)
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Fatalf("Run on a busy port = %v, want a listen error", err)
	}
	if started.Load() {
		t.Fatal("a worker started although the server could not listen")
	}
}

func TestLogger(t *testing.T) {
	tests := []struct {
		level, format string
		wantErr       string
	}{
		{"info", "json", ""},
		{"debug", "text", ""},
		{"WARN", "json", ""},
		{"loud", "json", "log level"},
		{"info", "xml", "log format"},
	}
	for _, tt := range tests {
		t.Run(tt.level+"/"+tt.format, func(t *testing.T) {
			l, err := daemon.Logger(tt.level, tt.format)
			if tt.wantErr == "" {
				if err != nil || l == nil {
					t.Fatalf("Logger = %v, %v", l, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Logger = %v, want an error about %s", err, tt.wantErr)
			}
		})
	}
}

func TestRegistryHasRuntimeMetrics(t *testing.T) {
	mfs, err := daemon.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	for _, want := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if !slices.Contains(names, want) {
			t.Errorf("registry lacks %s", want)
		}
	}
}

func TestOpenClickHouse(t *testing.T) {
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	conn, err := daemon.OpenClickHouse(ctx, db.DSN, "", 5*time.Second, discard)
	if err != nil {
		t.Fatalf("OpenClickHouse: %v", err)
	}
	var one uint8
	if err := conn.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil || one != 1 {
		t.Fatalf("SELECT 1 = %d, %v", one, err)
	}
	_ = conn.Close()

	// Nothing listens on port 1: it gives up after wait with the last error.
	_, err = daemon.OpenClickHouse(ctx, "clickhouse://127.0.0.1:1/default?dial_timeout=200ms", "", 500*time.Millisecond, discard)
	if err == nil {
		t.Fatal("OpenClickHouse to a closed port succeeded")
	}
	if ctx.Err() != nil {
		t.Fatal("OpenClickHouse did not give up within its wait")
	}
}

package daemon_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// traced is a component that records each step of its lifecycle: its view
// runs from Start until the supervisor cancels it, its worker until it is
// told to stop.
func traced(rec *recorder, name string, fail error) daemon.Component {
	return daemon.Component{
		Name:      name,
		Provision: func(context.Context) error { rec.add(name + " provision"); return nil },
		Migrate:   func(context.Context) error { rec.add(name + " migrate"); return nil },
		Start: func(ctx context.Context) error {
			rec.add(name + " start")
			context.AfterFunc(ctx, func() { rec.add(name + " view stopped") })
			return nil
		},
		Routes: func(e *echo.Echo) {
			e.GET("/"+name, func(c echo.Context) error { return c.String(http.StatusOK, name) })
		},
		Workers: []daemon.Worker{func(ctx context.Context) error {
			if fail != nil {
				return fail
			}
			<-ctx.Done()
			rec.add(name + " worker stopped")
			return nil
		}},
		Close: func() { rec.add(name + " closed") },
	}
}

// TestSupervisorLifecycle: startup goes phase by phase over every
// component, and shutdown stops workers, then views, then closes the
// components in reverse order — whether ctx ended or a worker failed.
func TestSupervisorLifecycle(t *testing.T) {
	boom := errors.New("cannot create consumer")
	tests := []struct {
		name        string
		failB       error
		wantErr     error
		wantWorkers []string
	}{
		{name: "signal", wantWorkers: []string{"a worker stopped", "b worker stopped"}},
		{name: "failing worker", failB: boom, wantErr: boom, wantWorkers: []string{"a worker stopped"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rec recorder
			sup := &daemon.Supervisor{Log: discard, Reg: daemon.Registry(),
				Components: []daemon.Component{traced(&rec, "a", nil), traced(&rec, "b", tt.failB)}}
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if err := sup.Start(ctx); err != nil {
				t.Fatalf("Start: %v", err)
			}
			wantStart := []string{"a provision", "b provision", "a migrate", "b migrate", "a start", "b start"}
			if got := rec.list(); !slices.Equal(got, wantStart) {
				t.Fatalf("startup %v, want %v", got, wantStart)
			}
			ln := listen(t)
			done := make(chan error, 1)
			go func() { done <- sup.Serve(ctx, ln) }()
			if tt.failB == nil {
				for _, path := range []string{"/a", "/b", "/healthz"} {
					if code, _ := get(t, "http://"+ln.Addr().String()+path); code != http.StatusOK {
						t.Fatalf("GET %s = %d", path, code)
					}
				}
				cancel()
			}
			err := wait(t, "Serve to return", done)
			switch {
			case tt.wantErr == nil && err != nil:
				t.Fatalf("Serve = %v, want nil", err)
			case tt.wantErr != nil && (!errors.Is(err, tt.wantErr) || !strings.HasPrefix(err.Error(), "b: ")):
				t.Fatalf("Serve = %v, want %v named after component b", err, tt.wantErr)
			}
			waitRefused(t, ln.Addr().String())
			// Serve returns once every worker stopped, and views are
			// still up: in-flight requests could still read them.
			// (Workers stop concurrently: compare them sorted.)
			if got := slices.Sorted(slices.Values(rec.list()[len(wantStart):])); !slices.Equal(got, tt.wantWorkers) {
				t.Fatalf("when Serve returned: %v, want %v", got, tt.wantWorkers)
			}
			sup.Close()
			// Close cancels the views (they stop on their own goroutines)
			// and closes the components in reverse order.
			got := waitTrace(t, &rec, len(wantStart)+len(tt.wantWorkers)+4)[len(wantStart)+len(tt.wantWorkers):]
			var closes, views []string
			for _, e := range got {
				if strings.HasSuffix(e, "closed") {
					closes = append(closes, e)
				} else {
					views = append(views, e)
				}
			}
			slices.Sort(views)
			if !slices.Equal(closes, []string{"b closed", "a closed"}) || !slices.Equal(views, []string{"a view stopped", "b view stopped"}) {
				t.Fatalf("after Close: %v, want both views stopped and b closed before a", got)
			}
		})
	}
}

// waitTrace waits until rec holds n events.
func waitTrace(t *testing.T, rec *recorder, n int) []string {
	t.Helper()
	var got []string
	testkit.EventuallyWithin(t, waitLimit, fmt.Sprintf("%d trace events", n), func() (bool, string) {
		got = rec.list()
		return len(got) >= n, fmt.Sprint(got)
	})
	return got
}

// TestSupervisorStartFailure: a step that fails stops startup, names the
// component and the phase, and later steps never run.
func TestSupervisorStartFailure(t *testing.T) {
	noTable := errors.New("table decisions does not exist")
	var rec recorder
	bad := traced(&rec, "b", nil)
	bad.Migrate = func(context.Context) error { return noTable }
	sup := &daemon.Supervisor{Log: discard, Reg: daemon.Registry(), Components: []daemon.Component{traced(&rec, "a", nil), bad}}
	err := sup.Start(context.Background())
	if !errors.Is(err, noTable) || !strings.HasPrefix(err.Error(), "b migrate: ") {
		t.Fatalf("Start = %v, want the migration error named after b", err)
	}
	sup.Close()
	want := []string{"a provision", "b provision", "a migrate", "b closed", "a closed"}
	if got := rec.list(); !slices.Equal(got, want) {
		t.Fatalf("trace %v, want %v", got, want)
	}
}

// TestSupervisorStartCancelled: cancelling startup while a view loads
// stops it and returns.
func TestSupervisorStartCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	loading := make(chan struct{})
	sup := &daemon.Supervisor{Log: discard, Reg: daemon.Registry(), Components: []daemon.Component{{
		Name: "catalog",
		Start: func(ctx context.Context) error {
			close(loading)
			<-ctx.Done() // a stream that never appears
			return ctx.Err()
		},
	}}}
	done := make(chan error, 1)
	go func() { done <- sup.Start(ctx) }()
	wait(t, "the view to start loading", loading)
	cancel()
	if err := wait(t, "Start to return", done); !errors.Is(err, context.Canceled) {
		t.Fatalf("Start = %v, want context.Canceled", err)
	}
	sup.Close()
}

// TestRunAll: the first worker to fail cancels the others, and every
// failure is returned.
func TestRunAll(t *testing.T) {
	boom, flush := errors.New("boom"), errors.New("flush failed")
	tests := []struct {
		name    string
		workers []daemon.Worker
		want    []error
	}{
		{"one fails, the other stops cleanly", []daemon.Worker{
			func(context.Context) error { return boom },
			func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() },
		}, []error{boom}},
		{"a failure while stopping is kept", []daemon.Worker{
			func(context.Context) error { return boom },
			func(ctx context.Context) error { <-ctx.Done(); return flush },
		}, []error{boom, flush}},
		{"workers that finish leave the others running to the end", []daemon.Worker{
			func(context.Context) error { return nil },
			func(context.Context) error { return nil },
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { done <- daemon.RunAll(context.Background(), tt.workers...) }()
			err := wait(t, "RunAll to return", done)
			for _, w := range tt.want {
				if !errors.Is(err, w) {
					t.Errorf("RunAll = %v, want it to include %v", err, w)
				}
			}
			if tt.want == nil && err != nil {
				t.Errorf("RunAll = %v, want nil", err)
			}
		})
	}
}

// TestSupervisorRetriesTransientProvision: a component whose provisioning
// meets a JetStream cluster that cannot answer yet (a timeout) is
// provisioned again rather than failing the process; any other error
// fails startup at once. (natsx's TestProvisionWaitsForTheCluster runs
// the retry against a real cluster.)
func TestSupervisorRetriesTransientProvision(t *testing.T) {
	refused := errors.New("stream configuration invalid")
	tests := []struct {
		name      string
		errs      []error // what each provisioning attempt returns, then nil
		wantCalls int
		wantErr   error
	}{
		{name: "timeout then success", errs: []error{nats.ErrTimeout, nats.ErrNoResponders}, wantCalls: 3},
		{name: "permanent", errs: []error{refused}, wantCalls: 1, wantErr: refused},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			calls := 0
			sup := &daemon.Supervisor{Log: discard, Reg: daemon.Registry(), Components: []daemon.Component{{
				Name: "streams",
				Provision: func(context.Context) error {
					calls++
					if calls <= len(tt.errs) {
						return fmt.Errorf("ensure stream X: %w", tt.errs[calls-1])
					}
					return nil
				},
			}}}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			err := sup.Start(ctx)
			defer sup.Close()
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil) != (err == nil) || calls != tt.wantCalls {
				t.Fatalf("Start = %v after %d provisioning calls, want %v after %d", err, calls, tt.wantErr, tt.wantCalls)
			}
		})
	}
}

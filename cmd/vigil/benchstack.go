package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// benchStack is a whole in-process Vigil serving HTTP on loopback, with an
// owner key of a fresh tenant: what the end-to-end `vigil bench` paths
// drive.
type benchStack struct {
	st *Stack
	// apart is the process running the services this one does not (a
	// split deployment), nil when this one runs them all.
	apart  *chaosProc
	base   string
	key    string
	tenant string
	client *http.Client
	close  func()
}

// startBenchStack starts the stack on ClickHouse dsn with a temporary
// data directory, rate limits off, and conns client connections. The
// notifier may deliver to allowPrivate (the bench's loopback receiver).
func startBenchStack(ctx context.Context, dsn, name string, conns int, sec NATSSecurity, allowPrivate []netip.Prefix, log *slog.Logger, tweaks ...func(*StackConfig)) (*benchStack, error) {
	return startBenchStackApart(ctx, dsn, name, conns, sec, allowPrivate, log, benchApart{}, tweaks...)
}

// benchApart is services a bench runs in a second `vigil dev` process
// on its stack's NATS server, credentials and ClickHouse, at niceness
// nice (0 to 19, checked by the caller; through nice(1)): a split deployment on one machine, as
// compose and Kubernetes run the services, each in its own process.
// binArgs come before `dev` (a test binary's subprocess mode).
type benchApart struct {
	services []string
	nice     int
	binArgs  []string
}

// startBenchStackApart is startBenchStack with apart.services in a
// second process and the rest in this one. The two start together:
// either may wait for a stream the other owns.
func startBenchStackApart(ctx context.Context, dsn, name string, conns int, sec NATSSecurity, allowPrivate []netip.Prefix, log *slog.Logger, apart benchApart, tweaks ...func(*StackConfig)) (b *benchStack, err error) {
	dir, err := os.MkdirTemp("", "vigil-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	var proc *chaosProc
	defer func() {
		if err != nil {
			if proc != nil {
				proc.Kill()
			}
			os.RemoveAll(dir)
		}
	}()
	cfg := StackConfig{
		DataDir: dir, NATSHost: "127.0.0.1", NATSPort: -1, NATSSecurity: sec, ClickHouseDSN: dsn, ClickHouseWait: 10 * time.Second,
		Ingest: ingest.DefaultConfig(), API: benchAPIConfig(), NotifierAllowPrivate: allowPrivate, Log: log,
	}
	for _, t := range tweaks {
		t(&cfg)
	}
	var st *Stack
	if len(apart.services) == 0 {
		st, err = StartStack(ctx, cfg)
	} else {
		if cfg.Services, err = servicesBut(apart.services); err != nil {
			return nil, err
		}
		if cfg.NATSPort, err = chaosFreePort(); err != nil {
			return nil, err
		}
		// The context bounds startup only (daemon.Supervisor.Start): the
		// stack outlives it.
		startCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		started := make(chan error, 1)
		go func() {
			var err error
			st, err = StartStack(startCtx, cfg)
			started <- err
		}()
		proc, err = startApart(ctx, dir, dsn, fmt.Sprintf("nats://127.0.0.1:%d", cfg.NATSPort), apart, started)
		if err != nil {
			// The stack may be waiting for a stream only the process
			// apart would have made.
			cancel()
		}
		if serr := <-started; serr != nil || err != nil {
			if st != nil {
				st.Close()
			}
			return nil, errors.Join(serr, err)
		}
	}
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	b = &benchStack{
		st: st, apart: proc, base: "http://" + ln.Addr().String(),
		tenant: fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: 30 * time.Second},
		close: func() {
			stop()
			<-served
			if proc != nil {
				// First, so that its consumers drain into a live server.
				proc.Stop()
			}
			st.Close()
			os.RemoveAll(dir)
		},
	}
	if _, b.key, err = st.Store.CreateKey(ctx, b.tenant, auth.RoleOwner, "bench", "vigil bench "+name); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// servicesBut is every service but those named, or an error for a name
// that is no service.
func servicesBut(names []string) ([]string, error) {
	var all []string
	for _, a := range streams.Accesses() {
		all = append(all, a.Service)
	}
	for _, n := range names {
		if !slices.Contains(all, n) {
			return nil, fmt.Errorf("unknown service %q", n)
		}
	}
	return slices.DeleteFunc(all, func(s string) bool { return slices.Contains(names, s) }), nil
}

// startApart starts `vigil dev` with apart.services on natsURL once the
// stack starting beside it (whose result started carries, and which it
// puts back) has its NATS server listening: the credentials in dir exist
// before the server listens.
func startApart(ctx context.Context, dir, dsn, natsURL string, apart benchApart, started chan error) (*chaosProc, error) {
	addr := strings.TrimPrefix(natsURL, "nats://")
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		select {
		case serr := <-started:
			started <- serr
			return nil, fmt.Errorf("the stack ended before its NATS server listened: %w", serr)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	bin, err := os.Executable()
	if err != nil {
		return nil, err
	}
	binArgs := apart.binArgs
	if apart.nice > 0 {
		// nice(1) execs the binary: the pid stays the process's own.
		binArgs = append([]string{"-n", strconv.Itoa(apart.nice), bin}, binArgs...)
		if bin, err = exec.LookPath("nice"); err != nil {
			return nil, err
		}
	}
	p, err := newDevProc(bin, binArgs, filepath.Join(dir, "apart.log"), dir,
		"--services", strings.Join(apart.services, ","), "--nats-url", natsURL, "--clickhouse-dsn", dsn, "--instance-id", "bench-apart")
	if err != nil {
		return nil, err
	}
	if err := p.Start(ctx); err != nil {
		p.Kill()
		return nil, err
	}
	return p, nil
}

// registerAgentIDs puts agents in tenant's registry as POST /v1/agents
// with an agentId does (KLA's decisions.evaluate answers 404 for an agent
// it does not know); an agent already there is left as it is.
func registerAgentIDs(ctx context.Context, store *control.Store, tenant, by string, ids ...string) error {
	for _, id := range ids {
		now := time.Now().UTC()
		a := agent.Discovered(id, now)
		a.Source = agent.SourceRegistered
		_, err := store.PutAgent(ctx, agent.Change{Op: agent.OpRegistered, Tenant: tenant, Agent: a, By: by, At: now}, 0)
		if err != nil && !errors.Is(err, control.ErrConflict) {
			return fmt.Errorf("register agent %s: %w", id, err)
		}
	}
	return nil
}

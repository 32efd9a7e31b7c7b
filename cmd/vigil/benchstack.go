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
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/services/ingest"
)

// benchStack is a whole in-process Vigil serving HTTP on loopback, with an
// owner key of a fresh tenant: what the end-to-end `vigil bench` paths
// drive.
type benchStack struct {
	st     *Stack
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
	dir, err := os.MkdirTemp("", "vigil-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	cfg := StackConfig{
		DataDir: dir, NATSHost: "127.0.0.1", NATSPort: -1, NATSSecurity: sec, ClickHouseDSN: dsn, ClickHouseWait: 10 * time.Second,
		Ingest: ingest.DefaultConfig(), API: benchAPIConfig(), NotifierAllowPrivate: allowPrivate, Log: log,
	}
	for _, t := range tweaks {
		t(&cfg)
	}
	st, err := StartStack(ctx, cfg)
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		os.RemoveAll(dir)
		return nil, err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	b := &benchStack{
		st: st, base: "http://" + ln.Addr().String(),
		tenant: fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9),
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: conns, MaxConnsPerHost: conns}, Timeout: 30 * time.Second},
		close: func() {
			stop()
			<-served
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

package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/oidc"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/tenant"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/guardian"
	"github.com/vigilhq/vigil/services/ingest"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/notifier"
	policysvc "github.com/vigilhq/vigil/services/policy"
	"github.com/vigilhq/vigil/services/risk"
)

// StackConfig configures an all-in-one Vigil: what `vigil dev` runs, and
// what the end-to-end tests and `vigil bench` start in-process.
type StackConfig struct {
	// DataDir holds the embedded NATS store (under DataDir/nats).
	DataDir string
	// NATSHost and NATSPort are where the embedded server listens, so that
	// the CLI and other processes can reach it; port -1 picks one.
	NATSHost string
	NATSPort int
	// NATSSecurity is how the embedded server admits clients; zero is
	// NATSAuth.
	NATSSecurity NATSSecurity
	// ClickHouseDSN; empty runs ingest alone, without projections or the
	// read API (used by the ingest benchmark).
	ClickHouseDSN string
	// ClickHouseWait is how long to wait for ClickHouse at start.
	ClickHouseWait time.Duration
	Ingest         ingest.Config
	API            api.Config
	Policy         policysvc.Config
	// OIDC, if set, lets console members sign in with the provider's tokens.
	OIDC *oidc.Verifier
	Log  *slog.Logger
}

// Stack is a running all-in-one Vigil.
type Stack struct {
	NATS    *server.Server
	NC      *nats.Conn
	JS      jetstream.JetStream
	CH      driver.Conn
	Catalog *control.Catalog
	Store   *control.Store
	Echo    *echo.Echo
	Reg     *prometheus.Registry
	Ingest  *ingest.Service
	API     *api.Service
	Policy  *policysvc.Service
	Guard   *guardian.Service
	Risk    *risk.Service
	Ledger  *ledger.Service
	Notify  *notifier.Service
	Board   *approval.Board
	Limiter *ratelimit.Limiter
	// BootstrapKey is the owner key created on first start, or "".
	BootstrapKey string

	log     *slog.Logger
	local   *localNATS
	workers []daemon.Worker
	// routes and responders are added by the services wired in
	// stack_<service>.go; responders start once the catalog is in sync.
	routes     []func(*echo.Echo)
	responders []func() error
	stopCat    context.CancelFunc
}

// StartStack brings up NATS, connects everything, creates streams, applies
// migrations and, on a fresh install, creates the first owner key.
func StartStack(ctx context.Context, cfg StackConfig) (st *Stack, err error) {
	st = &Stack{log: cfg.Log, Reg: daemon.Registry()}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	st.NATS, st.local, err = startLocalNATS(cfg)
	if err != nil {
		return st, err
	}
	st.NC, st.JS, err = st.local.connect(natsauth.Admin, "vigil-dev", cfg.Log)
	if err != nil {
		return st, err
	}
	if err := refuseLegacySecrets(ctx, st.JS, cfg.DataDir); err != nil {
		return st, err
	}
	if err := stackSecrets(&cfg); err != nil {
		return st, err
	}
	st.Catalog, st.Store = control.NewCatalog(st.JS, cfg.Log, control.WithOIDC(cfg.OIDC)), control.NewStore(st.JS)
	// Zero limits (benchmarks, ingest alone) admit everything.
	limits := cfg.API.RateLimits
	st.Limiter = ratelimit.New(st.NC, "vigil-dev", func(t string) ratelimit.Limits { return st.Catalog.Limits(t, limits) }, cfg.Log)
	st.workers = append(st.workers, st.Limiter.Run)

	if cfg.ClickHouseDSN != "" {
		st.CH, err = daemon.OpenClickHouse(ctx, cfg.ClickHouseDSN, cfg.ClickHouseWait, cfg.Log)
		if err != nil {
			return st, fmt.Errorf("clickhouse at %s: %w (is it running? `make clickhouse` starts it)", cfg.ClickHouseDSN, err)
		}
		st.Board = approval.NewBoard(st.JS, cfg.Log)
		st.API, err = api.New(cfg.API, api.Deps{NC: st.NC, JS: st.JS, CH: st.CH, Catalog: st.Catalog, Board: st.Board, Store: st.Store, Log: cfg.Log, Registerer: st.Reg, Limiter: st.Limiter})
		if err != nil {
			return st, err
		}
	}
	st.Ingest, err = ingest.New(cfg.Ingest, ingest.Deps{JS: st.JS, CH: st.CH, Auth: st.Catalog, Log: cfg.Log, Registerer: st.Reg, Limiter: st.Limiter, Agents: st.Catalog})
	if err != nil {
		return st, err
	}

	if err := st.Ingest.EnsureStreams(ctx); err != nil {
		return st, err
	}
	if st.API != nil {
		if err := st.API.EnsureStreams(ctx); err != nil {
			return st, err
		}
		if err := st.Ingest.Migrate(ctx); err != nil {
			return st, err
		}
		if err := st.API.Migrate(ctx); err != nil {
			return st, err
		}
		if cfg.Policy.PublishTimeout == 0 {
			// Zero config (tests, benchmarks): defaults with an ephemeral
			// signing key, so packs verify only within this run.
			cfg.Policy = policysvc.DefaultConfig()
			cfg.Policy.SigningSeed = rules.NewSeed()
			cfg.Policy.RedactionKey, cfg.Policy.Judge.SealSecret = cfg.Ingest.RedactionKey, cfg.API.Judge.SealSecret
		}
		st.Policy, err = policysvc.New(cfg.Policy, policysvc.Deps{NC: st.NC, JS: st.JS, CH: st.CH, Catalog: st.Catalog, Log: cfg.Log, Registerer: st.Reg})
		if err != nil {
			return st, err
		}
		if err := st.Policy.EnsureStreams(ctx); err != nil {
			return st, err
		}
		if err := st.Policy.Migrate(ctx); err != nil {
			return st, err
		}
		st.Guard, err = guardian.New(guardian.DefaultConfig(), guardian.Deps{NC: st.NC, JS: st.JS, Board: st.Board, Log: cfg.Log, Registerer: st.Reg})
		if err != nil {
			return st, err
		}
		if err := st.Guard.EnsureStreams(ctx); err != nil {
			return st, err
		}
		st.workers = append(st.workers, st.Ingest.Run, st.API.Run, st.Policy.Run, st.Guard.Run)
		for _, start := range []func(context.Context, StackConfig) error{st.startLedger, st.startRisk, st.startNotifier} {
			if err := start(ctx, cfg); err != nil {
				return st, err
			}
		}
	} else if err := natsx.EnsureStreams(ctx, st.JS, controlConfig(cfg)); err != nil {
		return st, err
	}

	catCtx, stopCat := context.WithCancel(context.WithoutCancel(ctx))
	st.stopCat = stopCat
	if err := st.Catalog.Run(catCtx); err != nil {
		return st, err
	}
	if st.Board != nil {
		if err := st.Board.Run(catCtx); err != nil {
			return st, err
		}
	}
	// Serve only once the catalog holds every key and policy: a decision
	// made on a half-loaded catalog could allow what a policy blocks.
	if err := st.Catalog.Sync(ctx); err != nil {
		return st, err
	}
	if st.BootstrapKey, err = bootstrapKey(ctx, st.Store); err != nil {
		return st, err
	}

	// Responders first, so the API's first decision request finds them.
	if st.Policy != nil {
		if _, err := st.Policy.StartRPC(); err != nil {
			return st, err
		}
		if _, err := st.Guard.StartRPC(); err != nil {
			return st, err
		}
	}
	for _, start := range st.responders {
		if err := start(); err != nil {
			return st, err
		}
	}
	st.Echo, err = httpkit.NewServer(cfg.Log, st.Reg)
	if err != nil {
		return st, err
	}
	checks := map[string]httpkit.Check{"nats": natsx.Ready(st.NC)}
	if st.CH != nil {
		checks["clickhouse"] = func(ctx context.Context) error { return st.CH.Ping(ctx) }
	}
	httpkit.HealthRoutes(st.Echo, st.Reg, checks)
	st.Ingest.Routes(st.Echo)
	if st.API != nil {
		st.API.Routes(st.Echo)
	}
	for _, add := range st.routes {
		add(st.Echo)
	}
	return st, nil
}

// bootstrapKey creates the first owner key of the default tenant when no
// key exists at all, so a fresh install can be used at once.
func bootstrapKey(ctx context.Context, store *control.Store) (string, error) {
	has, err := store.HasAnyKey(ctx)
	if err != nil || has {
		return "", err
	}
	_, token, err := store.CreateKey(ctx, tenant.Default, auth.RoleOwner, "bootstrap", "vigil dev")
	return token, err
}

// Serve runs HTTP on ln and the workers until ctx ends, then shuts down
// in order (see daemon.Serve).
func (st *Stack) Serve(ctx context.Context, ln net.Listener) error {
	return daemon.Serve(ctx, st.log, st.Echo, ln, st.workers...)
}

// Close releases connections and stops NATS. Call after Serve returns.
func (st *Stack) Close() {
	if st.stopCat != nil {
		st.stopCat()
	}
	if st.CH != nil {
		_ = st.CH.Close()
	}
	if st.NC != nil {
		_ = st.NC.Drain()
		for st.NC.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if st.NATS != nil {
		st.NATS.Shutdown()
		st.NATS.WaitForShutdown()
	}
}

// benchAPIConfig is the api configuration of `vigil bench`: the defaults
// without rate limits, which would otherwise measure the limiter.
func benchAPIConfig() api.Config {
	c := api.DefaultConfig()
	c.RateLimits = ratelimit.Limits{}
	return c
}

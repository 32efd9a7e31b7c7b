// Package stack is the all-in-one Vigil: every service's component under
// one supervisor with an embedded NATS server. `vigil dev` runs it, and the
// end-to-end tests, `vigil bench` and the conformance suite
// (test/conformance) start the very same stack in-process.
package stack

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/oidc"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/guardian"
	"github.com/vigilhq/vigil/services/ingest"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
	"github.com/vigilhq/vigil/services/notifier"
	policysvc "github.com/vigilhq/vigil/services/policy"
	"github.com/vigilhq/vigil/services/risk"
)

// Config configures an all-in-one Vigil: what `vigil dev` runs, and
// what the end-to-end tests and `vigil bench` start in-process.
type Config struct {
	// DataDir holds the embedded NATS store (under DataDir/nats) and the
	// keys generated for dev.
	DataDir string
	// NATSHost and NATSPort are where the embedded server listens, so that
	// the CLI and other processes can reach it; port -1 picks one.
	NATSHost string
	NATSPort int
	// NATSSecurity is how the embedded server admits clients; zero is
	// NATSAuth.
	NATSSecurity NATSSecurity
	// NATSURL, when set, is a NATS server or cluster (comma-separated
	// URLs) to use instead of an embedded server, and NATSCredsDir the
	// directory of its users' seeds (natsauth.SeedFile).
	NATSURL, NATSCredsDir string
	// Services, when set, runs only these services (streams.ServiceAPI,
	// ServiceIngest, …) with the views they need: one replica of a split
	// deployment, on NATSURL. Empty runs all of them.
	Services []string
	// InstanceID names this process among replicas (rate-limit gossip);
	// empty is "vigil-dev".
	InstanceID string
	// DecideOverNATS makes the api ask for decisions over NATS even when
	// this process runs a policy service (which it otherwise calls in
	// process), so that they spread over every policy replica: for tests
	// of state the replicas share.
	DecideOverNATS bool
	// PriorityGate makes the stream consumers that fan decisions out give
	// way to decisions in flight (pkg/priority). Off by default: on the
	// shared 2-core box it measured neutral (docs/benchmarks.md, perf-
	// decide2); `vigil bench decide --priority-gate` measures it.
	PriorityGate bool
	// ClickHouseDSN; empty runs ingest alone, without projections or the
	// read API (used by the ingest benchmark).
	ClickHouseDSN string
	// ClickHouseWait is how long to wait for ClickHouse at start.
	ClickHouseWait time.Duration
	// ClickHouseCluster names the ClickHouse cluster whose replicas
	// ClickHouseDSN lists ("": one server; see chx.OpenCluster).
	ClickHouseCluster string
	// Streams are the options of every stream and bucket; zero is
	// streams.DefaultOptions. They override the services' own.
	Streams streams.Options
	Ingest  ingest.Config
	API     api.Config
	Policy  policysvc.Config
	// NotifierKey encrypts channel credentials at rest; nil keeps a
	// generated one in DataDir/notifier.key.
	NotifierKey []byte
	// NotifierAllowPrivate are private networks deliveries may reach.
	NotifierAllowPrivate []netip.Prefix
	// OIDC, if set, lets console members sign in with the provider's tokens.
	OIDC *oidc.Verifier
	// TenantMetrics lets metrics carry tenant ids
	// (--metrics-tenant-labels).
	TenantMetrics bool
	// Tracer traces HTTP requests, decisions and the NATS hops between
	// the services (--otel-endpoint); nil traces nothing.
	Tracer trace.TracerProvider
	Log    *slog.Logger
}

// Stack is a running all-in-one Vigil: every service's component under
// one daemon.Supervisor, with an embedded NATS server. Each service
// connects with its own NATS credential, as it does in its own container,
// so the permissions of pkg/natsauth hold in dev and in every end-to-end
// test; the shared views (catalog, approval board, rate-limit gossip) and
// the first key use the admin connection NC.
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
	// Gate is the priority gate decisions and their fan-out share (nil
	// without PriorityGate).
	Gate    *priority.Gate
	Limiter *ratelimit.Limiter
	// BootstrapKey is the owner key created on first start, or "".
	BootstrapKey string

	local *LocalNATS
	sup   *daemon.Supervisor
	// conns are the services' own connections, closed before NC.
	conns []*nats.Conn
}

// svcConn is one service's connection.
type svcConn struct {
	nc *nats.Conn
	js jetstream.JetStream
}

// connectAs opens a connection of the stack's NATS as service user.
func (st *Stack) connectAs(user string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	nc, js, err := st.local.Connect(user, "vigil-dev-"+user, log)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", user, err)
	}
	st.conns = append(st.conns, nc)
	return nc, js, nil
}

// Connect opens a connection of the stack's NATS as user (a service or
// natsauth.Admin), named name; the caller closes it.
func (st *Stack) Connect(user, name string, log *slog.Logger) (*nats.Conn, jetstream.JetStream, error) {
	return st.local.Connect(user, name, log)
}

// Start brings up NATS, connects everything and starts every
// service's component (streams, migrations, views; see daemon.Supervisor)
// and, on a fresh install, creates the first owner key.
func Start(ctx context.Context, cfg Config) (st *Stack, err error) {
	st = &Stack{Reg: daemon.Registry()}
	defer func() {
		if err != nil {
			st.Close()
		}
	}()
	if cfg.NATSURL != "" {
		st.local = &LocalNATS{url: cfg.NATSURL, sec: NATSAuth, creds: cfg.NATSCredsDir}
	} else if st.NATS, st.local, err = StartNATS(cfg); err != nil {
		return st, err
	}
	st.NC, st.JS, err = st.local.Connect(natsauth.Admin, "vigil-dev", cfg.Log)
	if err != nil {
		return st, err
	}
	if err := refuseLegacySecrets(ctx, st.JS, cfg.DataDir); err != nil {
		return st, err
	}
	if err := stackSecrets(&cfg); err != nil {
		return st, err
	}
	if cfg.ClickHouseDSN != "" {
		st.CH, err = daemon.OpenClickHouse(ctx, cfg.ClickHouseDSN, cfg.ClickHouseCluster, cfg.ClickHouseWait, cfg.Log)
		if err != nil {
			return st, fmt.Errorf("clickhouse at %s: %w (is it running? `make clickhouse` starts it)", cfg.ClickHouseDSN, err)
		}
	}
	comps, err := st.components(cfg)
	if err != nil {
		return st, err
	}
	checks := map[string]httpkit.Check{"nats": natsx.Ready(st.NC)}
	if st.CH != nil {
		checks["clickhouse"] = func(ctx context.Context) error { return st.CH.Ping(ctx) }
	}
	st.sup = &daemon.Supervisor{Log: cfg.Log, Reg: st.Reg, Tracer: cfg.Tracer, Checks: checks, Components: comps}
	if err := st.sup.Start(ctx); err != nil {
		return st, err
	}
	st.Echo = st.sup.Echo()
	return st, nil
}

// components builds every service of the stack, in the order the
// supervisor runs each phase: the shared views first (so that the
// catalog is loaded before any responder answers and the first key
// exists), then the services, owners before the readers of their tables.
func (st *Stack) components(cfg Config) ([]daemon.Component, error) {
	so := cfg.Streams
	if so == (streams.Options{}) {
		so = streams.DefaultOptions
	}
	cfg.Ingest.Streams, cfg.API.Streams = so, so
	st.Catalog, st.Store = control.NewCatalog(st.JS, cfg.Log, control.WithOIDC(cfg.OIDC)), control.NewStore(st.JS)
	// Zero limits (benchmarks, ingest alone) admit everything.
	limits := cfg.API.RateLimits
	instance := cfg.InstanceID
	if instance == "" {
		instance = "vigil-dev"
	}
	st.Limiter = ratelimit.New(st.NC, instance, func(t string) ratelimit.Limits { return st.Catalog.Limits(t, limits) }, cfg.Log)
	conns := map[string]svcConn{}
	for _, a := range streams.Accesses() {
		nc, js, err := st.connectAs(a.Service, cfg.Log)
		if err != nil {
			return nil, err
		}
		conns[a.Service] = svcConn{nc, js}
	}
	pubs, err := st.publishers(cfg, conns[streams.ServiceIngest].js)
	if err != nil {
		return nil, err
	}
	st.Ingest, err = ingest.New(cfg.Ingest, ingest.Deps{JS: conns[streams.ServiceIngest].js, Publish: pubs, CH: st.CH, Auth: st.Catalog, Log: cfg.Log, Registerer: st.Reg, Limiter: st.Limiter, Agents: st.Catalog})
	if err != nil {
		return nil, err
	}
	bootstrap := daemon.Component{Name: "bootstrap", Start: func(ctx context.Context) (err error) {
		st.BootstrapKey, err = bootstrapKey(ctx, st.Store)
		return err
	}}
	if st.CH == nil {
		// Ingest alone: CONTROL holds the keys it authenticates with.
		controlStream := daemon.Component{Name: "control", Provision: func(ctx context.Context) error {
			return natsx.EnsureStreams(ctx, conns[streams.ServiceAPI].js, streams.ControlConfig(so))
		}}
		return []daemon.Component{controlStream, st.Catalog.Component(), bootstrap, st.Limiter.Component(), st.Ingest.Component()}, nil
	}
	st.Board = approval.NewBoard(st.JS, cfg.Log)
	// The api asks a policy service in this process directly (no NATS
	// round trip per decision) while that service's responder runs; one
	// catalog feeds both, so the caller's consistency token is the
	// decider's. Without a policy service here, it asks over NATS.
	local := rpc.NewLocal()
	if cfg.DecideOverNATS {
		local = nil
	}
	// Decisions are what callers wait on; with PriorityGate the consumers
	// that fan each recorded decision out (projections, ledger, risk,
	// guardian intake, notifier) give way while any is in flight.
	var gate *priority.Gate
	if cfg.PriorityGate {
		gate = priority.New()
	}
	st.Gate = gate
	if st.API, err = api.New(cfg.API, api.Deps{NC: conns[streams.ServiceAPI].nc, JS: conns[streams.ServiceAPI].js, CH: st.CH, Catalog: st.Catalog, Board: st.Board, Store: control.NewStore(conns[streams.ServiceAPI].js), Log: cfg.Log, Registerer: st.Reg, Limiter: st.Limiter, OIDC: cfg.OIDC, Local: local, Gate: gate}); err != nil {
		return nil, err
	}
	if cfg.Policy.PublishTimeout == 0 {
		// Zero config (tests, benchmarks): defaults with an ephemeral
		// signing key, so packs verify only within this run.
		cfg.Policy = policysvc.DefaultConfig()
		cfg.Policy.SigningSeed = rules.NewSeed()
		cfg.Policy.RedactionKey, cfg.Policy.Judge.SealSecret = cfg.Ingest.RedactionKey, cfg.API.Judge.SealSecret
	}
	cfg.Policy.Streams = so
	if st.Policy, err = policysvc.New(cfg.Policy, policysvc.Deps{NC: conns[streams.ServicePolicy].nc, JS: conns[streams.ServicePolicy].js, CH: st.CH, Catalog: st.Catalog, Log: cfg.Log, Registerer: st.Reg, Tracer: cfg.Tracer, Local: local, Gate: gate}); err != nil {
		return nil, err
	}
	gc := guardian.DefaultConfig()
	gc.Streams = so
	if st.Guard, err = guardian.New(gc, guardian.Deps{NC: conns[streams.ServiceGuardian].nc, JS: conns[streams.ServiceGuardian].js, Board: st.Board, Log: cfg.Log, Registerer: st.Reg, Tracer: cfg.Tracer, Gate: gate}); err != nil {
		return nil, err
	}
	rc := risk.DefaultConfig()
	rc.Streams = so
	if st.Risk, err = risk.New(rc, risk.Deps{NC: conns[streams.ServiceRisk].nc, JS: conns[streams.ServiceRisk].js, CH: st.CH, Catalog: st.Catalog, Log: cfg.Log, Registerer: st.Reg, Gate: gate}); err != nil {
		return nil, err
	}
	// The ledger's checkpoint key derives from the deployment signing
	// seed, so it is stable across restarts of `vigil dev` and `vigil
	// ledger key` can print it offline.
	lc := ledger.DefaultConfig()
	lc.Streams, lc.TenantMetrics = so, cfg.TenantMetrics
	if lc.Seed, err = evidence.DeriveSeed(cfg.Policy.SigningSeed); err != nil {
		return nil, err
	}
	if st.Ledger, err = ledger.New(lc, ledger.Deps{JS: conns[streams.ServiceLedger].js, CH: st.CH, Log: cfg.Log, Registerer: st.Reg, Gate: gate}); err != nil {
		return nil, err
	}
	nc := notifier.DefaultConfig()
	nc.Streams, nc.SecretKey, nc.AllowPrivate = so, cfg.NotifierKey, cfg.NotifierAllowPrivate
	if nc.SecretKey == nil {
		if nc.SecretKey, err = KeyFile(filepath.Join(cfg.DataDir, NotifierKeyFile)); err != nil {
			return nil, err
		}
	}
	if st.Notify, err = notifier.New(nc, notifier.Deps{JS: conns[streams.ServiceNotifier].js, CH: st.CH, Auth: st.Catalog, Log: cfg.Log, Registerer: st.Reg, Gate: gate}); err != nil {
		return nil, err
	}
	if len(cfg.Services) == 0 {
		return []daemon.Component{
			st.Catalog.Component(), st.Board.Component(), bootstrap, st.Limiter.Component(),
			st.Ingest.Component(), st.API.Component(), st.Policy.Component(), st.Guard.Component(),
			st.Risk.Component(), st.Ledger.Component(st.Catalog), st.Notify.Component(),
		}, nil
	}
	return st.subset(cfg.Services, so, bootstrap, cfg.Log)
}

// publishers are the JetStream contexts ingest's receivers publish on:
// its own connection's, js, and cfg.Ingest.PublishConns-1 more, each on a
// connection of its own as the ingest user (closed with the others). A
// stack that does not run ingest opens none.
func (st *Stack) publishers(cfg Config, js jetstream.JetStream) ([]jetstream.JetStream, error) {
	pubs := []jetstream.JetStream{js}
	if len(cfg.Services) > 0 && !slices.Contains(cfg.Services, streams.ServiceIngest) {
		return pubs, nil
	}
	for range cfg.Ingest.PublishConns - 1 {
		_, js, err := st.connectAs(streams.ServiceIngest, cfg.Log)
		if err != nil {
			return nil, err
		}
		pubs = append(pubs, js)
	}
	return pubs, nil
}

// subset is the components of some services only, with the shared views
// they need, as their own binaries run them (services/*/cmd): the
// catalog for all but the guardian, the approval board for api and
// guardian, rate-limit gossip for api and ingest, key-use tracking for
// ingest without the api (the api tracks it itself).
func (st *Stack) subset(names []string, so streams.Options, bootstrap daemon.Component, log *slog.Logger) ([]daemon.Component, error) {
	services := map[string]daemon.Component{
		streams.ServiceIngest: st.Ingest.Component(), streams.ServiceAPI: st.API.Component(),
		streams.ServicePolicy: st.Policy.Component(), streams.ServiceGuardian: st.Guard.Component(),
		streams.ServiceRisk: st.Risk.Component(), streams.ServiceLedger: st.Ledger.Component(st.Catalog),
		streams.ServiceNotifier: st.Notify.Component(),
	}
	want := map[string]bool{}
	for _, n := range names {
		if _, ok := services[n]; !ok {
			return nil, fmt.Errorf("unknown service %q", n)
		}
		want[n] = true
	}
	var views, comps []daemon.Component
	if len(want) > 1 || !want[streams.ServiceGuardian] {
		views = append(views, st.Catalog.Component())
	}
	if want[streams.ServiceAPI] || want[streams.ServiceGuardian] {
		views = append(views, st.Board.Component())
	}
	if want[streams.ServiceAPI] {
		views = append(views, bootstrap)
	}
	if want[streams.ServiceAPI] || want[streams.ServiceIngest] {
		views = append(views, st.Limiter.Component())
	}
	if want[streams.ServiceIngest] && !want[streams.ServiceAPI] {
		views = append(views, control.UsageComponent(st.JS, st.Catalog, so.Replicas, log))
	}
	for _, n := range []string{streams.ServiceIngest, streams.ServiceAPI, streams.ServicePolicy, streams.ServiceGuardian,
		streams.ServiceRisk, streams.ServiceLedger, streams.ServiceNotifier} {
		if want[n] {
			comps = append(comps, services[n])
		}
	}
	return append(views, comps...), nil
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

// Components are the components the stack runs, in order: what mounts
// each service's routes (the route table of pkg/routes is derived from
// them).
func (st *Stack) Components() []daemon.Component { return st.sup.Components }

// Serve runs HTTP on ln and the workers until ctx ends or one fails,
// then shuts down in order (see daemon.Supervisor).
func (st *Stack) Serve(ctx context.Context, ln net.Listener) error {
	return st.sup.Serve(ctx, ln)
}

// Kill closes every NATS connection of the stack at once, without
// draining: what a crashed process leaves behind (messages taken but not
// acked, requests not answered). Serve then fails or ends; Close still
// releases the rest.
func (st *Stack) Kill() {
	for _, nc := range append(st.conns, st.NC) {
		if nc != nil {
			nc.Close()
		}
	}
}

// Close stops the views, releases connections and stops NATS. Call after
// Serve returns.
func (st *Stack) Close() {
	if st.sup != nil {
		st.sup.Close()
	}
	if st.CH != nil {
		_ = st.CH.Close()
	}
	for _, nc := range append(st.conns, st.NC) {
		if nc == nil {
			continue
		}
		_ = nc.Drain()
		for nc.IsDraining() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	if st.NATS != nil {
		st.NATS.Shutdown()
		st.NATS.WaitForShutdown()
	}
}

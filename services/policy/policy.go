// Package policy is Vigil's policy service. It keeps every tenant's
// policies, org policy and agent declarations in memory by watching
// CONTROL, answers decision requests over NATS request/reply (the micro
// framework, subject rpc.policy.v1.evaluate), records each decision on
// the POLICY stream before replying, evaluates every ingested event, and
// projects decisions into ClickHouse.
package policy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/budget"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/policy/migrations"
)

// Durable consumers owned by the policy service.
const (
	DecisionsProjector = streams.DecisionsProjector
	EventVerdicts      = streams.EventVerdicts
)

// Config tunes the policy service.
type Config struct {
	Streams streams.Options
	// SigningSeed is the deployment's 32-byte Ed25519 seed for packs.
	SigningSeed []byte
	// PublishTimeout bounds recording a decision.
	PublishTimeout time.Duration
	// EvaluateEvents turns on verdicts for ingested events.
	EvaluateEvents bool
	// RedactionKey keys redaction placeholders; it must be ingest's. Empty:
	// the service refuses to start (never generated, never read from NATS).
	RedactionKey []byte
	// Judge is the LLM judge's deployment configuration; JudgeTimeout
	// bounds one call and JudgeWorkers how many run at once.
	Judge        judge.Deployment
	JudgeTimeout time.Duration
	JudgeWorkers int
	// BudgetPrices prices GenAI tokens for cost_usd budgets (nil: the
	// documented defaults, budget.DefaultPrices).
	BudgetPrices budget.Prices
	// Clock tells the time decisions are counted at against budget
	// windows (nil: time.Now); tests move it to cross window boundaries.
	Clock func() time.Time
	// ProjectorLinger is how long the decisions projector holds a partial
	// batch before writing it to ClickHouse (freshness vs insert size).
	ProjectorLinger time.Duration
}

// DefaultConfig returns defaults; SigningSeed must still be set.
func DefaultConfig() Config {
	return Config{Streams: streams.DefaultOptions, PublishTimeout: 2 * time.Second, EvaluateEvents: true, JudgeTimeout: 20 * time.Second, JudgeWorkers: 4,
		ProjectorLinger: 200 * time.Millisecond, BudgetPrices: budget.DefaultPrices()}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if len(c.SigningSeed) != 32 {
		errs = append(errs, errors.New("policy: SigningSeed must be 32 bytes"))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, errors.New("policy: PublishTimeout must be positive"))
	}
	if err := checkPrices(c.BudgetPrices); err != nil {
		errs = append(errs, fmt.Errorf("policy: %w", err))
	}
	if err := control.RequireSecret("policy: RedactionKey (--redaction-key / $VIGIL_REDACTION_KEY)", c.RedactionKey); err != nil {
		errs = append(errs, err)
	}
	if err := control.RequireSecret("policy: Judge.SealSecret (--judge-seal-key / $VIGIL_JUDGE_SEAL_KEY)", c.Judge.SealSecret); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Deps are the policy service's collaborators.
type Deps struct {
	NC         *nats.Conn
	JS         jetstream.JetStream
	CH         driver.Conn
	Catalog    *control.Catalog
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Tracer traces decision requests and event verdicts
	// (pkg/telemetry); nil traces nothing.
	Tracer trace.TracerProvider
	// Local, when set, is the process's in-process endpoint table: while
	// the decision responder runs, callers holding the same Local (the
	// api in one process) are answered without NATS. Optional.
	Local *rpc.Local
	// Gate, when set, is the process's priority gate (pkg/priority):
	// this service's stream consumers decode and fold records as
	// background work that gives way to decisions in flight. Optional.
	Gate *priority.Gate
}

// Service is the policy service.
type Service struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	compiler *rules.Compiler
	signer   *rules.Signer
	sink     *chx.Sink
	sessions *sessionStats
	labels   *labelStore       // opened by EnsureStreams
	settings *control.Settings // tenants' redaction (and judge) settings
	judge    *judgeRunner
	counters *budget.Counters

	mu       sync.Mutex
	packs    map[string]packEntry // tenant → current pack
	compiled map[string]*rules.Compiled

	decisions *prometheus.CounterVec
	rejected  *prometheus.CounterVec
	latency   prometheus.Histogram

	labelsAdded prometheus.Counter
	labelErrors *prometheus.CounterVec

	budgetErrors   prometheus.Counter
	budgetExceeded *prometheus.CounterVec

	rpcOnce sync.Once
	rpc     micro.Service
	rpcErr  error
	unlocal func() // removes the endpoint from deps.Local
}

type packEntry struct {
	gen  uint64
	pack *rules.Pack
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil || deps.Catalog == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("policy: NC, JS, Catalog, Log and Registerer are required")
	}
	compiler, err := rules.NewCompiler()
	if err != nil {
		return nil, err
	}
	signer, err := rules.NewSigner(cfg.SigningSeed)
	if err != nil {
		return nil, err
	}
	if cfg.BudgetPrices == nil {
		cfg.BudgetPrices = budget.DefaultPrices()
	}
	s := &Service{
		cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "policy")),
		compiler: compiler, signer: signer, sessions: newSessionStats(100000), counters: budget.NewCounters(deps.JS),
		packs: map[string]packEntry{}, compiled: map[string]*rules.Compiled{},
		decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_policy_decisions_total", Help: "Decisions made, by source and outcome.",
		}, []string{"source", "outcome"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_policy_requests_rejected_total", Help: "Decision requests refused for violating declared policy inputs, by source.",
		}, []string{"source"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_policy_decide_seconds", Help: "Time to evaluate and record one decision.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 16),
		}),
	}
	s.budgetErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vigil_policy_budget_unavailable_total", Help: "Budget counters that could not be read or added to; each such budget was taken as exceeded.",
	})
	s.budgetExceeded = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_policy_budget_exceeded_total", Help: "Decisions over a budget, by the budget's outcome.",
	}, []string{"outcome"})
	s.labelsAdded = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "vigil_policy_session_labels_added_total", Help: "Data-flow labels added to sessions.",
	})
	s.labelErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_policy_session_label_errors_total", Help: "Session label store failures, by operation (read: rules failed closed; write: the decision was answered 503).",
	}, []string{"op"})
	for _, c := range []prometheus.Collector{s.decisions, s.rejected, s.latency, s.labelsAdded, s.labelErrors, s.budgetErrors, s.budgetExceeded} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("policy metrics: %w", err)
		}
	}
	if deps.CH != nil {
		s.sink, err = chx.NewSink(chx.SinkConfig{
			Name: DecisionsProjector, Table: readmodel.Decisions, Project: projectDecision,
			MaxRows: 5000, Linger: cmp.Or(cfg.ProjectorLinger, 200*time.Millisecond), MinInterval: chx.MinInsertInterval, Gate: deps.Gate,
		}, deps.CH, s.log, deps.Registerer)
		if err != nil {
			return nil, err
		}
	}
	return s, nil
}

// PublicKey is the verification key of the packs this service signs.
func (s *Service) PublicKey() []byte { return s.signer.PublicKey() }

// EnsureStreams creates or updates POLICY and BUDGETS, the streams this
// service owns, and the session label bucket.
func (s *Service) EnsureStreams(ctx context.Context) error {
	if err := natsx.EnsureStreams(ctx, s.deps.JS, streams.PolicyConfig(s.cfg.Streams), streams.BudgetsConfig(s.cfg.Streams)); err != nil {
		return err
	}
	labels, err := openLabels(ctx, s.deps.JS, s.cfg.Streams.Replicas)
	if err != nil {
		return err
	}
	s.labels = labels
	return nil
}

// Start builds the judge and starts the redaction settings view on ctx
// (CONTROL must exist); decisions are redacted with it, so it runs as long
// as the responder does.
func (s *Service) Start(ctx context.Context) error { return s.startSettings(ctx) }

// Component is the policy service's share of a process: POLICY, the
// decisions table, the settings view and the decision responder (started
// once every earlier view, the catalog first, is loaded), and Run.
func (s *Service) Component() daemon.Component {
	c := daemon.Component{Name: "policy", Provision: s.EnsureStreams, Workers: []daemon.Worker{s.Run},
		Start: func(ctx context.Context) error {
			if err := s.Start(ctx); err != nil {
				return err
			}
			_, err := s.StartRPC()
			return err
		}}
	if s.deps.CH != nil {
		c.Migrate = s.Migrate
	}
	return c
}

// Migrate applies the policy service's ClickHouse migrations.
func (s *Service) Migrate(ctx context.Context) error {
	if s.deps.CH == nil {
		return errors.New("policy: migrate needs ClickHouse")
	}
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "policy")
	return err
}

// Pack returns the tenant's current signed pack, compiling it if a policy
// changed since the last call. Unchanged policies are not recompiled.
func (s *Service) Pack(tenant string) (*rules.Pack, error) {
	gen := s.deps.Catalog.PolicyGen(tenant)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.packs[tenant]; ok && e.gen == gen {
		return e.pack, nil
	}
	recs, gen := s.deps.Catalog.Policies(tenant)
	var vs []rules.Versioned
	for _, r := range recs {
		if r.Status != rules.StatusActive {
			continue
		}
		key := fmt.Sprintf("%s/%s@%d", tenant, r.ID, r.Version)
		c, ok := s.compiled[key]
		if !ok {
			doc := r.Doc
			doc.ID = r.ID
			var err error
			if c, err = s.compiler.Compile(doc); err != nil {
				// Policies are compiled before they are stored, so this
				// only happens if the engine changed under an old policy.
				s.log.Error("stored policy no longer compiles; skipped", slog.String("tenant", tenant), slog.String("policy", r.ID), slog.String("error", err.Error()))
				continue
			}
			s.compiled[key] = c
		}
		vs = append(vs, rules.Versioned{Version: r.Version, Compiled: c})
	}
	p, err := rules.NewPack(tenant, vs, s.signer)
	if err != nil {
		return nil, err
	}
	s.packs[tenant] = packEntry{gen: gen, pack: p}
	return p, nil
}

// StartRPC registers the decision endpoint (once). Call it before the
// HTTP API takes traffic so the first decision request finds a responder;
// Run calls it too and stops it at shutdown.
func (s *Service) StartRPC() (micro.Service, error) {
	s.rpcOnce.Do(func() { s.rpc, s.rpcErr = s.serveRPC() })
	return s.rpc, s.rpcErr
}

// Run serves decisions, evaluates ingested events and projects decisions
// until ctx ends, then drains.
func (s *Service) Run(ctx context.Context) error {
	srv, err := s.StartRPC()
	if err != nil {
		return err
	}
	workers := []daemon.Worker{
		s.runJudge,
		// Stop taking requests when the others stop (or one fails);
		// in-flight handlers finish their publish.
		func(ctx context.Context) error { <-ctx.Done(); return s.stopRPC(srv) },
	}
	if s.sink != nil {
		workers = append(workers, s.projectDecisions)
	}
	if s.cfg.EvaluateEvents {
		workers = append(workers, s.runEventVerdicts)
	}
	return daemon.RunAll(ctx, workers...)
}

// projectDecisions writes recorded decisions into ClickHouse.
func (s *Service) projectDecisions(ctx context.Context) error {
	cons, err := s.consumer(ctx, streams.Policy, DecisionsConsumerConfig())
	if err != nil {
		return err
	}
	return s.sink.Run(ctx, cons)
}

// DecisionsConsumerConfig is the decisions projector's durable consumer.
func DecisionsConsumerConfig() jetstream.ConsumerConfig {
	return chx.ConsumerConfig(DecisionsProjector, "POLICY decisions → ClickHouse", streams.AllDecisions, 20000)
}

func (s *Service) consumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if err := natsx.WaitForStream(ctx, s.deps.JS, stream, s.log); err != nil {
		return nil, err
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s: %w", cfg.Durable, err)
	}
	return cons, nil
}

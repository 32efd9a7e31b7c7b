// Package api is Vigil's HTTP API for the control plane and for reads:
// sessions from ClickHouse, agents from the CONTROL stream. It owns the
// CONTROL stream and the ClickHouse tables projected from it, and it
// registers agents first seen in events.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/budget"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/idempotency"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/openapi"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api/console"
	"github.com/vigilhq/vigil/services/api/internal/sessions"
	"github.com/vigilhq/vigil/services/api/migrations"
)

// Durable consumer names owned by the api service.
const (
	AgentsProjector = "api-agents-projector"
	AgentDiscovery  = "api-agent-discovery"
)

// Config tunes the api service.
type Config struct {
	// QueryTimeout bounds every ClickHouse read.
	QueryTimeout time.Duration
	Streams      streams.Options
	// MaxBodyBytes caps control-plane request bodies.
	MaxBodyBytes int64
	// MaxExportEvents caps a session export.
	MaxExportEvents int
	// DecisionTimeout bounds a request to the policy service.
	DecisionTimeout time.Duration
	// Judge is the LLM judge's deployment configuration (sealing secret,
	// SSRF allowlist for its endpoints).
	Judge judge.Deployment
	// RateLimits apply to tenants that have not set their own.
	RateLimits ratelimit.Limits
	// MaxLongPollsPerKey caps the long-polls (GET /v1/decisions/:id?wait=)
	// one API key or member holds open at once on an instance; beyond it
	// the answer is 429 with Retry-After.
	MaxLongPollsPerKey int
	// MaxAgents caps the agents a tenant may have: discovery registers no
	// agent past it (ingest refuses their events first; this is the
	// backstop for concurrent batches). 0 means no cap.
	MaxAgents int
	// Clock tells the time budget windows are read at (nil: time.Now).
	// It must agree with the policy service's; tests move both together
	// to cross window boundaries.
	Clock func() time.Time
	// ConsistencyWait bounds how long a read carrying a consistency token
	// waits for the projections it reads to pass it (then 503 with
	// Retry-After).
	ConsistencyWait time.Duration
	// Console configures the web console the api serves at /console.
	Console console.Config
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{QueryTimeout: 10 * time.Second, Streams: streams.DefaultOptions, MaxBodyBytes: 1 << 20, MaxExportEvents: 100000, DecisionTimeout: 2 * time.Second,
		RateLimits: ratelimit.DefaultLimits, MaxLongPollsPerKey: 16, MaxAgents: agent.DefaultMaxPerTenant,
		ConsistencyWait: consistency.DefaultWait, Console: console.DefaultConfig()}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if c.QueryTimeout < time.Second {
		errs = append(errs, errors.New("api: QueryTimeout must be at least 1s"))
	}
	if c.MaxBodyBytes < 1024 {
		errs = append(errs, errors.New("api: MaxBodyBytes must be at least 1 KiB"))
	}
	if c.DecisionTimeout <= 0 {
		errs = append(errs, errors.New("api: DecisionTimeout must be positive"))
	}
	if c.MaxExportEvents < 1 {
		errs = append(errs, errors.New("api: MaxExportEvents must be positive"))
	}
	if c.MaxLongPollsPerKey < 1 {
		errs = append(errs, errors.New("api: MaxLongPollsPerKey must be positive"))
	}
	if c.ConsistencyWait <= 0 {
		errs = append(errs, errors.New("api: ConsistencyWait must be positive"))
	}
	if c.MaxAgents < 0 {
		errs = append(errs, errors.New("api: MaxAgents must not be negative"))
	}
	if err := c.Console.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := control.RequireSecret("api: Judge.SealSecret (--judge-seal-key / $VIGIL_JUDGE_SEAL_KEY)", c.Judge.SealSecret); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Deps are the api's collaborators, wired by main.
type Deps struct {
	NC         *nats.Conn
	JS         jetstream.JetStream
	CH         driver.Conn
	Catalog    *control.Catalog
	Board      *approval.Board
	Store      *control.Store
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Limiter rate-limits decisions; nil admits everything.
	Limiter *ratelimit.Limiter
	// OIDC, when set, is the identity provider the catalog checks members'
	// ID tokens against; the console then offers sign-in with it.
	OIDC *oidc.Verifier
	// Local, when set, is the process's in-process endpoint table:
	// decisions go to a policy service running in this process without
	// the NATS round trip (pkg/rpc.Local), and over NATS otherwise.
	Local *rpc.Local
	// Gate, when set, is the process's priority gate (pkg/priority):
	// decisions are foreground, and the audit and agent projections give
	// way to them. Optional.
	Gate *priority.Gate
}

// Service is the api service.
type Service struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	sessions *sessions.Store
	sink     *chx.Sink
	discover *discovery
	compiler *rules.Compiler
	idem     *idempotency.Store
	safety   *safety // redaction settings and the LLM judge (redaction.go, llmconfig.go)
	usage    *control.Usage
	audit    [3]*chx.Sink // CONTROL, GUARDIAN, POLICY rejections
	// longPolls caps concurrent long-polls per caller (longpoll.go).
	longPolls *longPolls
	// decisionReads counts single-decision reads by where the record was
	// found: the ClickHouse projection or, while it lags, POLICY.
	decisionReads *prometheus.CounterVec
	// waits are what consistency tokens make reads wait for.
	waits readWaits
	// policy is the POLICY stream handle, looked up on first use.
	policyMu sync.Mutex
	policy   jetstream.Stream
	// counters reads budget usage (budgets.go).
	counters *budget.Counters
	// console is the web console, mounted with the api's routes (so the
	// route table attributes it to the api, which serves it).
	console *console.Console
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil || deps.CH == nil || deps.Catalog == nil || deps.Board == nil || deps.Store == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("api: NC, JS, CH, Catalog, Board, Store, Log and Registerer are required")
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "api")), sessions: sessions.NewStore(deps.CH), counters: budget.NewCounters(deps.JS),
		longPolls: newLongPolls(cfg.MaxLongPollsPerKey),
		decisionReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_api_decision_reads_total", Help: "Single-decision reads, by where the record was found (projection, stream).",
		}, []string{"from"}),
	}
	for _, c := range []prometheus.Collector{s.longPolls.active, s.longPolls.refused, s.decisionReads} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("api metrics: %w", err)
		}
	}
	box, err := judge.NewBox(cfg.Judge.SealSecret)
	if err != nil {
		return nil, err
	}
	s.safety = &safety{box: box}
	s.waits = s.newReadWaits()
	sink, err := chx.NewSink(chx.SinkConfig{
		Name: AgentsProjector, Table: readmodel.Agents, Project: projectAgent,
		MaxRows: 1000, Linger: 200 * time.Millisecond, MinInterval: chx.MinInsertInterval, Gate: deps.Gate,
	}, deps.CH, s.log, deps.Registerer)
	if err != nil {
		return nil, err
	}
	s.sink = sink
	for i, name := range []string{AuditControlProjector, AuditGuardianProjector, AuditPolicyProjector} {
		s.audit[i], err = chx.NewSink(chx.SinkConfig{
			Name: name, Table: readmodel.AuditLog, Project: projectAudit,
			MaxRows: 1000, Linger: 200 * time.Millisecond, MinInterval: chx.MinInsertInterval, Gate: deps.Gate,
		}, deps.CH, s.log, deps.Registerer)
		if err != nil {
			return nil, err
		}
	}
	if s.compiler, err = rules.NewCompiler(); err != nil {
		return nil, err
	}
	s.discover, err = newDiscovery(deps.Catalog, deps.Store, cfg.MaxAgents, s.log, deps.Registerer)
	if err != nil {
		return nil, err
	}
	// The console seals what it keeps for a browser with the deployment's
	// sealing secret, under a key of its own (purpose-separated).
	consoleBox, err := secretbox.New(cfg.Judge.SealSecret, "console")
	if err != nil {
		return nil, err
	}
	if s.console, err = console.New(cfg.Console, console.Deps{Auth: deps.Catalog, Board: deps.Board, Log: deps.Log, OIDC: deps.OIDC, Box: consoleBox}); err != nil {
		return nil, err
	}
	return s, nil
}

// EnsureStreams creates or updates CONTROL, the stream the api owns.
// It also opens the buckets the api owns too: idempotency, key usage and
// the console's sessions.
func (s *Service) EnsureStreams(ctx context.Context) error {
	if err := natsx.EnsureStreams(ctx, s.deps.JS, streams.ControlConfig(s.cfg.Streams)); err != nil {
		return err
	}
	idem, err := idempotency.Open(ctx, s.deps.JS, s.cfg.Streams.Replicas)
	if err != nil {
		return err
	}
	s.idem = idem
	s.usage, err = control.OpenUsage(ctx, s.deps.JS, s.deps.Catalog, s.cfg.Streams.Replicas, s.log)
	if err != nil {
		return err
	}
	// The console's sessions live in a bucket every instance shares.
	return s.console.EnsureSessions(ctx, s.deps.JS, s.cfg.Streams.Replicas)
}

// Migrate applies the api's ClickHouse migrations.
func (s *Service) Migrate(ctx context.Context) error {
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "api")
	return err
}

// Routes mounts the api endpoints on e. EnsureStreams must have run.
func (s *Service) Routes(e *echo.Echo) {
	// The API's description, generated from the route table; public.
	e.GET(openapi.Path, openapi.Handler)
	g := e.Group("/v1", httpkit.Authenticate(s.deps.Catalog), s.activateMembers)
	read, write := httpkit.Require(auth.SessionsRead), httpkit.Require(auth.AgentsWrite)
	agentsRead := httpkit.Require(auth.AgentsRead)
	pr, pw := httpkit.Require(auth.PoliciesRead), httpkit.Require(auth.PoliciesWrite)
	eval, vr, triage := httpkit.Require(auth.DecisionsEvaluate), httpkit.Require(auth.VerdictsRead), httpkit.Require(auth.VerdictsTriage)
	idem := s.idem.Middleware()
	limited := s.deps.Limiter.Middleware(ratelimit.Decisions)
	// Reads wait for the consistency token they carry (consistency.go).
	bound := s.cfg.ConsistencyWait
	sessionsFresh := consistency.Await(s.waits.sessions, bound)
	verdictsFresh := consistency.Await(s.waits.verdicts, bound)
	controlFresh := consistency.Await(s.waits.control, bound)

	g.GET("/sessions", s.listSessions, read, sessionsFresh)
	g.GET("/sessions/:id", s.getSession, read, sessionsFresh)
	g.GET("/sessions/:id/export.json", s.exportSession, read, sessionsFresh)

	// Agent keys register and narrow the declaration of the agents they
	// are bound to (checked in the handlers); the rest of agents:write
	// governs agents and is not theirs.
	register := httpkit.Require(auth.AgentsRegister)
	g.POST("/agents", s.registerAgent, register, idem)
	g.GET("/agents", s.listAgents, agentsRead, controlFresh)
	g.GET("/agents/:id", s.getAgent, agentsRead, controlFresh)
	g.PATCH("/agents/:id", s.patchAgent, write)
	g.GET("/agents/:id/sessions", s.agentSessions, agentsRead, read, sessionsFresh)
	g.POST("/agents/:id/manifest", s.declareAgent, httpkit.RequireAny(auth.AgentsWrite, auth.AgentsRegister))
	g.POST("/agents/:id/settings", s.agentSettings, write)

	g.POST("/policies", s.createPolicy, pw, idem)
	g.GET("/policies", s.listPolicies, pr, controlFresh)
	g.POST("/policies/validate", s.validatePolicy, pr)
	g.POST("/policies/test", s.testPolicy, pr)
	// Replay reads recorded decisions: policies:read and verdicts:read.
	g.POST("/policies/replay", s.replayPolicy, pr, vr)
	g.POST("/policies/check", s.checkPolicy, eval, limited, controlFresh, idem)
	g.GET("/policies/:id", s.getPolicy, pr, controlFresh)
	g.PATCH("/policies/:id", s.patchPolicy, pw)
	g.DELETE("/policies/:id", s.archivePolicy, pw)
	g.POST("/policies/:id/apply", s.applyDraft, pw)
	g.GET("/org-policy", s.getOrgPolicy, pr, controlFresh)
	g.POST("/org-policy", s.setOrgPolicy, pw)

	g.POST("/decisions.evaluate", s.evaluateDecision, eval, limited, controlFresh, idem)
	g.GET("/decisions/:id", s.getDecision, httpkit.RequireAny(auth.VerdictsRead, auth.DecisionsEvaluate))
	g.POST("/decisions/:id/redeem", s.redeemDecision, eval, idem)
	g.POST("/verdicts", s.postVerdict, eval, limited, controlFresh, idem)
	g.GET("/verdicts", s.listVerdicts, vr, verdictsFresh)
	g.GET("/verdicts/:id", s.getVerdict, vr)
	g.POST("/verdicts/:id/status", s.triageVerdict, triage)
	g.POST("/verdicts/:id/learn", s.learnVerdict, triage)

	ar, ad := httpkit.Require(auth.ApprovalsRead), httpkit.Require(auth.ApprovalsDecide)
	g.GET("/guardian/pending-actions", s.listPendingActions, ar)
	g.GET("/guardian/pending-actions/:id", s.getPendingAction, ar)
	g.POST("/guardian/pending-actions/:id/decide", s.decidePendingAction, ad)

	keys := httpkit.Require(auth.KeysManage)
	g.GET("/keys", s.listKeys, keys, controlFresh)
	g.POST("/keys", s.createKey, keys, s.idem.Sealed())
	g.DELETE("/keys/:id", s.revokeKey, keys)
	g.POST("/keys/:id/bind", s.bindKey, keys)
	mr, mm := httpkit.Require(auth.MembersRead), httpkit.Require(auth.MembersManage)
	g.GET("/members", s.listMembers, mr, controlFresh)
	g.POST("/members/invite", s.inviteMember, mm, idem)
	g.POST("/members/role", s.setMemberRole, mm)
	g.POST("/members/groups", s.setMemberGroups, mm)
	g.DELETE("/members/:email", s.removeMember, mm)
	sr, lm := httpkit.Require(auth.SettingsRead), httpkit.Require(auth.LimitsManage)
	g.GET("/settings/rate-limits", s.getLimits, sr, controlFresh)
	g.POST("/settings/rate-limits", s.setLimits, lm)
	g.PUT("/settings/rate-limits", s.setLimits, lm)
	sm := httpkit.Require(auth.SettingsManage)
	g.GET("/settings/agents", s.getRegistry, sr)
	g.POST("/settings/agents", s.setRegistry, sm)
	g.PUT("/settings/agents", s.setRegistry, sm)
	halts := httpkit.Require(auth.HaltsManage)
	g.POST("/halts", s.createHalt, halts, idem)
	g.GET("/halts", s.listHalts, halts, controlFresh)
	g.DELETE("/halts/:id", s.deleteHalt, halts)
	br, bm := httpkit.Require(auth.BudgetsRead), httpkit.Require(auth.BudgetsManage)
	g.POST("/budgets", s.createBudget, bm, idem)
	g.GET("/budgets", s.listBudgets, br)
	g.GET("/budgets/:id", s.getBudget, br)
	g.DELETE("/budgets/:id", s.deleteBudget, bm)
	g.GET("/mcp/pins", s.getMCPPins, httpkit.RequireAny(auth.VerdictsRead, auth.DecisionsEvaluate))
	g.POST("/mcp/pins", s.pinMCPTools, eval)
	g.DELETE("/mcp/pins", s.unpinMCPTools, httpkit.Require(auth.PoliciesWrite))
	audit := httpkit.Require(auth.AuditRead)
	g.GET("/audit", s.listAudit, audit, consistency.Await(s.waits.audit, bound))
	g.GET("/audit/export", s.exportAudit, audit, consistency.Await(s.waits.audit, bound))
	s.safetyRoutes(g)
	// The console dispatches its pages to the routes of e (docs/console.md).
	s.console.Routes(e)
}

// Run projects agent changes into ClickHouse and registers agents seen in
// events until ctx ends, then drains both.
func (s *Service) Run(ctx context.Context) error {
	project := func(sink *chx.Sink, stream, durable, desc, filter string) daemon.Worker {
		return func(ctx context.Context) error {
			cons, err := retryConsumer(ctx, s.deps.JS, stream, chx.ConsumerConfig(durable, desc, filter, 4000), s.log)
			if err != nil {
				return err
			}
			return sink.Run(ctx, cons)
		}
	}
	return daemon.RunAll(ctx,
		project(s.sink, streams.Control, AgentsProjector, "CONTROL agent changes → ClickHouse agents", streams.AllAgentChanges),
		project(s.audit[0], streams.Control, AuditControlProjector, "CONTROL → ClickHouse audit_log", "control.v1.>"),
		project(s.audit[1], streams.Guardian, AuditGuardianProjector, "GUARDIAN → ClickHouse audit_log", "guardian.v1.>"),
		project(s.audit[2], streams.Policy, AuditPolicyProjector, "POLICY → ClickHouse audit_log", streams.AllRejections),
		func(ctx context.Context) error { return s.usage.Run(ctx, 5*time.Second) },
		func(ctx context.Context) error {
			dcons, err := retryConsumer(ctx, s.deps.JS, streams.Ingest, discoveryConsumerConfig(), s.log)
			if err != nil {
				return err
			}
			return s.discover.run(ctx, dcons)
		})
}

// Component is the api's share of a process: CONTROL and its buckets, its
// tables, its routes and its projections. The catalog, approval board and
// rate limiter it reads are components of their own, shared in `vigil dev`.
func (s *Service) Component() daemon.Component {
	return daemon.Component{Name: "api", Provision: s.EnsureStreams, Migrate: s.Migrate, Routes: s.Routes, Workers: []daemon.Worker{s.Run}}
}

// retryConsumer creates a durable consumer once its stream exists.
func retryConsumer(ctx context.Context, js jetstream.JetStream, stream string, cfg jetstream.ConsumerConfig, log *slog.Logger) (jetstream.Consumer, error) {
	if err := natsx.WaitForStream(ctx, js, stream, log); err != nil {
		return nil, err
	}
	cons, err := js.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return cons, nil
}

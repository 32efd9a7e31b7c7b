// Package ingest receives agent events over HTTP, validates them and
// publishes them durably on the INGEST stream; its projector writes them to
// the ClickHouse events table.
//
// A 2xx from ingest means JetStream acknowledged the event: it is stored
// and will reach every projection, however long ClickHouse is down.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest/internal/projector"
	"github.com/vigilhq/vigil/services/ingest/migrations"
)

// ProjectorConsumer is the durable consumer that feeds the events table.
const ProjectorConsumer = streams.EventsProjector

// Config tunes ingest.
type Config struct {
	// MaxBatch is the most events one batch request may carry.
	MaxBatch int
	// MaxBodyBytes caps a single-event request; MaxBatchBodyBytes a batch.
	MaxBodyBytes      int64
	MaxBatchBodyBytes int64
	Limits            event.Limits
	Streams           streams.Options
	// PublishTimeout bounds the wait for JetStream's ack; past it the
	// client gets 503 with Retry-After and must retry (dedupe by eventId
	// makes the retry safe).
	PublishTimeout time.Duration
	// ProjectorBatch and ProjectorLinger tune the ClickHouse batch writer.
	ProjectorBatch  int
	ProjectorLinger time.Duration
	// MaxAgents caps the agents a tenant may have: an event naming an
	// agent the tenant does not have yet is refused (409, agent_limit)
	// once it has MaxAgents. 0 means no cap.
	MaxAgents int
	// PublishConns is how many NATS connections the receivers publish
	// on (Deps.Publish): the service's own and PublishConns-1 more,
	// opened by whoever wires the service (main, the stack). On one
	// connection concurrent requests queue on its lock while its flusher
	// writes; more connections measured no better p99 and ~10 % more CPU
	// per single event on the 2-core box (fewer writes are coalesced;
	// docs/benchmarks.md, perf-single), so the default stays 1.
	PublishConns int
	// RedactionKey (32 bytes or more) keys the placeholders' hashes; the
	// policy service must use the same one. Empty: the deployment key
	// service refuses to start without it (see control.RequireSecret).
	RedactionKey []byte
}

// DefaultPublishConns is Config.PublishConns by default.
const DefaultPublishConns = 1

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{
		MaxBatch: 1000, MaxBodyBytes: 1 << 20, MaxBatchBodyBytes: 32 << 20,
		Limits: event.DefaultLimits, Streams: streams.DefaultOptions,
		PublishTimeout: 5 * time.Second, ProjectorBatch: 5000, ProjectorLinger: 200 * time.Millisecond,
		MaxAgents: agent.DefaultMaxPerTenant, PublishConns: DefaultPublishConns,
	}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if c.MaxBatch < 1 || c.MaxBatch > 10000 {
		errs = append(errs, errors.New("ingest: MaxBatch must be 1-10000"))
	}
	if c.MaxBodyBytes < 1024 || c.MaxBatchBodyBytes < c.MaxBodyBytes {
		errs = append(errs, errors.New("ingest: MaxBodyBytes must be ≥ 1 KiB and ≤ MaxBatchBodyBytes"))
	}
	if c.Limits.MaxPayloadBytes < 1 {
		errs = append(errs, errors.New("ingest: Limits.MaxPayloadBytes must be positive"))
	}
	if c.PublishTimeout <= 0 {
		errs = append(errs, errors.New("ingest: PublishTimeout must be positive"))
	}
	if c.PublishConns < 1 || c.PublishConns > 64 {
		errs = append(errs, errors.New("ingest: PublishConns must be 1-64"))
	}
	if c.MaxAgents < 0 {
		errs = append(errs, errors.New("ingest: MaxAgents must not be negative"))
	}
	if c.ProjectorBatch < 1 || c.ProjectorLinger <= 0 {
		errs = append(errs, errors.New("ingest: ProjectorBatch and ProjectorLinger must be positive"))
	}
	if err := control.RequireSecret("ingest: RedactionKey (--redaction-key / $VIGIL_REDACTION_KEY)", c.RedactionKey); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Deps are ingest's collaborators, wired by main.
type Deps struct {
	JS jetstream.JetStream
	// Publish, when set, are the JetStream contexts the receivers publish
	// events through, taken in turn: each on a connection of its own,
	// authenticated as ingest like JS's. With one connection, concurrent
	// requests queue on its lock while its flusher writes to the socket
	// (the mutex profile of `vigil bench ingest`, issue 16). Empty: JS.
	// Whoever opened them (main, the stack) drains them at shutdown.
	Publish []jetstream.JetStream
	// CH is required only to run the projector (Run, Migrate).
	CH         driver.Conn
	Auth       httpkit.Authenticator
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Limiter rate-limits events per tenant and key; nil admits all.
	Limiter *ratelimit.Limiter
	// Agents tells which agents a tenant has (control.Catalog), for the
	// MaxAgents cap; nil applies no cap.
	Agents Agents
}

// Agents is what the agent cap reads: the catalog's view of the registry.
type Agents interface {
	HasAgent(tenant, id string) bool
	AgentCount(tenant string) int
}

// Service is the ingest service.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	sink *chx.Sink

	accepted   *prometheus.CounterVec
	publishErr prometheus.Counter
	// stored and duplicates are accepted's children a single event
	// counts, looked up once instead of per request.
	stored, duplicates prometheus.Counter
	// settings holds the tenants' redaction policies; set by EnsureStreams.
	settings *control.Settings
	// pubs are the publishing contexts (deps.Publish, else JS), next the
	// counter that takes them in turn.
	pubs []jetstream.JetStream
	next atomic.Uint32
}

// New validates cfg and deps and registers metrics.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.JS == nil || deps.Auth == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("ingest: JS, Auth, Log and Registerer are required")
	}
	for _, js := range deps.Publish {
		if js == nil {
			return nil, errors.New("ingest: Publish holds a nil JetStream")
		}
	}
	pubs := deps.Publish
	if len(pubs) == 0 {
		pubs = []jetstream.JetStream{deps.JS}
	}
	s := &Service{
		cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "ingest")), pubs: pubs,
		accepted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ingest_events_total", Help: "Events received, by outcome (accepted, duplicate, rejected, failed).",
		}, []string{"outcome"}),
		publishErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ingest_publish_errors_total", Help: "Publishes JetStream did not acknowledge in time.",
		}),
	}
	s.stored, s.duplicates = s.accepted.WithLabelValues(StatusAccepted), s.accepted.WithLabelValues(StatusDuplicate)
	for _, c := range []prometheus.Collector{s.accepted, s.publishErr} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("ingest metrics: %w", err)
		}
	}
	if deps.CH != nil {
		sink, err := chx.NewSink(chx.SinkConfig{
			Name: ProjectorConsumer, Table: readmodel.Events,
			Project: projector.Project, MaxRows: cfg.ProjectorBatch, Linger: cfg.ProjectorLinger,
		}, deps.CH, s.log, deps.Registerer)
		if err != nil {
			return nil, err
		}
		s.sink = sink
	}
	return s, nil
}

// publisher is the JetStream context of the next publish: the Publish
// connections in turn, so that concurrent requests spread over them.
func (s *Service) publisher() jetstream.JetStream {
	if len(s.pubs) == 1 {
		return s.pubs[0]
	}
	return s.pubs[int(s.next.Add(1)%uint32(len(s.pubs)))]
}

// EnsureStreams creates or updates INGEST, the stream ingest owns.
func (s *Service) EnsureStreams(ctx context.Context) error {
	return natsx.EnsureStreams(ctx, s.deps.JS, streams.IngestConfig(s.cfg.Streams))
}

// Start starts the redaction settings view on ctx (CONTROL must exist):
// the receivers redact every payload with it, so it must run as long as
// they do.
func (s *Service) Start(ctx context.Context) error { return s.startRedaction(ctx) }

// Component is ingest's share of a process: INGEST, the events table and
// its projector, the receivers.
func (s *Service) Component() daemon.Component {
	c := daemon.Component{Name: "ingest", Provision: s.EnsureStreams, Start: s.Start, Routes: s.Routes}
	if s.sink != nil {
		c.Migrate, c.Workers = s.Migrate, []daemon.Worker{s.Run}
	}
	return c
}

// Migrate applies ingest's ClickHouse migrations.
func (s *Service) Migrate(ctx context.Context) error {
	if s.deps.CH == nil {
		return errors.New("ingest: migrate needs ClickHouse")
	}
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "ingest")
	return err
}

// Routes mounts the ingest endpoints on e.
func (s *Service) Routes(e *echo.Echo) {
	writer := []echo.MiddlewareFunc{httpkit.Authenticate(s.deps.Auth), httpkit.Require(auth.EventsWrite)}
	// The group answers the rest of /v1 after authentication, as before;
	// its routes are registered with their chains composed once (echo
	// composes a route's middleware on every request), in the order the
	// group applied them.
	e.Group("/v1", writer...)
	e.POST("/v1/events", httpkit.Compose(s.postEvent, append(slices.Clip(writer), s.deps.Limiter.Middleware(ratelimit.Ingest))...))
	e.POST("/v1/events/batch", httpkit.Compose(s.postBatch, writer...))
	// OTLP/HTTP's path; its errors answer in OTLP's shape (otlpErrors
	// wraps authentication too).
	e.POST(httpkit.OTLPTracesPath, httpkit.Compose(s.postTraces, s.otlpErrors, httpkit.Authenticate(s.deps.Auth), httpkit.Require(auth.EventsWrite)))
}

// Run projects INGEST into ClickHouse until ctx ends, then drains.
func (s *Service) Run(ctx context.Context) error {
	if s.sink == nil {
		return errors.New("ingest: Run needs ClickHouse")
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, streams.Ingest, ProjectorConsumerConfig(s.cfg.ProjectorBatch))
	if err != nil {
		return fmt.Errorf("ingest: projector consumer: %w", err)
	}
	return s.sink.Run(ctx, cons)
}

// ProjectorConsumerConfig is the durable consumer definition. Retries
// happen inside the sink (it holds a failed batch and backs off), so
// MaxDeliver is unbounded: a ClickHouse outage must never exhaust it.
func ProjectorConsumerConfig(batch int) jetstream.ConsumerConfig {
	return chx.ConsumerConfig(ProjectorConsumer, "INGEST → ClickHouse events", streams.AllEventsReceived, 4*batch)
}

// Package notifier is Vigil's notification service. It keeps notification
// channels (webhook, Slack, Datadog, Splunk HEC, PagerDuty) as state on
// CONTROL, turns the signals other services record — POLICY verdicts,
// GUARDIAN approvals, RISK anomalies and high scores — into one delivery
// job per matching channel on its NOTIFIER stream, and delivers each job
// with signed requests, retries on a backoff schedule spanning hours,
// dead letters and replay. Every outbound request passes an SSRF guard.
package notifier

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/idempotency"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier/migrations"
)

// Durable consumer names.
const (
	ConsumerPolicy   = "notifier-policy"
	ConsumerGuardian = "notifier-guardian"
	ConsumerRisk     = "notifier-risk"
	ConsumerControl  = "notifier-control"
	ConsumerDeliver  = "notifier-deliver"
	ConsumerProject  = "notifier-deliveries"
)

// Schedule is the retry schedule: attempt n+1 waits an exponentially
// growing, jittered interval after attempt n fails (or the target's
// Retry-After, if longer), until MaxAttempts have failed; then the
// delivery is dead-lettered.
type Schedule struct {
	InitialInterval time.Duration
	Multiplier      float64
	// Jitter is the randomization factor: each wait is the nominal
	// interval ± this fraction.
	Jitter      float64
	MaxInterval time.Duration
	MaxAttempts int
	// RetryAfterCap bounds how long a target's Retry-After can postpone
	// the next attempt.
	RetryAfterCap time.Duration
}

// Config tunes the notifier.
type Config struct {
	Streams  streams.Options
	Schedule Schedule
	// AttemptTimeout bounds one HTTP attempt (connect to last byte).
	AttemptTimeout time.Duration
	// LaneWorkers is how many attempts run at once per channel, and
	// LaneQueue how many jobs wait per channel; a full lane pushes jobs
	// back to JetStream so one slow target never holds up the others.
	LaneWorkers int
	LaneQueue   int
	// BusyDelay is how long a job pushed back by a full lane waits.
	BusyDelay time.Duration
	// UnhealthyAfter consecutive failed attempts mark a channel unhealthy.
	UnhealthyAfter int
	// SignalMaxAge skips signals older than this (for example when the
	// notifier first starts on a deployment with a long history).
	SignalMaxAge time.Duration
	// AllowPrivate lists CIDRs the SSRF guard lets through (self-hosted
	// targets on a private network). Cloud metadata stays refused.
	AllowPrivate []netip.Prefix
	// SecretKey is the deployment secret (≥ 32 bytes) channel
	// credentials are encrypted under.
	SecretKey []byte
	// RotationGrace is how long the previous signing secret keeps signing
	// alongside the new one after a rotation.
	RotationGrace time.Duration
	MaxBodyBytes  int64
	// ShutdownTimeout bounds how long in-flight attempts may finish.
	ShutdownTimeout time.Duration
}

// DefaultConfig: 10 attempts over about 7 hours (5 s, 15 s, 45 s, … capped
// at 2 h), 10 s per attempt, 4 attempts at once per channel.
func DefaultConfig() Config {
	return Config{
		Streams: streams.DefaultOptions,
		Schedule: Schedule{
			InitialInterval: 5 * time.Second, Multiplier: 3, Jitter: 0.2,
			MaxInterval: 2 * time.Hour, MaxAttempts: 10, RetryAfterCap: 6 * time.Hour,
		},
		AttemptTimeout: 10 * time.Second, LaneWorkers: 4, LaneQueue: 128, BusyDelay: time.Second,
		UnhealthyAfter: 5, SignalMaxAge: time.Hour, RotationGrace: 24 * time.Hour,
		MaxBodyBytes: 64 << 10, ShutdownTimeout: 15 * time.Second,
	}
}

// ackWait is how long JetStream waits before redelivering a job that a
// (crashed) notifier took: long enough for a full lane to drain.
func (c Config) ackWait() time.Duration {
	return time.Duration(c.LaneQueue/max(c.LaneWorkers, 1)+2)*c.AttemptTimeout + 30*time.Second
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	s := c.Schedule
	if s.InitialInterval <= 0 || s.MaxInterval < s.InitialInterval || s.Multiplier < 1 || s.Jitter < 0 || s.Jitter >= 1 || s.MaxAttempts < 1 {
		errs = append(errs, errors.New("notifier: Schedule needs InitialInterval > 0, MaxInterval ≥ InitialInterval, Multiplier ≥ 1, 0 ≤ Jitter < 1, MaxAttempts ≥ 1"))
	}
	if c.AttemptTimeout <= 0 || c.LaneWorkers < 1 || c.LaneQueue < 1 || c.BusyDelay <= 0 {
		errs = append(errs, errors.New("notifier: AttemptTimeout, LaneWorkers, LaneQueue and BusyDelay must be positive"))
	}
	if c.UnhealthyAfter < 1 || c.SignalMaxAge <= 0 || c.MaxBodyBytes <= 0 || c.RotationGrace < 0 {
		errs = append(errs, errors.New("notifier: UnhealthyAfter, SignalMaxAge and MaxBodyBytes must be positive"))
	}
	if len(c.SecretKey) < 32 {
		errs = append(errs, errors.New("notifier: SecretKey must be at least 32 bytes (the deployment secret credentials are encrypted with)"))
	}
	return errors.Join(errs...)
}

// Deps are the notifier's collaborators.
type Deps struct {
	JS jetstream.JetStream
	// CH holds the deliveries projection.
	CH driver.Conn
	// Auth resolves API keys (control.Catalog).
	Auth       httpkit.Authenticator
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Resolver checks target hosts at configuration time; nil uses the
	// system resolver.
	Resolver ssrf.Resolver
	// Gate, when set, is the process's priority gate (pkg/priority):
	// this service's stream consumers decode and fold records as
	// background work that gives way to decisions in flight. Optional.
	Gate *priority.Gate
}

// Service is the notifier.
type Service struct {
	cfg      Config
	deps     Deps
	log      *slog.Logger
	box      *secretbox.Box
	guard    *ssrf.Guard
	client   *http.Client
	channels *registry
	sink     *chx.Sink
	idem     *idempotency.Store
	tracker  *healthTracker
	lanes    *lanes
	m        metrics

	regOnce sync.Once
	regErr  error
}

type metrics struct {
	attempts   *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	firstDelay prometheus.Histogram
	fanout     *prometheus.CounterVec
	dead       prometheus.Counter
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.JS == nil || deps.CH == nil || deps.Auth == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("notifier: JS, CH, Auth, Log and Registerer are required")
	}
	if deps.Resolver == nil {
		deps.Resolver = net.DefaultResolver
	}
	box, err := NewBox(cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	log := deps.Log.With(slog.String("service", "notifier"))
	guard := ssrf.New(cfg.AllowPrivate)
	s := &Service{
		cfg: cfg, deps: deps, log: log, box: box, guard: guard,
		client:   guard.Client(cfg.AttemptTimeout),
		channels: newRegistry(deps.JS, log),
		m: metrics{
			attempts: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "vigil_notifier_attempts_total", Help: "Delivery attempts, by channel type and result.",
			}, []string{"type", "result"}),
			latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
				Name: "vigil_notifier_attempt_seconds", Help: "Duration of one delivery attempt.",
				Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
			}, []string{"type"}),
			firstDelay: prometheus.NewHistogram(prometheus.HistogramOpts{
				Name: "vigil_notifier_signal_to_first_attempt_seconds", Help: "Time from a signal to its first delivery attempt.",
				Buckets: prometheus.ExponentialBuckets(0.001, 2, 15),
			}),
			fanout: prometheus.NewCounterVec(prometheus.CounterOpts{
				Name: "vigil_notifier_jobs_scheduled_total", Help: "Delivery jobs scheduled from signals, by signal type.",
			}, []string{"signal"}),
			dead: prometheus.NewCounter(prometheus.CounterOpts{
				Name: "vigil_notifier_dead_letters_total", Help: "Deliveries that exhausted their retries.",
			}),
		},
	}
	for _, c := range []prometheus.Collector{s.m.attempts, s.m.latency, s.m.firstDelay, s.m.fanout, s.m.dead} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("notifier metrics: %w", err)
		}
	}
	s.tracker = newHealthTracker(s)
	s.lanes = newLanes(s)
	s.sink, err = chx.NewSink(chx.SinkConfig{
		Name: ConsumerProject, Table: readmodel.Deliveries, Project: projectAttempt,
		MaxRows: 1000, Linger: 200 * time.Millisecond, MinInterval: chx.MinInsertInterval, Gate: deps.Gate,
	}, deps.CH, log, deps.Registerer)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// EnsureStreams creates or updates NOTIFIER, the stream the notifier
// owns, and opens the shared idempotency bucket. Channels are written to
// CONTROL, which the api owns; the notifier waits for it.
func (s *Service) EnsureStreams(ctx context.Context) error {
	if err := natsx.EnsureStreams(ctx, s.deps.JS, streams.NotifierConfig(s.cfg.Streams)); err != nil {
		return err
	}
	idem, err := idempotency.Open(ctx, s.deps.JS, s.cfg.Streams.Replicas)
	if err != nil {
		return err
	}
	s.idem = idem
	return nil
}

// Migrate applies the notifier's ClickHouse migrations.
func (s *Service) Migrate(ctx context.Context) error {
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "notifier")
	return err
}

// StartRegistry starts following channel state on CONTROL until ctx ends
// and waits until it is loaded. Routes need it, so a process starts it on
// its supervisor's view context, which outlives HTTP; Run calls it too
// (once), for callers that run the service alone.
func (s *Service) StartRegistry(ctx context.Context) error {
	s.regOnce.Do(func() {
		if err := natsx.WaitForStream(ctx, s.deps.JS, streams.Control, s.log); err != nil {
			s.regErr = err
			return
		}
		if err := s.channels.run(ctx); err != nil {
			s.regErr = err
			return
		}
		s.regErr = s.channels.sync(ctx)
	})
	return s.regErr
}

// Run fans signals out to channels, delivers jobs and projects attempts
// into ClickHouse until ctx ends; in-flight attempts finish first.
func (s *Service) Run(ctx context.Context) error {
	if err := s.StartRegistry(ctx); err != nil {
		return err
	}
	workers := []daemon.Worker{s.deliver, func(ctx context.Context) error {
		cons, err := s.consumer(ctx, streams.Notifier, chx.ConsumerConfig(ConsumerProject,
			"NOTIFIER delivery attempts → ClickHouse deliveries", streams.AllDeliveryAttempts, 4000))
		if err != nil {
			return err
		}
		return s.sink.Run(ctx, cons)
	}}
	for _, src := range []struct {
		stream, durable string
		filters         []string
	}{
		// Allow is no signal: the server does not deliver allowed
		// decisions (the outcome is in the subject) except those recorded
		// before it was, which decodeSignal passes over by header.
		{streams.Policy, ConsumerPolicy, streams.DecisionsWithOutcome(policy.Warn.String(), policy.RequireApproval.String(), policy.Block.String())},
		{streams.Guardian, ConsumerGuardian, []string{streams.AllApprovals}},
		{streams.Risk, ConsumerRisk, []string{streams.AllAnomalies, streams.AllSessionScores}},
		{streams.Control, ConsumerControl, []string{streams.AllHaltChanges}},
	} {
		workers = append(workers, func(ctx context.Context) error { return s.fanOut(ctx, src.stream, src.durable, src.filters) })
	}
	return daemon.RunAll(ctx, workers...)
}

// Component is the notifier's share of a process: NOTIFIER, the
// deliveries tables, the channel registry (a view started once CONTROL is
// followed), the channel routes and Run.
func (s *Service) Component() daemon.Component {
	return daemon.Component{Name: "notifier", Provision: s.EnsureStreams, Migrate: s.Migrate,
		Start: s.StartRegistry, Routes: s.Routes, Workers: []daemon.Worker{s.Run}}
}

// consumer creates a durable consumer once its stream exists.
func (s *Service) consumer(ctx context.Context, stream string, cfg jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if err := natsx.WaitForStream(ctx, s.deps.JS, stream, s.log); err != nil {
		return nil, err
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("consumer %s on %s: %w", cfg.Durable, stream, err)
	}
	return cons, nil
}

// cleanError describes a transport error without the URL Go's HTTP client
// puts in it, since a target URL may embed a credential.
func cleanError(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return truncate(err.Error(), 500)
}

// Package risk is Vigil's risk service. It learns each agent's baseline
// from the decisions on POLICY (every ingested event and every decision
// request is one), raises explained anomalies on RISK, scores every
// session, and serves profiles, session risk and metrics over HTTP.
//
// State is partitioned by agent (PartitionOf) into Config.Partitions
// partitions. Instances share them through leases in a JetStream KV
// bucket: one owner per partition, which rebuilds the partition by
// replaying POLICY from the start whenever it acquires it, and publishes
// only what its checkpoint says was not published yet. See docs/risk.md.
package risk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/risk/internal/baseline"
	"github.com/vigilhq/vigil/services/risk/migrations"
)

// Durable consumers and KV buckets owned by the risk service.
const (
	AnomaliesProjector = "risk-anomalies-projector"
	VerdictsProjector  = "risk-verdicts-projector"
	ScoresProjector    = "risk-scores-projector"
	ReviewsProjector   = "risk-reviews-projector"
	LeaseBucket        = streams.RiskLeaseBucket
	CheckpointBucket   = streams.RiskCheckpointBucket
)

// Config tunes the risk service.
type Config struct {
	Streams  streams.Options
	Baseline baseline.Config
	// Partitions is how many partitions agent state is split into. Every
	// instance must use the same number; changing it rebuilds everything.
	Partitions int
	// LeaseTTL is how long a partition stays owned by an instance that
	// stopped renewing it (a crashed instance's partitions move after it).
	LeaseTTL time.Duration
	// PublishTimeout bounds one publish on RISK.
	PublishTimeout time.Duration
	// QueryTimeout bounds one ClickHouse read or partition request.
	QueryTimeout time.Duration
	// ConsistencyWait bounds how long GET /v1/sessions/:id/risk waits for
	// the score it computes on request (a consistency token's events to
	// be judged, the partitions to fold them in).
	ConsistencyWait time.Duration
	// InstanceID names this instance in leases (random when empty).
	InstanceID string
	// Project turns on the ClickHouse projections (anomalies, verdicts,
	// scores, reviews). Every instance may run them: they are durable
	// consumers that share the work.
	Project bool
}

// DefaultConfig returns production defaults.
func DefaultConfig() Config {
	return Config{Streams: streams.DefaultOptions, Baseline: baseline.DefaultConfig(), Partitions: 4,
		LeaseTTL: 6 * time.Second, PublishTimeout: 2 * time.Second, QueryTimeout: 10 * time.Second, Project: true,
		ConsistencyWait: consistency.DefaultWait}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if err := c.Baseline.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.Partitions < 1 || c.Partitions > 256 {
		errs = append(errs, errors.New("risk: Partitions must be 1-256"))
	}
	if c.LeaseTTL < time.Second {
		errs = append(errs, errors.New("risk: LeaseTTL must be at least 1s"))
	}
	if c.PublishTimeout <= 0 || c.QueryTimeout <= 0 || c.ConsistencyWait <= 0 {
		errs = append(errs, errors.New("risk: PublishTimeout, QueryTimeout and ConsistencyWait must be positive"))
	}
	return errors.Join(errs...)
}

// Deps are the risk service's collaborators.
type Deps struct {
	NC *nats.Conn
	JS jetstream.JetStream
	// CH is needed for projections, metrics and Migrate.
	CH driver.Conn
	// Catalog authenticates HTTP callers and knows which anomaly
	// signatures were triaged as false positives.
	Catalog    *control.Catalog
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Gate, when set, is the process's priority gate (pkg/priority):
	// this service's stream consumers decode and fold records as
	// background work that gives way to decisions in flight. Optional.
	Gate *priority.Gate
}

// Service is the risk service.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger
	id   string

	leases, checkpoints jetstream.KeyValue
	sinks               []sinkSpec

	mu    sync.Mutex
	owned map[int]*lease

	observed    prometheus.Counter
	notOwned    prometheus.Counter
	ownShards   prometheus.Gauge
	processTime prometheus.Histogram
	anomalies   *prometheus.CounterVec
	scores      prometheus.Counter
	suppressed  prometheus.Counter
	ownedGauge  prometheus.Gauge
	onRequest   prometheus.Counter

	// judged is the policy service's progress judging INGEST's events
	// (ScoreNow waits for it).
	judged *natsx.ConsumerFloor
}

type lease struct {
	rev    uint64
	part   *partition
	cancel context.CancelFunc
	done   chan struct{}
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil || deps.Catalog == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("risk: NC, JS, Catalog, Log and Registerer are required")
	}
	if cfg.Project && deps.CH == nil {
		return nil, errors.New("risk: projections need ClickHouse")
	}
	id := cfg.InstanceID
	if id == "" {
		var b [6]byte
		_, _ = rand.Read(b[:])
		id = "risk-" + hex.EncodeToString(b[:])
	}
	s := &Service{cfg: cfg, deps: deps, id: id, log: deps.Log.With(slog.String("service", "risk"), slog.String("instance", id)), owned: map[int]*lease{},
		observed: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_risk_observations_total", Help: "Decisions folded into baselines."}),
		ownShards: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_risk_partitions_reading_own_shards",
			Help: "Partitions of this instance reading their own shards of POLICY only (at the tail); the others read every decision (rebuilding, or far behind)."}),
		notOwned: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_risk_decisions_not_owned_total",
			Help: "Decisions a partition was delivered and passed over as another partition's: read while far behind (a rebuild), recorded before the shard was in their subject, or a partition count that does not divide 16."}),
		processTime: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "vigil_risk_process_seconds", Help: "Time to fold one decision and publish its outputs.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 2, 18)}),
		anomalies:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vigil_risk_anomalies_total", Help: "Anomalies raised, by type."}, []string{"type"}),
		scores:     prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_risk_scores_total", Help: "Session score changes published."}),
		suppressed: prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_risk_suppressed_total", Help: "Anomalies not raised because triage marked them false positives."}),
		ownedGauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "vigil_risk_partitions_owned", Help: "Partitions this instance owns."}),
		onRequest:  prometheus.NewCounter(prometheus.CounterOpts{Name: "vigil_risk_scores_on_request_total", Help: "Session risk reads answered by the partitions' computed score (no published score yet, or a consistency token)."}),
		judged:     natsx.NewConsumerFloor(deps.JS, streams.Ingest, streams.EventVerdicts),
	}
	for _, c := range []prometheus.Collector{s.observed, s.notOwned, s.ownShards, s.processTime, s.anomalies, s.scores, s.suppressed, s.ownedGauge, s.onRequest} {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("risk metrics: %w", err)
		}
	}
	if cfg.Project {
		var err error
		if s.sinks, err = s.newSinks(); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// ID is this instance's name in the leases.
func (s *Service) ID() string { return s.id }

// EnsureStreams creates or updates RISK and the risk KV buckets.
func (s *Service) EnsureStreams(ctx context.Context) error {
	if err := natsx.EnsureStreams(ctx, s.deps.JS, streams.RiskConfig(s.cfg.Streams)); err != nil {
		return err
	}
	var err error
	s.leases, err = s.deps.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: LeaseBucket,
		Description: "Risk partition leases and live instances", TTL: s.cfg.LeaseTTL, Replicas: max(s.cfg.Streams.Replicas, 1), Storage: jetstream.MemoryStorage})
	if err != nil {
		return fmt.Errorf("risk leases: %w", err)
	}
	s.checkpoints, err = s.deps.JS.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: CheckpointBucket,
		Description: "Risk partitions: POLICY sequence whose outputs are published", Replicas: max(s.cfg.Streams.Replicas, 1)})
	if err != nil {
		return fmt.Errorf("risk checkpoints: %w", err)
	}
	return nil
}

// Migrate applies the risk service's ClickHouse migrations. The verdict
// and metrics views read the policy service's decisions table, so the
// policy migrations must have run first.
func (s *Service) Migrate(ctx context.Context) error {
	if s.deps.CH == nil {
		return errors.New("risk: migrate needs ClickHouse")
	}
	// Its metrics views read the policy service's decisions table: in a
	// deployment of separate processes, wait until policy migrated it.
	if err := readmodel.AwaitViewDependencies(ctx, s.deps.CH, readmodel.Risk, s.log); err != nil {
		return err
	}
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "risk")
	return err
}

func (s *Service) waitStream(ctx context.Context, stream string) error {
	return natsx.WaitForStream(ctx, s.deps.JS, stream, s.log)
}

// Run owns partitions and runs the projections until ctx ends, then
// releases its leases so another instance can take over at once.
func (s *Service) Run(ctx context.Context) error {
	if s.leases == nil {
		return errors.New("risk: EnsureStreams must run before Run")
	}
	workers := []daemon.Worker{s.lease}
	for _, sk := range s.sinks {
		workers = append(workers, func(ctx context.Context) error { return s.runSink(ctx, sk) })
	}
	return daemon.RunAll(ctx, workers...)
}

// lease takes and keeps partitions until ctx ends, then releases them.
func (s *Service) lease(ctx context.Context) error {
	s.balance(ctx)
	t := time.NewTicker(s.cfg.LeaseTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			s.releaseAll()
			return nil
		case <-t.C:
			s.balance(ctx)
		}
	}
}

// Component is the risk service's share of a process: RISK and its
// buckets, its tables, its routes and Run.
func (s *Service) Component() daemon.Component {
	return daemon.Component{Name: "risk", Provision: s.EnsureStreams, Migrate: s.Migrate, Routes: s.Routes, Workers: []daemon.Worker{s.Run}}
}

// Owned returns the partitions this instance owns and has rebuilt.
func (s *Service) Owned() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []int
	for i := 0; i < s.cfg.Partitions; i++ {
		if l := s.owned[i]; l != nil {
			select {
			case <-l.part.ready:
				out = append(out, i)
			default:
			}
		}
	}
	return out
}

func leaseKey(i int) string { return fmt.Sprintf("p.%d", i) }

// balance renews this instance's leases and takes or gives up partitions
// so that each live instance owns about Partitions / instances.
func (s *Service) balance(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	if _, err := s.leases.Put(ctx, "m."+s.id, []byte(time.Now().UTC().Format(time.RFC3339))); err != nil {
		s.log.Warn("risk: membership not renewed", slog.String("error", err.Error()))
		return
	}
	members := 0
	if kl, err := s.leases.ListKeys(ctx); err == nil {
		for k := range kl.Keys() {
			if len(k) > 2 && k[:2] == "m." {
				members++
			}
		}
	}
	members = max(members, 1)
	fair := (s.cfg.Partitions + members - 1) / members

	s.mu.Lock()
	defer s.mu.Unlock()
	for i, l := range s.owned {
		rev, err := s.leases.Update(ctx, leaseKey(i), []byte(s.id), l.rev)
		if err != nil {
			s.log.Warn("risk: lease lost", slog.Int("partition", i), slog.String("error", err.Error()))
			s.stopLocked(i, false)
			continue
		}
		l.rev = rev
	}
	for i := s.cfg.Partitions - 1; i >= 0 && len(s.owned) > fair; i-- {
		if s.owned[i] != nil {
			s.stopLocked(i, true)
		}
	}
	for i := 0; i < s.cfg.Partitions && len(s.owned) < fair; i++ {
		if s.owned[i] != nil {
			continue
		}
		rev, err := s.leases.Create(ctx, leaseKey(i), []byte(s.id))
		if err != nil {
			continue // owned by another instance
		}
		pctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		l := &lease{rev: rev, part: newPartition(s, i, s.cfg.Partitions), cancel: cancel, done: make(chan struct{})}
		s.owned[i] = l
		go func() {
			defer close(l.done)
			if err := l.part.run(pctx); err != nil && pctx.Err() == nil {
				s.log.Error("risk partition stopped", slog.Int("partition", i), slog.String("error", err.Error()))
				s.mu.Lock()
				if s.owned[i] == l {
					s.stopLocked(i, true)
				}
				s.mu.Unlock()
			}
		}()
		s.log.Info("risk partition acquired", slog.Int("partition", i))
	}
	s.ownedGauge.Set(float64(len(s.owned)))
}

// stopLocked stops partition i; release deletes its lease so another
// instance can take it without waiting for the TTL.
func (s *Service) stopLocked(i int, release bool) {
	l := s.owned[i]
	delete(s.owned, i)
	l.cancel()
	if release {
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
		_ = s.leases.Delete(ctx, leaseKey(i), jetstream.LastRevision(l.rev))
		cancel()
	}
}

func (s *Service) releaseAll() {
	s.mu.Lock()
	var dones []chan struct{}
	for i, l := range s.owned {
		dones = append(dones, l.done)
		s.stopLocked(i, true)
	}
	s.mu.Unlock()
	for _, d := range dones {
		<-d
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.PublishTimeout)
	defer cancel()
	_ = s.leases.Delete(ctx, "m."+s.id)
}

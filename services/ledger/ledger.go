// Package ledger is Vigil's tamper-evident ledger. It seals every
// accepted event, decision, control-plane change and approval change into
// a per-tenant RFC 6962 Merkle log (transparency-dev/merkle), integrates
// records in batches, signs a C2SP checkpoint after every batch and
// publishes it on the LEDGER stream, and serves inclusion and consistency
// proofs and self-contained evidence bundles that anyone can check
// offline (package evidence).
package ledger

import (
	"context"
	"encoding/json"
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

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ledger/evidence"
	"github.com/vigilhq/vigil/services/ledger/migrations"
)

// Config tunes the ledger.
type Config struct {
	Streams streams.Options
	// Origin prefixes every tenant log's origin ("<Origin>/<tenant>") and
	// names the checkpoint key. It must not change once checkpoints exist.
	Origin string
	// Seed is the ledger's 32-byte Ed25519 seed (evidence.DeriveSeed of
	// the deployment signing seed).
	Seed []byte
	// MaxBatch and Linger bound a batch: it is integrated and
	// checkpointed when it holds MaxBatch records or Linger after its
	// first record, whichever comes first.
	MaxBatch int
	Linger   time.Duration
	// TileCache is how many tiles are kept in memory for proofs.
	TileCache int
	// TenantMetrics exports vigil_ledger_tree_size{tenant}. Off by default:
	// /metrics is often scraped into shared monitoring, and tenant ids are
	// customers' names; a deployment that wants them per tenant opts in.
	TenantMetrics bool
}

// pullBatch is how many messages each source's consumer pulls ahead, and
// how many prepared records wait for the integrator. The integrator holds
// at most two batches (one being filled, one whose rows are being
// written); what it has not taken yet is better left on the stream,
// which stores it anyway, than held twice in memory (the client's copy
// and the prepared record). A pull of a thousand from the local server
// takes a few milliseconds, far less than a batch's inserts.
func (c Config) pullBatch() int { return min(c.MaxBatch, 1000) }

// maxAckPending bounds what each consumer has delivered and not yet
// acked: the two batches in flight, the prepared records waiting and the
// client's pull buffer. It is what Run holds at most anyway; the bound
// keeps the server from delivering more whatever a source's backlog
// (it was 4 × MaxBatch, which let 40,000 records pile up in memory
// while the inserts fell behind).
func (c Config) maxAckPending() int { return 2*c.MaxBatch + 2*c.pullBatch() }

// DefaultConfig returns defaults; Seed must still be set.
func DefaultConfig() Config {
	return Config{Streams: streams.DefaultOptions, Origin: "vigil.local/ledger", MaxBatch: 10000, Linger: 200 * time.Millisecond, TileCache: 8192}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	var errs []error
	if len(c.Seed) != 32 {
		errs = append(errs, errors.New("ledger: Seed must be 32 bytes"))
	}
	if c.Origin == "" {
		errs = append(errs, errors.New("ledger: Origin is required"))
	}
	if c.MaxBatch <= 0 || c.Linger <= 0 || c.Linger > time.Second {
		errs = append(errs, errors.New("ledger: MaxBatch must be positive and Linger in (0, 1s]"))
	}
	if c.TileCache <= 0 {
		errs = append(errs, errors.New("ledger: TileCache must be positive"))
	}
	return errors.Join(errs...)
}

// Deps are the ledger's collaborators.
type Deps struct {
	JS         jetstream.JetStream
	CH         driver.Conn
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Gate, when set, is the process's priority gate (pkg/priority):
	// this service's stream consumers decode and fold records as
	// background work that gives way to decisions in flight. Optional.
	Gate *priority.Gate
}

// Service is the ledger.
type Service struct {
	cfg   Config
	deps  Deps
	log   *slog.Logger
	keys  evidence.Keys
	store store

	// loadMu serialises loading a tenant's state; mu guards logs.
	loadMu sync.Mutex
	mu     sync.RWMutex
	logs   map[string]*logState

	tileMu sync.Mutex
	tiles  map[tenantTile][]byte
	// ids serves proofs by record id from memory (see idIndex).
	ids *idIndex

	version uint64 // last row version written (integrator only)
	// sealedMu guards sealed: per source stream, the highest sequence
	// whose record is committed under a checkpoint.
	sealedMu sync.Mutex
	sealed   map[string]uint64
	// heads is, per tenant, the tree of its last staged batch while that
	// is not committed yet, and staging its staged writes, whose keys
	// a batch staged after them skips (integrator only; see stage).
	heads   map[string]*logState
	staging map[string][]*tenantWrite
	// seen holds, per tenant, a Bloom filter of every committed record
	// key, so only keys that may be in the log cost a lookup (integrator
	// only).
	seen map[string]*seenFilter
	// held is every source message taken in and not yet settled; Run
	// keeps them alive, so the consumers' AckWait can be short.
	held *natsx.Held

	leaves         *prometheus.CounterVec
	batchDur       prometheus.Histogram
	treeSize       *prometheus.GaugeVec
	published      prometheus.Counter
	lastCheckpoint prometheus.Gauge
}

type tenantTile struct {
	tenant string
	id     tileID
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.JS == nil || deps.CH == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("ledger: JS, CH, Log and Registerer are required")
	}
	keys, err := evidence.NewKeys(cfg.Seed, cfg.Origin)
	if err != nil {
		return nil, err
	}
	s := &Service{
		cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "ledger")), keys: keys, store: store{ch: deps.CH},
		logs: map[string]*logState{}, tiles: map[tenantTile][]byte{}, ids: newIDIndex(idIndexGeneration), seen: map[string]*seenFilter{}, heads: map[string]*logState{}, staging: map[string][]*tenantWrite{}, sealed: map[string]uint64{}, held: natsx.NewHeld(),
		leaves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_ledger_leaves_total", Help: "Records appended to tenant logs, by kind.",
		}, []string{"kind"}),
		batchDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_ledger_batch_seconds", Help: "Time to integrate, store and checkpoint one batch.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		treeSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "vigil_ledger_tree_size", Help: "Size of each tenant's log at its latest checkpoint.",
		}, []string{"tenant"}),
		published: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_ledger_checkpoints_total", Help: "Checkpoints signed and committed.",
		}),
		// With the consumers' lag, what an alert needs to tell a stuck
		// ledger (records waiting, no checkpoint) from an idle one.
		lastCheckpoint: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_ledger_last_checkpoint_timestamp_seconds", Help: "Unix time of the latest checkpoint this instance committed (any tenant).",
		}),
	}
	collectors := []prometheus.Collector{s.leaves, s.batchDur, s.published, s.lastCheckpoint}
	if cfg.TenantMetrics {
		collectors = append(collectors, s.treeSize)
	} else {
		s.treeSize = nil
	}
	for _, c := range collectors {
		if err := deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("ledger metrics: %w", err)
		}
	}
	return s, nil
}

// SealedThrough is the highest sequence of a source stream (INGEST,
// POLICY, CONTROL, GUARDIAN) that this instance has committed under a
// checkpoint. Each stream is consumed in order, so every record of that
// stream up to it is sealed (or was sealed before, for a redelivery).
func (s *Service) SealedThrough(stream string) uint64 {
	s.sealedMu.Lock()
	defer s.sealedMu.Unlock()
	return s.sealed[stream]
}

// VerifierKey is the note verifier key of the ledger's checkpoints.
func (s *Service) VerifierKey() string { return s.keys.VerifierKey }

// Origin is the origin line of a tenant's checkpoints.
func (s *Service) Origin(tenant string) string { return s.cfg.Origin + "/" + tenant }

// EnsureStreams creates or updates LEDGER, the stream the ledger owns.
func (s *Service) EnsureStreams(ctx context.Context) error {
	return natsx.EnsureStreams(ctx, s.deps.JS, streams.LedgerConfig(s.cfg.Streams))
}

// Migrate applies the ledger's ClickHouse migrations.
func (s *Service) Migrate(ctx context.Context) error {
	_, err := chx.Migrate(ctx, s.deps.CH, migrations.FS, "ledger")
	return err
}

// state returns a tenant's committed log, loading it once.
func (s *Service) state(ctx context.Context, tenant string) (*logState, error) {
	s.mu.RLock()
	st, ok := s.logs[tenant]
	s.mu.RUnlock()
	if ok {
		return st, nil
	}
	s.loadMu.Lock()
	defer s.loadMu.Unlock()
	s.mu.RLock()
	st, ok = s.logs[tenant]
	s.mu.RUnlock()
	if ok {
		return st, nil
	}
	st, err := s.store.load(ctx, tenant)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.logs[tenant] = st
	s.mu.Unlock()
	return st, nil
}

// forget drops a tenant's cached state so the next use reloads what was
// committed (after a write whose outcome is unknown).
func (s *Service) forget(tenant string) {
	s.mu.Lock()
	delete(s.logs, tenant)
	s.mu.Unlock()
}

// Run seals records from every source stream until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	// in holds prepared records while the integrator is busy (staging a
	// batch, or waiting for the one before to commit): enough to keep the
	// consumers preparing meanwhile, no more; the backlog waits on the
	// stream, not in memory (see pullBatch).
	in := make(chan inbound, s.cfg.pullBatch())
	// Each source starts on its own once its stream exists, so a
	// deployment without (say) the guardian still seals everything else.
	var (
		mu      sync.Mutex
		ccs     []jetstream.ConsumeContext
		wg      sync.WaitGroup
		startMu sync.Mutex
		failed  error
	)
	sctx, stopSources := context.WithCancel(ctx)
	defer func() {
		stopSources()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, cc := range ccs {
			cc.Drain()
			<-cc.Closed()
		}
	}()
	fatal := make(chan struct{})
	for _, src := range sources {
		wg.Go(func() {
			cc, err := s.consume(sctx, src.stream, src.durable, src.filter, in)
			if err != nil {
				if sctx.Err() == nil {
					startMu.Lock()
					if failed == nil {
						failed = err
						close(fatal)
					}
					startMu.Unlock()
				}
				return
			}
			mu.Lock()
			ccs = append(ccs, cc)
			mu.Unlock()
		})
	}
	stopKeepAlive, keepAliveDone := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(keepAliveDone)
		s.held.KeepAlive(stopKeepAlive, natsx.KeepAliveEvery(chx.AckWait), nil)
	}()
	defer func() {
		close(stopKeepAlive)
		<-keepAliveDone
	}()
	s.log.Info("ledger started", slog.String("origin", s.cfg.Origin))
	// A staged batch owns its slice of messages until it commits (its
	// rows point into it); the slices of committed batches are reused.
	var spare [][]inbound
	newBatch := func() []inbound {
		if n := len(spare); n > 0 {
			b := spare[n-1]
			spare = spare[:n-1]
			return b
		}
		return make([]inbound, 0, s.cfg.MaxBatch)
	}
	recycle := func(st *staged) {
		if cap(st.msgs) >= s.cfg.MaxBatch && len(spare) < 2 {
			clear(st.msgs) // drop the records, which the slice would keep alive
			spare = append(spare, st.msgs[:0])
		}
	}
	batch := newBatch()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	// Batches are pipelined: batch k+1 is integrated and its rows are
	// being inserted while batch k's inserts finish and its checkpoint
	// is written; each batch's messages are acked once its own
	// checkpoint is committed, checkpoints in order.
	var prev *staged
	var ready <-chan struct{} // prev's inserts have finished
	setPrev := func(st *staged) {
		prev, ready = st, nil
		if st != nil {
			ready = st.ready
		}
	}
	// retry integrates msgs (what failed, as a whole) one batch at a time
	// until it commits, or gives the messages back when ctx ends.
	retry := func(msgs []inbound, cause error) {
		backoff := 100 * time.Millisecond
		for err := cause; err != nil; err = s.integrate(context.WithoutCancel(ctx), msgs) {
			s.log.Warn("ledger batch failed; retrying", slog.Int("records", len(msgs)), slog.String("error", err.Error()))
			select {
			case <-time.After(backoff):
			case <-ctx.Done():
				for _, m := range msgs {
					_ = m.msg.Nak()
					s.held.Settled(m.msg)
				}
				return
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}
	// commitPrev commits the batch in flight, if any.
	commitPrev := func() {
		if prev == nil {
			return
		}
		st := prev
		setPrev(nil)
		if err := s.commit(context.WithoutCancel(ctx), st); err != nil {
			s.abort(st)
			retry(st.msgs, err)
			return
		}
		recycle(st)
	}
	flush := func() {
		if len(batch) == 0 {
			return
		}
		st, err := s.stage(context.WithoutCancel(ctx), batch, time.Now())
		done := prev
		if err == nil && prev != nil {
			err = s.commit(context.WithoutCancel(ctx), prev)
		}
		if err != nil {
			// Whatever is staged was built on what failed: wait for its
			// inserts, reload the committed state and do it all again.
			var msgs []inbound
			if prev != nil {
				s.abort(prev)
				msgs = append(msgs, prev.msgs...)
			}
			s.abort(st) // stage returns what it took in, even when it fails
			setPrev(nil)
			retry(append(msgs, st.msgs...), err)
		} else {
			if done != nil {
				recycle(done)
			}
			setPrev(st)
		}
		batch = newBatch()
	}
	defer commitPrev()
	for {
		select {
		case m := <-in:
			if len(batch) == 0 {
				timer.Reset(s.cfg.Linger)
			}
			batch = append(batch, m)
			if len(batch) >= s.cfg.MaxBatch {
				timer.Stop()
				flush()
			}
		case <-ready:
			commitPrev()
		case <-timer.C:
			flush()
		case <-fatal:
			timer.Stop()
			flush()
			commitPrev()
			startMu.Lock()
			defer startMu.Unlock()
			return failed
		case <-ctx.Done():
			timer.Stop()
			// Integrate what was already taken in, then stop.
		drain:
			for {
				select {
				case m := <-in:
					batch = append(batch, m)
				default:
					break drain
				}
			}
			flush()
			commitPrev()
			return nil
		}
	}
}

// pending is one record on its way into a log. It keeps only what
// integrating it needs (not the envelope's record, whose canonical bytes
// are in row): a batch and its backlog hold tens of thousands.
type pending struct {
	tenant string
	row    leafRow
	rank   int
}

// consume waits for stream, then feeds its records, prepared, into in.
func (s *Service) consume(ctx context.Context, stream, durable, filter string, in chan<- inbound) (jetstream.ConsumeContext, error) {
	if err := natsx.WaitForStream(ctx, s.deps.JS, stream, s.log); err != nil {
		return nil, err
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: durable, Description: stream + " records → ledger leaves",
		FilterSubject: filter, AckPolicy: jetstream.AckExplicitPolicy,
		// Short, as for the projection sinks: Run keeps every message it
		// holds alive, so only a crashed instance's messages wait it out.
		AckWait: chx.AckWait, MaxDeliver: -1, MaxAckPending: s.cfg.maxAckPending(),
	})
	if err != nil {
		return nil, fmt.Errorf("ledger: consumer %s: %w", durable, err)
	}
	lag, err := natsx.NewPending(s.deps.Registerer, durable)
	if err != nil {
		return nil, err
	}
	nc := s.deps.JS.Conn() // the connection messages are delivered on, and acked
	cc, err := cons.Consume(func(m jetstream.Msg) {
		// Records are prepared (canonical bytes, leaf hash) here, in each
		// consumer's goroutine, while the previous batch is being written.
		// Only the ack subject is kept beyond this function: the
		// message's data and headers go into p, and the batches in flight
		// would otherwise hold every record twice until their checkpoint.
		// The stand-in is held (kept alive) from the start, which saves
		// replacing m by it in the held set.
		d := natsx.Detach(nc, m)
		s.held.Add(d)
		meta, err := m.Metadata()
		lag.ObserveMetadata(meta)
		s.deps.Gate.Yield()
		var p pending
		if err != nil {
			err = fmt.Errorf("no metadata: %w", err)
		} else {
			p, err = s.prepare(source{stream: meta.Stream, subject: m.Subject(), seq: meta.Sequence.Stream, data: m.Data()})
		}
		select {
		case in <- inbound{msg: d, p: p, err: err}:
		case <-ctx.Done():
			// Shutting down: back to the stream for the next instance now.
			_ = d.Nak()
			s.held.Settled(d)
		}
	}, jetstream.PullMaxMessages(s.cfg.pullBatch()))
	if err != nil {
		return nil, fmt.Errorf("ledger: consume %s: %w", stream, err)
	}
	return cc, nil
}

// inbound is a consumed message and its prepared record.
type inbound struct {
	msg jetstream.Msg
	p   pending
	err error
}

// prepare computes a source record's canonical bytes and leaf hash.
func (s *Service) prepare(m source) (pending, error) {
	if m.stream == streams.Ingest && fastIngest {
		if tenant, ok := subjectTenant(m.subject); ok {
			if canon, id, session, ok := fastEvent(tenant, m.data); ok {
				env := evidence.Envelope{Kind: evidence.KindEvent, Tenant: tenant, ID: id, Session: session}
				return newPending(m, env, canon), nil
			}
		}
	}
	if m.stream == streams.Policy && fastIngest {
		if tenant, ok := subjectTenant(m.subject); ok {
			if env, canon, ok := fastDecision(tenant, m.data); ok {
				return newPending(m, env, canon), nil
			}
		}
	}
	return prepareGeneric(m)
}

// fastIngest turns prepare's INGEST and POLICY fast paths on; benchmarks turn it
// off to measure the generic path in the same run.
var fastIngest = true

// prepareGeneric is prepare without the INGEST fast path.
func prepareGeneric(m source) (pending, error) {
	env, err := envelopeOf(m)
	if err != nil {
		return pending{}, err
	}
	var canon []byte
	if env.Kind == evidence.KindEvent {
		// EventEnvelope's record is canonical already.
		canon, err = evidence.CanonicalEnvelope(env.Kind, env.Tenant, env.ID, env.Session, env.Record)
	} else {
		canon, err = env.Canonical()
	}
	if err != nil {
		return pending{}, err
	}
	return newPending(m, env, canon), nil
}

// newPending is the record of m whose envelope and canonical bytes are
// env and canon.
func newPending(m source, env evidence.Envelope, canon []byte) pending {
	return pending{tenant: env.Tenant, rank: streamRank(m.stream), row: leafRow{
		key: env.Key(), kind: env.Kind, id: env.ID, session: env.Session, trace: traceOf(env.Kind, canon), canonical: canon,
		leaf: evidence.LeafHash(canon), stream: m.stream, seq: m.seq,
	}}
}

// CheckpointMsg is the payload of a checkpoint on the LEDGER stream.
type CheckpointMsg struct {
	Tenant     string    `json:"tenant"`
	Origin     string    `json:"origin"`
	TreeSize   uint64    `json:"treeSize"`
	RootHash   string    `json:"rootHash"`
	Checkpoint string    `json:"checkpoint"`
	At         time.Time `json:"at"`
}

// publish announces a committed checkpoint. The checkpoint is already
// durable in ClickHouse, so a failed publish is logged, not retried: the
// next batch publishes a newer one.
func (s *Service) publish(ctx context.Context, tenant string, st *logState) {
	data, _ := json.Marshal(CheckpointMsg{Tenant: tenant, Origin: s.Origin(tenant), TreeSize: st.size,
		RootHash: evidence.HashString(st.root), Checkpoint: string(st.checkpoint), At: time.Now().UTC()})
	m := nats.NewMsg(streams.CheckpointSubject(tenant))
	m.Data = data
	m.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s/%d", tenant, st.size))
	pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := s.deps.JS.PublishMsg(pctx, m); err != nil {
		s.log.Warn("ledger: publish checkpoint", slog.String("tenant", tenant), slog.Uint64("size", st.size), slog.String("error", err.Error()))
	}
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Component is the ledger's share of a process: LEDGER, its tables, the
// manifest-signing responder, the proof routes (authenticated by a, the
// catalog) and Run.
func (s *Service) Component(a httpkit.Authenticator) daemon.Component {
	return daemon.Component{Name: "ledger", Provision: s.EnsureStreams, Migrate: s.Migrate, Start: s.startRPC,
		Routes: func(e *echo.Echo) { s.Routes(e, a) }, Workers: []daemon.Worker{s.Run}}
}

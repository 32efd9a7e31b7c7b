package chx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/readmodel"
)

// ErrPoison marks a message that can never be projected (it does not
// decode). The sink terminates it and records it as a dead letter instead
// of retrying.
var ErrPoison = errors.New("poison message")

// Rows is what one stream message projects to: zero or more rows, each
// holding values in the order of the table's declared columns.
type Rows [][]any

// SinkConfig describes one projection from a stream consumer to a table.
type SinkConfig struct {
	// Name identifies the sink in logs, metrics and dead letters
	// (conventionally the durable consumer's name).
	Name string
	// Table is the table's declaration (pkg/readmodel): the sink inserts
	// every declared column, in order, so a writer's column list is the
	// declared one.
	Table readmodel.Table
	// Project maps a message to rows. An error wrapping ErrPoison
	// terminates the message; any other error is treated the same way,
	// since projection is a pure function of the message and cannot
	// succeed on retry.
	Project func(jetstream.Msg) (Rows, error)
	// MaxRows flushes when this many messages are buffered.
	MaxRows int
	// Linger flushes a non-empty buffer this long after its first message
	// arrived, which bounds how stale ClickHouse can be.
	Linger time.Duration
	// MinInterval, when set, is the least time from the start of one
	// insert to the start of the next that is not a full batch (MaxRows):
	// under a steady stream the sink then inserts at most once per
	// MinInterval however short Linger is, while a message that arrives
	// after a quiet spell still goes after Linger. Each insert costs
	// ClickHouse a new part and its merges, whatever its rows: measured
	// ~15 ms of ClickHouse's CPU per insert on the 2-core bench box
	// (ClickHouse's own advice: about one insert a second per table), CPU
	// that a box shared with Vigil takes from the decisions in flight
	// (docs/benchmarks.md, perf-stall).
	// Zero: Linger alone.
	MinInterval time.Duration
	// ShutdownTimeout bounds the final flush at shutdown; messages not
	// written by then are left unacked and redelivered on the next start.
	ShutdownTimeout time.Duration
	// Gate, when set, makes projecting deferrable work that gives way
	// to foreground requests in flight (pkg/priority); nil projects at
	// once.
	Gate *priority.Gate
}

// Validate reports what is missing from the configuration.
func (c SinkConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("sink: Name is required"))
	}
	if c.Table.Name == "" || len(c.Table.Columns) == 0 {
		errs = append(errs, errors.New("sink: Table with its Name and Columns is required"))
	}
	if c.Project == nil {
		errs = append(errs, errors.New("sink: Project is required"))
	}
	if c.MaxRows <= 0 || c.Linger <= 0 {
		errs = append(errs, errors.New("sink: MaxRows and Linger must be positive"))
	}
	if c.MinInterval < 0 {
		errs = append(errs, errors.New("sink: MinInterval must not be negative"))
	}
	return errors.Join(errs...)
}

// MinInsertInterval is the MinInterval of the sinks that fan POLICY and
// the other streams of decisions out to ClickHouse: at most about one
// insert a second per sink under load (ClickHouse's own advice per
// table), a lone message after a quiet spell still after its Linger.
const MinInsertInterval = time.Second

// AckWait is the AckWait for every sink's consumer. The sink keeps each
// message it holds alive (an in-progress ack once a quarter of AckWait has
// passed unheard), however long an insert or an outage lasts, so a short
// AckWait causes no redelivery while the sink runs, and after a crash the
// messages it held are redelivered within seconds rather than half a
// minute.
const AckWait = 5 * time.Second

// ConsumerConfig is the durable consumer a sink projects: explicit acks,
// the short AckWait above, and no delivery limit, because the sink retries
// an outage in-process and a ClickHouse outage must never exhaust a
// delivery budget. maxAckPending bounds how many messages the sink holds
// in memory during an outage.
func ConsumerConfig(durable, description, filter string, maxAckPending int) jetstream.ConsumerConfig {
	return jetstream.ConsumerConfig{
		Durable: durable, Description: description, FilterSubject: filter,
		AckPolicy: jetstream.AckExplicitPolicy, AckWait: AckWait,
		MaxDeliver: -1, MaxAckPending: maxAckPending,
	}
}

// Sink projects a JetStream consumer into a ClickHouse table. It buffers
// messages, inserts them in one batch when the buffer is full or has
// lingered, and acks the messages only after ClickHouse accepted the batch.
// While ClickHouse is down it retries with exponential backoff and keeps
// every message it holds alive with in-progress acks (the batch and the
// backlog behind it, up to the consumer's MaxAckPending), so nothing acked
// is ever lost and nothing is redelivered and written twice. A row the
// table rejects is isolated and only its message is dead-lettered.
type Sink struct {
	cfg  SinkConfig
	conn driver.Conn
	log  *slog.Logger
	stmt string
	held *natsx.Held

	rows       prometheus.Counter
	flushes    *prometheus.CounterVec
	flushTime  prometheus.Histogram
	deadLetter prometheus.Counter
	keepAlives prometheus.Counter
	age        *prometheus.HistogramVec
	pending    natsx.Pending
}

// The stages at which the sink records a message's age (since the stream
// stored it) in vigil_sink_message_age_seconds: their differences are
// where an event's way to being queryable goes (delivery from the stream,
// waiting for the linger and the insert before, the insert itself).
const (
	stageTaken     = "taken"     // the sink took it in from the consumer
	stageInserting = "inserting" // its batch's insert began
	stageWritten   = "written"   // ClickHouse took its batch: queryable
)

// NewSink validates cfg and registers the sink's metrics on reg.
func NewSink(cfg SinkConfig, conn driver.Conn, log *slog.Logger, reg prometheus.Registerer) (*Sink, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if conn == nil || log == nil || reg == nil {
		return nil, errors.New("sink: conn, log and registerer are required")
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 10 * time.Second
	}
	labels := prometheus.Labels{"sink": cfg.Name}
	s := &Sink{
		cfg:  cfg,
		conn: conn,
		log:  log.With(slog.String("sink", cfg.Name)),
		held: natsx.NewHeld(),
		stmt: cfg.Table.Insert(),
		rows: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_sink_rows_total", Help: "Rows inserted into ClickHouse by a projection sink.", ConstLabels: labels,
		}),
		flushes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_sink_flushes_total", Help: "Batch inserts attempted, by result.", ConstLabels: labels,
		}, []string{"result"}),
		flushTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "vigil_sink_flush_seconds", Help: "Time to insert one batch.", ConstLabels: labels,
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
		deadLetter: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_sink_dead_letters_total", Help: "Messages terminated because they cannot be projected.", ConstLabels: labels,
		}),
		keepAlives: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_sink_keepalives_total", Help: "In-progress acks sent for held messages so they are not redelivered.", ConstLabels: labels,
		}),
		age: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "vigil_sink_message_age_seconds",
			Help:        "Age of a message since the stream stored it, when the sink took it in (taken), when its batch's insert began (inserting) and when ClickHouse took the batch (written).",
			ConstLabels: labels, Buckets: prometheus.ExponentialBucketsRange(0.001, 60, 28),
		}, []string{"stage"}),
	}
	// The backlog between the stream and ClickHouse: messages pulled but
	// not yet written (held through an outage, up to MaxAckPending), and
	// the consumer's lag behind them.
	held := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vigil_sink_held_messages", Help: "Messages a projection sink has pulled and not yet written to ClickHouse and acked.", ConstLabels: labels,
	}, func() float64 { return float64(s.held.Len()) })
	var err error
	if s.pending, err = natsx.NewPending(reg, cfg.Name); err != nil {
		return nil, fmt.Errorf("sink %s metrics: %w", cfg.Name, err)
	}
	for _, c := range []prometheus.Collector{s.rows, s.flushes, s.flushTime, s.deadLetter, s.keepAlives, s.age, held} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("sink %s metrics: %w", cfg.Name, err)
		}
	}
	return s, nil
}

// entry is one message and the rows it projects to.
type entry struct {
	msg    jetstream.Msg
	rows   Rows
	at     time.Time // when the sink took it in, for the linger
	stored time.Time // when the stream stored it (zero if unknown)
}

type deadLetter struct {
	msg    jetstream.Msg
	reason string
	at     time.Time
}

type pending struct {
	entries []entry
	dead    []deadLetter
}

func (p *pending) size() int { return len(p.entries) + len(p.dead) }

// oldest is when the longest-held message of a non-empty p was taken in
// (both lists are in arrival order).
func (p *pending) oldest() time.Time {
	switch {
	case len(p.dead) == 0:
		return p.entries[0].at
	case len(p.entries) == 0:
		return p.dead[0].at
	case p.dead[0].at.Before(p.entries[0].at):
		return p.dead[0].at
	}
	return p.entries[0].at
}

// cut moves every dead letter and the first entries, n messages in all
// (or all the dead letters if they are more), out of p into a batch of
// their own.
func (p *pending) cut(n int) *pending {
	n = max(0, min(n-len(p.dead), len(p.entries)))
	out := &pending{entries: slices.Clone(p.entries[:n]), dead: slices.Clone(p.dead)}
	p.entries = slices.Delete(p.entries, 0, n)
	p.dead = p.dead[:0]
	return out
}

// inbox takes messages from the consumer's callback without ever
// blocking it. A blocked callback leaves messages the client already
// pulled queued inside the subscription, where the keep-alive cannot reach
// them: they would pass their AckWait during an outage and be redelivered,
// and written twice. How much can pile up is bounded by the consumer's
// MaxAckPending, which stops the server delivering more.
type inbox struct {
	mu     sync.Mutex
	msgs   []jetstream.Msg
	signal chan struct{}
}

func (b *inbox) put(m jetstream.Msg) {
	b.mu.Lock()
	b.msgs = append(b.msgs, m)
	b.mu.Unlock()
	select {
	case b.signal <- struct{}{}:
	default:
	}
}

func (b *inbox) take(into []jetstream.Msg) []jetstream.Msg {
	b.mu.Lock()
	defer b.mu.Unlock()
	into = append(into[:0], b.msgs...)
	clear(b.msgs)
	b.msgs = b.msgs[:0]
	return into
}

// Run consumes until ctx is cancelled, then drains: messages already
// delivered are flushed (within ShutdownTimeout) and acked before it
// returns. It returns nil after a clean shutdown.
func (s *Sink) Run(ctx context.Context, cons jetstream.Consumer) error {
	box := &inbox{signal: make(chan struct{}, 1)}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		s.held.Add(m)
		s.pending.Observe(m)
		box.put(m)
	},
		jetstream.PullMaxMessages(s.cfg.MaxRows),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				s.log.Warn("consume", slog.String("error", err.Error()))
			}
		}))
	if err != nil {
		return fmt.Errorf("sink %s: consume: %w", s.cfg.Name, err)
	}
	stopKeepAlive := make(chan struct{})
	keepAliveDone := make(chan struct{})
	var ackWait time.Duration
	if info := cons.CachedInfo(); info != nil {
		ackWait = info.Config.AckWait
	}
	go func() {
		defer close(keepAliveDone)
		// Beside the flush, so that neither a slow insert, a long outage
		// nor a backlog in the inbox lets a held message reach its AckWait.
		s.held.KeepAlive(stopKeepAlive, natsx.KeepAliveEvery(ackWait), s.keepAlives.Inc)
	}()
	defer func() {
		close(stopKeepAlive)
		<-keepAliveDone
	}()

	// One insert runs at a time, in its own goroutine, while this loop
	// keeps taking and projecting messages into the next batch: a batch
	// waits for the insert before it, never for its own linger on top of
	// it. Batches are inserted, and so acked, in stream order.
	var (
		buf      pending
		batch    []jetstream.Msg
		inflight bool
		done     = make(chan *pending, 1)
		linger   = time.NewTimer(time.Hour)
		// lastStart is when the last insert started (MinInterval).
		lastStart time.Time
	)
	linger.Stop()
	add := func(m jetstream.Msg) {
		rows, err := s.project(m)
		if err != nil {
			buf.dead = append(buf.dead, deadLetter{msg: m, reason: err.Error(), at: time.Now()})
			return
		}
		e := entry{msg: m, rows: rows, at: time.Now()}
		if md, err := m.Metadata(); err == nil {
			e.stored = md.Timestamp
			s.observeAge(stageTaken, e.at, e)
		}
		buf.entries = append(buf.entries, e)
	}
	// kick starts the next insert when none runs and the buffer is full or
	// its oldest message has lingered (and MinInterval has passed since
	// the last insert started); otherwise it arms the linger timer for
	// when it will have.
	kick := func() {
		if inflight || buf.size() == 0 {
			return
		}
		wait := s.cfg.Linger - time.Since(buf.oldest())
		if s.cfg.MinInterval > 0 && !lastStart.IsZero() {
			wait = max(wait, s.cfg.MinInterval-time.Since(lastStart))
		}
		if buf.size() < s.cfg.MaxRows && wait > 0 {
			linger.Reset(wait)
			return
		}
		linger.Stop()
		next := buf.cut(s.cfg.MaxRows)
		inflight, lastStart = true, time.Now()
		go func() {
			s.flush(ctx, next)
			done <- next
		}()
	}

running:
	for {
		select {
		case <-box.signal:
			batch = box.take(batch)
			for _, m := range batch {
				s.cfg.Gate.Yield()
				add(m)
			}
			kick()
		case p := <-done:
			// Unwritten only if ctx ended: back in front, for the
			// shutdown flush.
			inflight = false
			buf.entries = append(p.entries, buf.entries...)
			kick()
		case <-linger.C:
			kick()
		case <-ctx.Done():
			break running
		}
	}
	if inflight {
		p := <-done
		buf.entries = append(p.entries, buf.entries...)
	}

	// Stop pulling, then take in whatever was already delivered.
	cc.Drain()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	select {
	case <-cc.Closed():
	case <-stopCtx.Done():
	}
	for _, m := range box.take(batch) {
		add(m)
	}
	linger.Stop()
	s.flush(stopCtx, &buf)
	// Whatever could not be written before the deadline goes back to the
	// stream for the next consumer instance, now rather than after AckWait.
	for _, m := range s.held.All() {
		_ = m.Nak()
		s.held.Settled(m)
	}
	return nil
}

// flush writes the buffered rows, retrying with backoff until ClickHouse
// takes them or ctx ends. Every message it writes is acked, every message
// whose row the table rejects is terminated as a dead letter; on ctx end
// the rest stay in the buffer (and held) for the caller to nak.
func (s *Sink) flush(ctx context.Context, buf *pending) {
	for _, d := range buf.dead {
		s.kill(d.msg, d.reason)
	}
	buf.dead = buf.dead[:0]
	if len(buf.entries) == 0 {
		return
	}

	now := time.Now()
	for _, e := range buf.entries {
		s.observeAge(stageInserting, now, e)
	}
	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	attempt := 0
	rest := buf.entries
	_ = backoff.Retry(func() error {
		attempt++
		var err error
		rest, err = s.insert(ctx, rest)
		if err != nil {
			s.flushes.WithLabelValues("error").Inc()
			if ctx.Err() == nil {
				s.log.Warn("insert failed; retrying", slog.Int("messages", len(rest)),
					slog.Int("attempt", attempt), slog.String("error", err.Error()))
			}
		}
		return err
	}, backoff.WithContext(b, ctx))
	// rest aliases buf.entries' backing array; copy before reusing it.
	buf.entries = append(buf.entries[:0], slices.Clone(rest)...)
}

// insert writes entries in one batch, isolating rows the table rejects:
// a row the driver refuses names its message directly; a batch the server
// refuses for its data is bisected until the offending messages stand
// alone. Written messages are acked and rejected ones terminated as they
// are found, so a retry after an outage mid-bisection writes nothing
// twice. It returns the entries still unwritten, with the error (an outage,
// not a rejection) that stopped it.
func (s *Sink) insert(ctx context.Context, entries []entry) ([]entry, error) {
	for len(entries) > 0 {
		start := time.Now()
		err := s.send(ctx, entries)
		s.flushTime.Observe(time.Since(start).Seconds())
		var row *rowError
		switch {
		case err == nil:
			s.flushes.WithLabelValues("ok").Inc()
			now := time.Now()
			for _, e := range entries {
				s.observeAge(stageWritten, now, e)
				s.rows.Add(float64(len(e.rows)))
				_ = e.msg.Ack()
				s.held.Settled(e.msg)
			}
			return nil, nil
		case errors.As(err, &row):
			s.flushes.WithLabelValues("poison").Inc()
			s.kill(entries[row.entry].msg, err.Error())
			entries = slices.Delete(slices.Clone(entries), row.entry, row.entry+1)
		case rejectsData(err):
			s.flushes.WithLabelValues("poison").Inc()
			if len(entries) == 1 {
				s.kill(entries[0].msg, err.Error())
				return nil, nil
			}
			mid := len(entries) / 2
			if rest, err := s.insert(ctx, entries[:mid]); err != nil {
				return append(slices.Clone(rest), entries[mid:]...), err
			}
			entries = entries[mid:]
		default:
			return entries, err
		}
	}
	return nil, nil
}

// observeAge records e's age at stage, as of now.
func (s *Sink) observeAge(stage string, now time.Time, e entry) {
	if !e.stored.IsZero() {
		s.age.WithLabelValues(stage).Observe(max(0, now.Sub(e.stored).Seconds()))
	}
}

// kill terminates a message that can never be projected and records it as
// a dead letter. It stays in the stream, so a consumer created after the
// bug is fixed can replay it.
func (s *Sink) kill(m jetstream.Msg, reason string) {
	s.deadLetter.Inc()
	var seq uint64
	if meta, err := m.Metadata(); err == nil {
		seq = meta.Sequence.Stream
	}
	s.log.Error("dead letter: message cannot be projected",
		slog.String("subject", m.Subject()), slog.Uint64("stream_seq", seq), slog.String("reason", reason))
	_ = m.TermWithReason(truncate(reason, 200))
	s.held.Settled(m)
}

// rowError is a row the driver refused to append (a value that does not
// fit its column): entry is the index of the message it came from.
type rowError struct {
	entry int
	err   error
}

func (e *rowError) Error() string { return e.err.Error() }
func (e *rowError) Unwrap() error { return e.err }

// dataErrorCodes are the ClickHouse exception codes that mean the server
// refused the data of an insert, not that it could not take any insert
// now. Only these make the sink bisect a batch and dead-letter what the
// server keeps refusing; any other exception (unknown table or column,
// memory or part limits, read-only replica, timeouts) is retried like an
// outage, so a schema or capacity problem stalls the projection instead of
// throwing away every message it holds.
var dataErrorCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	26:  true, // CANNOT_PARSE_QUOTED_STRING
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
	395: true, // FUNCTION_THROW_IF_VALUE_IS_NON_ZERO
	469: true, // VIOLATED_CONSTRAINT
	691: true, // UNKNOWN_ELEMENT_OF_ENUM
}

// rejectsData reports whether err is the server refusing an insert's data.
func rejectsData(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && dataErrorCodes[ex.Code]
}

func (s *Sink) send(ctx context.Context, entries []entry) error {
	// clickhouse-go (v2.50 and earlier) watches a batch's context in a
	// goroutine during Send and closes the TCP connection if the context
	// ends. That goroutine can still fire when the context ends just after
	// Send returned, closing a connection already back in the pool, so the
	// next user of the pool fails ("use of closed network connection") or,
	// worse, an insert that the server already committed reports an error
	// and is written twice on retry (upstream: ClickHouse/clickhouse-go
	// PR #2032). So the driver gets a context that ends only while this
	// call is still running: on ctx's end or after the insert timeout, never
	// on the way out.
	//
	// The batch keeps its connection from PrepareBatch to Send (no
	// WithReleaseConnection): re-acquiring one inside Send races with that
	// same watchdog when ctx ends mid-insert (a data race in the driver).
	if err := ctx.Err(); err != nil {
		return err
	}
	rows := 0
	for _, e := range entries {
		rows += len(e.rows)
	}
	if rows == 0 {
		return nil
	}
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	timeout := time.AfterFunc(30*time.Second, cancel)
	stopParent := context.AfterFunc(ctx, cancel)
	defer func() {
		timeout.Stop()
		stopParent()
	}()
	batch, err := s.conn.PrepareBatch(bctx, s.stmt)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", s.cfg.Table.Name, err)
	}
	defer func() { _ = batch.Close() }()
	presizeStrings(batch, entries, rows)
	for i, e := range entries {
		for _, r := range e.rows {
			if err := batch.Append(r...); err != nil {
				return &rowError{entry: i, err: fmt.Errorf("%w: append to %s: %w", ErrPoison, s.cfg.Table.Name, err)}
			}
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send %s: %w", s.cfg.Table.Name, err)
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// QueryContext returns a context for one API read: bounded in time (the
// driver turns the deadline into max_execution_time) and in rows read.
func QueryContext(ctx context.Context, timeout time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	return clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"max_result_rows": 100000,
	})), cancel
}

// project is cfg.Project, holding each row to the declaration: a row of
// the wrong width is the writer's bug, recorded as a dead letter that
// says so rather than ClickHouse's error for the whole batch.
func (s *Sink) project(m jetstream.Msg) (Rows, error) {
	rows, err := s.cfg.Project(m)
	if err != nil {
		return nil, err
	}
	for _, r := range rows {
		if err := s.cfg.Table.CheckRow(r); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrPoison, err)
		}
	}
	return rows, nil
}

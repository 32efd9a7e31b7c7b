package chx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrPoison marks a message that can never be projected (it does not
// decode). The sink terminates it and records it as a dead letter instead
// of retrying.
var ErrPoison = errors.New("poison message")

// Rows is what one stream message projects to: zero or more rows, each
// holding values in the order of SinkConfig.Columns.
type Rows [][]any

// SinkConfig describes one projection from a stream consumer to a table.
type SinkConfig struct {
	// Name identifies the sink in logs, metrics and dead letters
	// (conventionally the durable consumer's name).
	Name    string
	Table   string
	Columns []string
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
	// ShutdownTimeout bounds the final flush at shutdown; messages not
	// written by then are left unacked and redelivered on the next start.
	ShutdownTimeout time.Duration
}

// Validate reports what is missing from the configuration.
func (c SinkConfig) Validate() error {
	var errs []error
	if c.Name == "" {
		errs = append(errs, errors.New("sink: Name is required"))
	}
	if c.Table == "" || len(c.Columns) == 0 {
		errs = append(errs, errors.New("sink: Table and Columns are required"))
	}
	if c.Project == nil {
		errs = append(errs, errors.New("sink: Project is required"))
	}
	if c.MaxRows <= 0 || c.Linger <= 0 {
		errs = append(errs, errors.New("sink: MaxRows and Linger must be positive"))
	}
	return errors.Join(errs...)
}

// Sink projects a JetStream consumer into a ClickHouse table. It buffers
// messages, inserts them in one batch when the buffer is full or has
// lingered, and acks the messages only after ClickHouse accepted the batch.
// While ClickHouse is down it retries the same batch with exponential
// backoff, keeps the messages alive with in-progress acks, and stops
// pulling more, so nothing acked is ever lost and nothing unacked piles up.
type Sink struct {
	cfg    SinkConfig
	conn   driver.Conn
	log    *slog.Logger
	insert string

	rows       prometheus.Counter
	flushes    *prometheus.CounterVec
	flushTime  prometheus.Histogram
	deadLetter prometheus.Counter
}

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
		cfg:    cfg,
		conn:   conn,
		log:    log.With(slog.String("sink", cfg.Name)),
		insert: fmt.Sprintf("INSERT INTO %s (%s)", cfg.Table, strings.Join(cfg.Columns, ", ")),
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
	}
	for _, c := range []prometheus.Collector{s.rows, s.flushes, s.flushTime, s.deadLetter} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("sink %s metrics: %w", cfg.Name, err)
		}
	}
	return s, nil
}

type pending struct {
	msgs []jetstream.Msg
	rows Rows
	dead []deadLetter
}

type deadLetter struct {
	msg    jetstream.Msg
	reason string
}

func (p *pending) reset() { p.msgs, p.rows, p.dead = p.msgs[:0], p.rows[:0], p.dead[:0] }

// Run consumes until ctx is cancelled, then drains: messages already
// delivered are flushed (within ShutdownTimeout) and acked before it
// returns. It returns nil after a clean shutdown.
func (s *Sink) Run(ctx context.Context, cons jetstream.Consumer) error {
	in := make(chan jetstream.Msg, s.cfg.MaxRows)
	cc, err := cons.Consume(func(m jetstream.Msg) { in <- m },
		jetstream.PullMaxMessages(s.cfg.MaxRows),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) {
				s.log.Warn("consume", slog.String("error", err.Error()))
			}
		}))
	if err != nil {
		return fmt.Errorf("sink %s: consume: %w", s.cfg.Name, err)
	}

	var (
		buf    pending
		linger = time.NewTimer(time.Hour)
	)
	linger.Stop()
	add := func(m jetstream.Msg) {
		if len(buf.msgs) == 0 && len(buf.dead) == 0 {
			linger.Reset(s.cfg.Linger)
		}
		rows, err := s.cfg.Project(m)
		if err != nil {
			buf.dead = append(buf.dead, deadLetter{msg: m, reason: err.Error()})
			return
		}
		buf.msgs = append(buf.msgs, m)
		buf.rows = append(buf.rows, rows...)
	}

running:
	for {
		select {
		case m := <-in:
			add(m)
			if len(buf.msgs)+len(buf.dead) >= s.cfg.MaxRows {
				linger.Stop()
				s.flush(ctx, &buf)
			}
		case <-linger.C:
			s.flush(ctx, &buf)
		case <-ctx.Done():
			break running
		}
	}

	// Stop pulling, then take in whatever was already delivered.
	cc.Drain()
	stopCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	for {
		select {
		case m := <-in:
			add(m)
			continue
		case <-cc.Closed():
		}
		break
	}
	for len(in) > 0 {
		add(<-in)
	}
	linger.Stop()
	s.flush(stopCtx, &buf)
	// Whatever could not be written before the deadline goes back to the
	// stream for the next consumer instance.
	for _, m := range buf.msgs {
		_ = m.Nak()
	}
	return nil
}

// flush writes the buffered rows, retrying with backoff until ClickHouse
// takes them or ctx ends, then acks. On ctx end the buffer is kept (the
// caller naks it).
func (s *Sink) flush(ctx context.Context, buf *pending) {
	for _, d := range buf.dead {
		s.deadLetter.Inc()
		meta, _ := d.msg.Metadata()
		var seq uint64
		if meta != nil {
			seq = meta.Sequence.Stream
		}
		s.log.Error("dead letter: message cannot be projected",
			slog.String("subject", d.msg.Subject()), slog.Uint64("stream_seq", seq), slog.String("reason", d.reason))
		_ = d.msg.TermWithReason(truncate(d.reason, 200))
	}
	buf.dead = buf.dead[:0]
	if len(buf.msgs) == 0 {
		return
	}

	b := backoff.NewExponentialBackOff()
	b.InitialInterval = 100 * time.Millisecond
	b.MaxInterval = 5 * time.Second
	b.MaxElapsedTime = 0
	attempt := 0
	err := backoff.Retry(func() error {
		attempt++
		if attempt > 1 {
			// Keep the batch's messages from being redelivered to another
			// consumer while this one is still trying to write them.
			for _, m := range buf.msgs {
				_ = m.InProgress()
			}
		}
		start := time.Now()
		err := s.send(ctx, buf.rows)
		s.flushTime.Observe(time.Since(start).Seconds())
		if errors.Is(err, ErrPoison) {
			s.flushes.WithLabelValues("poison").Inc()
			return backoff.Permanent(err)
		}
		if err != nil {
			s.flushes.WithLabelValues("error").Inc()
			if ctx.Err() == nil {
				s.log.Warn("insert failed; retrying", slog.Int("rows", len(buf.rows)),
					slog.Int("attempt", attempt), slog.String("error", err.Error()))
			}
			return err
		}
		return nil
	}, backoff.WithContext(b, ctx))
	if errors.Is(err, ErrPoison) {
		// A row the table rejects is a projection bug, not an outage:
		// retrying cannot help, so the batch becomes dead letters (still
		// replayable from the stream once the bug is fixed).
		for _, m := range buf.msgs {
			buf.dead = append(buf.dead, deadLetter{msg: m, reason: err.Error()})
		}
		buf.msgs, buf.rows = buf.msgs[:0], buf.rows[:0]
		s.flush(ctx, buf)
		return
	}
	if err != nil {
		return
	}
	s.flushes.WithLabelValues("ok").Inc()
	s.rows.Add(float64(len(buf.rows)))
	for _, m := range buf.msgs {
		_ = m.Ack()
	}
	buf.reset()
}

func (s *Sink) send(ctx context.Context, rows Rows) error {
	if len(rows) == 0 {
		return nil
	}
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
	bctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	timeout := time.AfterFunc(30*time.Second, cancel)
	stopParent := context.AfterFunc(ctx, cancel)
	defer func() {
		timeout.Stop()
		stopParent()
	}()
	batch, err := s.conn.PrepareBatch(bctx, s.insert)
	if err != nil {
		return fmt.Errorf("prepare %s: %w", s.cfg.Table, err)
	}
	defer func() { _ = batch.Close() }()
	for _, r := range rows {
		if err := batch.Append(r...); err != nil {
			return fmt.Errorf("%w: append to %s: %v", ErrPoison, s.cfg.Table, err)
		}
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("send %s: %w", s.cfg.Table, err)
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

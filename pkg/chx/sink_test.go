package chx_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/testkit"
)

const (
	sinkStream  = "SINKTEST"
	sinkSubject = "sinktest.rec"
	sinkTable   = "recs"
	sinkDurable = "sinktest-recs"
	// waitLimit bounds every blocking wait.
	waitLimit = testkit.Limit
)

// record is what the test publishes; project turns it into one row.
type record struct {
	ID string `json:"id"`
	N  uint64 `json:"n"`
	// BadColumn asks project for a row the table rejects (a string in a
	// UInt64 column), a projection bug rather than an undecodable message.
	BadColumn bool `json:"badColumn,omitempty"`
	// ShortRow asks project for a row missing a column: a writer that
	// drifted from its table's declaration.
	ShortRow bool `json:"shortRow,omitempty"`
}

// recs declares the test's table as pkg/readmodel declares Vigil's.
var recs = readmodel.Table{Name: sinkTable, Owner: "sinktest", Columns: []string{"id", "n"}}

func project(m jetstream.Msg) (chx.Rows, error) {
	var r record
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		return nil, fmt.Errorf("%w: %v", chx.ErrPoison, err)
	}
	if r.ID == "" {
		return nil, fmt.Errorf("%w: no id", chx.ErrPoison)
	}
	if r.BadColumn {
		return chx.Rows{{r.ID, "not a number"}}, nil
	}
	if r.ShortRow {
		return chx.Rows{{r.ID}}, nil
	}
	return chx.Rows{{r.ID, r.N}}, nil
}

// sinkEnv is one test's JetStream, ClickHouse database, stream and table.
type sinkEnv struct {
	t    testing.TB
	ctx  context.Context
	nats *natstest.Env
	db   *chtest.DB
}

// newSinkEnv creates the stream and the table; extra columns are appended
// to (id String, n UInt64).
func newSinkEnv(t testing.TB, engine string, extra ...string) *sinkEnv {
	t.Helper()
	e := &sinkEnv{t: t, ctx: testCtx(t), nats: natstest.Start(t), db: chtest.New(t)}
	if err := natsx.EnsureStreams(e.ctx, e.nats.JS, jetstream.StreamConfig{
		Name: sinkStream, Subjects: []string{"sinktest.>"}, Storage: jetstream.MemoryStorage,
	}); err != nil {
		t.Fatal(err)
	}
	cols := strings.Join(append([]string{"id String", "n UInt64"}, extra...), ", ")
	ddl := fmt.Sprintf("CREATE TABLE %s (%s) ENGINE = %s ORDER BY id", sinkTable, cols, engine)
	if err := e.db.Conn.Exec(e.ctx, ddl); err != nil {
		t.Fatalf("create table: %v", err)
	}
	return e
}

// consumer creates (or, on a second call, binds to) the durable consumer
// a sink projects.
func (e *sinkEnv) consumer(mods ...func(*jetstream.ConsumerConfig)) jetstream.Consumer {
	e.t.Helper()
	cfg := jetstream.ConsumerConfig{
		Durable:       sinkDurable,
		AckPolicy:     jetstream.AckExplicitPolicy,
		MaxDeliver:    -1,
		FilterSubject: "sinktest.>",
	}
	for _, m := range mods {
		m(&cfg)
	}
	cons, err := e.nats.JS.CreateOrUpdateConsumer(e.ctx, sinkStream, cfg)
	if err != nil {
		e.t.Fatalf("consumer: %v", err)
	}
	return cons
}

func (e *sinkEnv) publish(from, to int) {
	e.t.Helper()
	for i := from; i < to; i++ {
		e.publishRaw(mustJSON(e.t, record{ID: fmt.Sprintf("rec-%05d", i), N: uint64(i)}))
	}
}

func (e *sinkEnv) publishRaw(data []byte) {
	e.t.Helper()
	if _, err := e.nats.JS.Publish(e.ctx, sinkSubject, data); err != nil {
		e.t.Fatalf("publish: %v", err)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// count runs a single-number query against the test database.
func (e *sinkEnv) count(query string) uint64 {
	e.t.Helper()
	var n uint64
	if err := e.db.Conn.QueryRow(e.ctx, query).Scan(&n); err != nil {
		e.t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (e *sinkEnv) rows() uint64 { return e.count("SELECT count() FROM " + sinkTable) }

func (e *sinkEnv) info(cons jetstream.Consumer) *jetstream.ConsumerInfo {
	e.t.Helper()
	info, err := cons.Info(e.ctx)
	if err != nil {
		e.t.Fatalf("consumer info: %v", err)
	}
	return info
}

// waitAllAcked waits until the consumer has nothing pending or awaiting
// an ack.
func (e *sinkEnv) waitAllAcked(cons jetstream.Consumer) {
	e.t.Helper()
	testkit.Eventually(e.t, "every message acked", func() (bool, string) {
		i := e.info(cons)
		return i.NumAckPending == 0 && i.NumPending == 0,
			fmt.Sprintf("ack pending %d, pending %d, ack floor %d", i.NumAckPending, i.NumPending, i.AckFloor.Stream)
	})
}

func (e *sinkEnv) waitRows(want uint64) {
	e.t.Helper()
	testkit.Eventually(e.t, fmt.Sprintf("%d rows", want), func() (bool, string) {
		n := e.rows()
		if n > want {
			e.t.Fatalf("%d rows, more than the %d expected", n, want)
		}
		return n == want, fmt.Sprintf("%d rows", n)
	})
}

type runningSink struct {
	t      testing.TB
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan error
}

// startSink runs a new sink (as a fresh process would: its own registry)
// on cons until stop or the end of the test.
func (e *sinkEnv) startSink(conn driver.Conn, cons jetstream.Consumer, mod func(*chx.SinkConfig)) *runningSink {
	e.t.Helper()
	cfg := chx.SinkConfig{
		Name:    sinkDurable,
		Table:   recs,
		Project: project,
		MaxRows: 10,
		Linger:  20 * time.Millisecond,
	}
	if mod != nil {
		mod(&cfg)
	}
	reg := prometheus.NewRegistry()
	s, err := chx.NewSink(cfg, conn, slog.New(slog.DiscardHandler), reg)
	if err != nil {
		e.t.Fatalf("NewSink: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &runningSink{t: e.t, reg: reg, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx, cons) }()
	e.t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitLimit):
		}
	})
	return r
}

// stop cancels the sink and waits for Run to return.
func (r *runningSink) stop() {
	r.t.Helper()
	r.cancel()
	select {
	case err := <-r.done:
		if err != nil {
			r.t.Fatalf("Run returned %v after cancel, want nil", err)
		}
		r.done <- nil // keep the cleanup from waiting
	case <-time.After(waitLimit):
		r.t.Fatal("Run did not return after its context was cancelled")
	}
}

// metric returns the value of a counter or gauge on the sink's registry whose
// labels include want (0 if it has not been observed).
func (r *runningSink) metric(name string, want map[string]string) float64 {
	r.t.Helper()
	mfs, err := r.reg.Gather()
	if err != nil {
		r.t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, l := range m.GetLabel() {
				have[l.GetName()] = l.GetValue()
			}
			for k, v := range want {
				if have[k] != v {
					continue next
				}
			}
			sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	return sum
}

func TestSinkAcksOnlyAfterInsert(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	const n = 500
	e.publish(0, n)
	cons := e.consumer()
	r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) { c.MaxRows = 7 })

	// While the sink works, every sample must show at least as many rows
	// as messages acked: the ack floor is read first, the rows after.
	testkit.Eventually(t, fmt.Sprintf("%d rows", n), func() (bool, string) {
		acked := e.info(cons).AckFloor.Stream
		rows := e.rows()
		if rows < acked {
			t.Fatalf("%d messages acked but only %d rows in ClickHouse", acked, rows)
		}
		return rows == n, fmt.Sprintf("%d rows, ack floor %d", rows, acked)
	})
	e.waitAllAcked(cons)
	if got := e.count("SELECT uniqExact(id) FROM " + sinkTable); got != n {
		t.Fatalf("%d distinct ids, want %d", got, n)
	}
	if got := e.count("SELECT sum(n) FROM " + sinkTable); got != n*(n-1)/2 {
		t.Fatalf("sum(n) = %d, want %d: values were not written as projected", got, n*(n-1)/2)
	}
	if got := r.metric("vigil_sink_rows_total", nil); got != n {
		t.Fatalf("vigil_sink_rows_total = %v, want %d", got, n)
	}
	if i := e.info(cons); i.NumRedelivered != 0 {
		t.Fatalf("%d messages redelivered", i.NumRedelivered)
	}
	r.stop()
}

func TestSinkFlushTriggers(t *testing.T) {
	tests := []struct {
		name    string
		maxRows int
		linger  time.Duration
		msgs    int
		// wantOKFlushes, when set, is the exact number of successful batch
		// inserts.
		wantOKFlushes float64
	}{
		// The linger is far longer than the test may run, so only the size
		// threshold can flush: n/maxRows full batches.
		{name: "by size", maxRows: 5, linger: time.Hour, msgs: 20, wantOKFlushes: 4},
		// The size threshold is never reached, so only the linger can.
		{name: "by linger", maxRows: 100000, linger: 50 * time.Millisecond, msgs: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSinkEnv(t, "MergeTree()")
			cons := e.consumer()
			r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) {
				c.MaxRows, c.Linger = tt.maxRows, tt.linger
			})
			e.publish(0, tt.msgs)
			e.waitRows(uint64(tt.msgs))
			e.waitAllAcked(cons)
			ok := r.metric("vigil_sink_flushes_total", map[string]string{"result": "ok"})
			if tt.wantOKFlushes > 0 && ok != tt.wantOKFlushes {
				t.Errorf("%v successful flushes, want %v", ok, tt.wantOKFlushes)
			}
			if ok < 1 {
				t.Errorf("flushes_total{result=ok} = %v", ok)
			}
			r.stop()
		})
	}
}

func TestSinkPoisonMessages(t *testing.T) {
	tests := []struct {
		name  string
		extra []string // extra table columns
		// poison messages, interleaved with good ones in one batch.
		poison [][]byte
		// reason is part of every termination reason: what rejected it.
		reason string
	}{
		{
			name:   "undecodable",
			poison: [][]byte{[]byte("not json"), []byte(`{"id":`), []byte(`{"n":3}`), {0xff, 0xfe}},
			reason: "poison message",
		},
		{
			// The driver refuses to append the row (a string in a UInt64
			// column): the failing row names its message.
			name: "row rejected by the driver",
			poison: [][]byte{
				[]byte(`{"id":"bad-1","badColumn":true}`),
				[]byte(`{"id":"bad-2","badColumn":true}`),
			},
			reason: "append to recs",
		},
		{
			// The projection drifted from the declaration (a row one
			// value short): the sink says so before ClickHouse sees it.
			name: "row that does not match the declaration",
			poison: [][]byte{
				[]byte(`{"id":"bad-1","shortRow":true}`),
			},
			reason: "a row of recs has 1 values, the table declares 2 columns",
		},
		{
			// The server refuses the whole block (the column default
			// throws for one row): the sink must bisect to find it.
			name:  "row rejected by the server",
			extra: []string{"checked UInt8 DEFAULT throwIf(n >= 1000000)"},
			poison: [][]byte{
				[]byte(`{"id":"bad-1","n":1000001}`),
				[]byte(`{"id":"bad-2","n":1000002}`),
				[]byte(`{"id":"bad-3","n":1000003}`),
			},
			reason: "code: 395",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newSinkEnv(t, "MergeTree()", tt.extra...)
			terminated, err := e.nats.Conn.SubscribeSync("$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED." + sinkStream + "." + sinkDurable)
			if err != nil {
				t.Fatal(err)
			}
			cons := e.consumer()
			// Interleave: good, poison, good, poison, ..., good.
			good := 0
			for _, p := range tt.poison {
				e.publish(good, good+7)
				good += 7
				e.publishRaw(p)
			}
			e.publish(good, good+7)
			good += 7

			r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) {
				// One batch holds every message, good and poison.
				c.MaxRows, c.Linger = good+len(tt.poison), time.Hour
			})
			e.waitRows(uint64(good))
			e.waitAllAcked(cons)
			// Every message is settled, so the counts are final.
			if v := r.metric("vigil_sink_dead_letters_total", nil); v != float64(len(tt.poison)) {
				t.Fatalf("vigil_sink_dead_letters_total = %v, want %d", v, len(tt.poison))
			}
			if v := r.metric("vigil_sink_rows_total", nil); v != float64(good) {
				t.Fatalf("vigil_sink_rows_total = %v, want %d", v, good)
			}
			if i := e.info(cons); i.NumRedelivered != 0 {
				t.Fatalf("%d messages redelivered", i.NumRedelivered)
			}
			// Each poison message was terminated, with what rejected it as
			// the reason, not acked as if written.
			for i := range tt.poison {
				m, err := terminated.NextMsg(waitLimit)
				if err != nil {
					t.Fatalf("termination advisory %d of %d: %v", i+1, len(tt.poison), err)
				}
				var adv struct {
					Reason string `json:"reason"`
				}
				if err := json.Unmarshal(m.Data, &adv); err != nil {
					t.Fatal(err)
				}
				if !strings.Contains(adv.Reason, tt.reason) {
					t.Errorf("termination reason %q does not name %q", adv.Reason, tt.reason)
				}
			}
			if got := e.count("SELECT count() FROM " + sinkTable + " WHERE id LIKE 'bad-%'"); got != 0 {
				t.Fatalf("%d rejected rows written", got)
			}
			r.stop()
		})
	}
}

// proxiedConn opens a connection to the test database through a proxy
// that the test can take down.
func (e *sinkEnv) proxiedConn() (driver.Conn, *tcpProxy) {
	e.t.Helper()
	u, err := url.Parse(chtest.DSN())
	if err != nil {
		e.t.Fatal(err)
	}
	p := startProxy(e.t, u.Host)
	pu := *u
	pu.Host = p.Addr()
	pu.Path = "/" + e.db.Name
	q := pu.Query()
	q.Set("dial_timeout", "1s")
	pu.RawQuery = q.Encode()
	conn, err := chx.Open(e.ctx, pu.String())
	if err != nil {
		e.t.Fatalf("open through proxy: %v", err)
	}
	e.t.Cleanup(func() { _ = conn.Close() })
	return conn, p
}

// An outage longer than the consumer's AckWait, with a backlog several
// batches deep behind the batch being retried: every message the sink
// holds must be kept alive, none redelivered, none written twice.
func TestSinkClickHouseOutage(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()") // MergeTree keeps duplicates visible
	conn, proxy := e.proxiedConn()
	const ackWait = time.Second
	cons := e.consumer(func(c *jetstream.ConsumerConfig) { c.AckWait = ackWait })
	r := e.startSink(conn, cons, nil) // batches of 10

	const before, after = 20, 120
	e.publish(0, before)
	e.waitRows(before)
	e.waitAllAcked(cons)
	floor := e.info(cons).AckFloor.Stream

	proxy.Stop()
	down := time.Now()
	e.publish(before, after)
	// The outage lasts until every message delivered during it has been
	// kept alive several times, which is longer than AckWait.
	const held = after - before
	testkit.Eventually(t, "an outage longer than AckWait", func() (bool, string) {
		k := r.metric("vigil_sink_keepalives_total", nil)
		return k >= 6*held && time.Since(down) > 2*ackWait, fmt.Sprintf("%v keep-alives after %s", k, time.Since(down))
	})
	i := e.info(cons)
	if i.NumAckPending != held || i.NumPending != 0 {
		t.Fatalf("ack pending %d, pending %d during the outage, want every message (%d) delivered and held", i.NumAckPending, i.NumPending, held)
	}
	if i.NumRedelivered != 0 {
		t.Fatalf("%d messages redelivered during the outage", i.NumRedelivered)
	}
	if i.AckFloor.Stream != floor {
		t.Fatalf("ack floor moved from %d to %d while ClickHouse was unreachable", floor, i.AckFloor.Stream)
	}
	if got := e.rows(); got != before {
		t.Fatalf("%d rows during the outage, want %d", got, before)
	}
	if v := r.metric("vigil_sink_flushes_total", map[string]string{"result": "error"}); v < 1 {
		t.Fatalf("flushes_total{result=error} = %v during the outage", v)
	}
	// The backlog the alerts watch: every message held, none left in the
	// stream undelivered.
	if v := r.metric("vigil_sink_held_messages", nil); v != held {
		t.Fatalf("vigil_sink_held_messages = %v during the outage, want %d", v, held)
	}
	if n := testutil.CollectAndCount(r.reg, "vigil_consumer_pending_messages"); n != 1 {
		t.Fatalf("%d vigil_consumer_pending_messages series, want the sink's consumer's", n)
	}
	if v := r.metric("vigil_consumer_pending_messages", map[string]string{"consumer": sinkDurable}); v != 0 {
		t.Fatalf("vigil_consumer_pending_messages = %v, want 0: everything was delivered", v)
	}

	proxy.Start()
	e.waitRows(after)
	e.waitAllAcked(cons)
	if i := e.info(cons); i.NumRedelivered != 0 {
		t.Fatalf("%d messages redelivered", i.NumRedelivered)
	}
	if got := e.count("SELECT uniqExact(id) FROM " + sinkTable); got != after {
		t.Fatalf("%d distinct ids, want %d", got, after)
	}
	if got := e.rows(); got != after {
		t.Fatalf("%d rows, want exactly %d (no duplicates)", got, after)
	}
	if v := r.metric("vigil_sink_held_messages", nil); v != 0 {
		t.Fatalf("vigil_sink_held_messages = %v after the outage, want 0", v)
	}
	r.stop()
}

// A sink that dies holding messages (no ack, no nak: its connections are
// gone) leaves them to JetStream's redelivery, which comes after the
// consumer's AckWait: sinks' consumers use chx.AckWait, which is seconds.
func TestSinkCrashRedeliversAfterShortAckWait(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	cons := e.consumer(func(c *jetstream.ConsumerConfig) { *c = chx.ConsumerConfig(c.Durable, "test", c.FilterSubject, 1000) })
	if got := e.info(cons).Config.AckWait; got != chx.AckWait || got > 5*time.Second {
		t.Fatalf("sink consumer AckWait %s, want chx.AckWait (%s, at most 5s)", got, chx.AckWait)
	}

	// The first sink runs on its own NATS connection and reaches
	// ClickHouse only through a proxy, so the test can take both away.
	nc, js := e.nats.ConnectAs(t, natsauth.Admin)
	crashCons, err := js.Consumer(e.ctx, sinkStream, sinkDurable)
	if err != nil {
		t.Fatal(err)
	}
	conn, proxy := e.proxiedConn()
	const n = 30
	proxy.Stop()
	r1 := e.startSink(conn, crashCons, func(c *chx.SinkConfig) { c.ShutdownTimeout = 100 * time.Millisecond })
	e.publish(0, n)
	testkit.Eventually(t, "the first sink to hold every message", func() (bool, string) {
		i := e.info(cons)
		return i.NumAckPending == n && i.NumPending == 0, fmt.Sprintf("ack pending %d, pending %d", i.NumAckPending, i.NumPending)
	})
	// The crash: the process's connections vanish; it acks and naks
	// nothing on its way out.
	nc.Close()
	r1.stop()

	bound, err := e.nats.JS.Consumer(e.ctx, sinkStream, sinkDurable) // as configured, not updated
	if err != nil {
		t.Fatal(err)
	}
	r2 := e.startSink(e.db.Conn, bound, nil)
	e.waitRows(n)
	e.waitAllAcked(cons)
	if got := e.rows(); got != n {
		t.Fatalf("%d rows, want exactly %d", got, n)
	}
	r2.stop()
}

// TestSinkMinInterval: after an insert, a batch that is not full waits
// for MinInterval however short Linger is; a full batch does not wait;
// the first message after a quiet start goes after Linger; shutdown
// flushes what waits.
func TestSinkMinInterval(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	cons := e.consumer()
	r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) {
		c.MaxRows, c.Linger, c.MinInterval = 10, time.Millisecond, time.Hour
	})
	e.publish(0, 1)
	e.waitRows(1) // no insert yet: Linger alone
	e.waitAllAcked(cons)

	e.publish(1, 5)
	testkit.Eventually(t, "messages buffered in the sink", func() (bool, string) {
		i := e.info(cons)
		return i.NumAckPending == 4 && i.NumPending == 0, fmt.Sprintf("ack pending %d, pending %d", i.NumAckPending, i.NumPending)
	})
	// Many times Linger: only MinInterval holds them back. (This can only
	// pass wrongly, if the sink were slow, never fail wrongly.)
	time.Sleep(100 * time.Millisecond)
	if got := e.rows(); got != 1 {
		t.Fatalf("%d rows before MinInterval passed, want 1", got)
	}

	e.publish(5, 14) // 13 buffered: one full batch of 10 goes at once
	e.waitRows(11)
	if got := r.metric("vigil_sink_flushes_total", map[string]string{"result": "ok"}); got != 2 {
		t.Errorf("%v successful flushes, want 2", got)
	}
	r.stop()
	if got := e.rows(); got != 14 {
		t.Fatalf("%d rows after shutdown, want 14", got)
	}
	e.waitAllAcked(cons)
}

func TestSinkShutdownFlushesBuffer(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	cons := e.consumer()
	r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) {
		c.MaxRows, c.Linger = 1000, time.Hour
	})
	const n = 15
	e.publish(0, n)
	// Every message is delivered to the sink and buffered: none acked,
	// none written.
	testkit.Eventually(t, "messages buffered in the sink", func() (bool, string) {
		i := e.info(cons)
		return i.NumAckPending == n && i.NumPending == 0, fmt.Sprintf("ack pending %d, pending %d", i.NumAckPending, i.NumPending)
	})
	if got := e.rows(); got != 0 {
		t.Fatalf("%d rows written before any flush trigger", got)
	}
	r.stop()
	// Run returned, so the flush and the acks were sent before it did.
	if got := e.rows(); got != n {
		t.Fatalf("%d rows after shutdown, want %d", got, n)
	}
	e.waitAllAcked(cons)
}

func TestSinkShutdownDuringOutageReturnsMessages(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	conn, proxy := e.proxiedConn()
	// An ack wait far longer than the test: messages can only come back
	// quickly if the stopping sink naks them.
	longAckWait := func(c *jetstream.ConsumerConfig) { c.AckWait = 10 * time.Minute }
	cons := e.consumer(longAckWait)
	r := e.startSink(conn, cons, func(c *chx.SinkConfig) { c.ShutdownTimeout = 300 * time.Millisecond })

	proxy.Stop()
	const n = 25
	e.publish(0, n)
	testkit.Eventually(t, "failed inserts", func() (bool, string) {
		v := r.metric("vigil_sink_flushes_total", map[string]string{"result": "error"})
		return v >= 2, fmt.Sprintf("flushes_total{result=error} = %v", v)
	})
	r.stop() // must return although ClickHouse is unreachable
	if got := e.rows(); got != 0 {
		t.Fatalf("%d rows written while ClickHouse was unreachable", got)
	}

	proxy.Start()
	r2 := e.startSink(conn, e.consumer(longAckWait), nil)
	e.waitRows(n)
	e.waitAllAcked(cons)
	r2.stop()
}

func TestSinkRestartExactlyOnce(t *testing.T) {
	e := newSinkEnv(t, "ReplacingMergeTree()")
	cons := e.consumer()
	mod := func(c *chx.SinkConfig) { c.MaxRows, c.Linger = 5, 10*time.Millisecond }

	const first, total = 300, 400
	e.publish(0, first)
	r1 := e.startSink(e.db.Conn, cons, mod)
	testkit.Eventually(t, "the first sink to write some rows", func() (bool, string) {
		n := e.rows()
		return n >= 10, fmt.Sprintf("%d rows", n)
	})
	r1.stop()
	stoppedAt := e.rows()
	t.Logf("first sink stopped after %d of %d rows", stoppedAt, first)
	// Whatever the first sink wrote it acked before returning.
	if i := e.info(cons); i.AckFloor.Stream > stoppedAt {
		t.Fatalf("ack floor %d beyond the %d rows written", i.AckFloor.Stream, stoppedAt)
	}

	// More arrive while no sink runs.
	e.publish(first, total)
	r2 := e.startSink(e.db.Conn, e.consumer(), mod)
	testkit.Eventually(t, fmt.Sprintf("%d distinct ids", total), func() (bool, string) {
		n := e.count("SELECT count(DISTINCT id) FROM " + sinkTable)
		return n == total, fmt.Sprintf("%d distinct ids", n)
	})
	e.waitAllAcked(cons)
	if got := e.count("SELECT count() FROM " + sinkTable + " FINAL"); got != total {
		t.Fatalf("count() FINAL = %d, want %d", got, total)
	}
	if got := e.count("SELECT count(DISTINCT id) FROM " + sinkTable); got != total {
		t.Fatalf("count(DISTINCT id) = %d, want %d", got, total)
	}
	// A graceful stop leaves nothing for redelivery, so no row was
	// written twice either.
	if got := e.rows(); got != total {
		t.Fatalf("count() = %d, want %d (rows written twice)", got, total)
	}
	r2.stop()
}

func TestSinkConfigValidate(t *testing.T) {
	valid := chx.SinkConfig{Name: "s", Table: readmodel.Table{Name: "t", Columns: []string{"a"}}, Project: project, MaxRows: 1, Linger: time.Millisecond}
	tests := []struct {
		name   string
		mod    func(*chx.SinkConfig)
		wantIn string
	}{
		{"valid", func(*chx.SinkConfig) {}, ""},
		{"no name", func(c *chx.SinkConfig) { c.Name = "" }, "Name"},
		{"no table", func(c *chx.SinkConfig) { c.Table.Name = "" }, "Table"},
		{"no columns", func(c *chx.SinkConfig) { c.Table.Columns = nil }, "Columns"},
		{"no project", func(c *chx.SinkConfig) { c.Project = nil }, "Project"},
		{"zero max rows", func(c *chx.SinkConfig) { c.MaxRows = 0 }, "MaxRows"},
		{"negative linger", func(c *chx.SinkConfig) { c.Linger = -time.Second }, "Linger"},
		{"negative min interval", func(c *chx.SinkConfig) { c.MinInterval = -time.Second }, "MinInterval"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := valid
			tt.mod(&c)
			err := c.Validate()
			if tt.wantIn == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantIn) {
				t.Fatalf("Validate = %v, want an error naming %s", err, tt.wantIn)
			}
			if _, err := chx.NewSink(c, nil, slog.New(slog.DiscardHandler), prometheus.NewRegistry()); err == nil {
				t.Fatal("NewSink accepted an invalid config")
			}
		})
	}
}

func TestNewSinkRejectsDuplicateMetrics(t *testing.T) {
	db := chtest.New(t)
	reg := prometheus.NewRegistry()
	cfg := chx.SinkConfig{Name: "dup", Table: readmodel.Table{Name: "t", Columns: []string{"a"}}, Project: project, MaxRows: 1, Linger: time.Millisecond}
	if _, err := chx.NewSink(cfg, db.Conn, slog.New(slog.DiscardHandler), reg); err != nil {
		t.Fatal(err)
	}
	_, err := chx.NewSink(cfg, db.Conn, slog.New(slog.DiscardHandler), reg)
	var already prometheus.AlreadyRegisteredError
	if !errors.As(err, &already) {
		t.Fatalf("second sink with the same name: %v, want AlreadyRegisteredError", err)
	}
}

// recordingConn is the real connection, noting the context of every batch.
type recordingConn struct {
	driver.Conn
	mu   sync.Mutex
	ctxs []context.Context
}

func (c *recordingConn) PrepareBatch(ctx context.Context, query string, opts ...driver.PrepareBatchOption) (driver.Batch, error) {
	c.mu.Lock()
	c.ctxs = append(c.ctxs, ctx)
	c.mu.Unlock()
	return c.Conn.PrepareBatch(ctx, query, opts...)
}

// clickhouse-go watches a batch's context in a goroutine during Send and
// closes the connection when it ends. If the context ends just after Send
// returned, that goroutine can still fire and close a connection already
// back in the pool, breaking the next query on it or making a committed
// insert report an error (and be written twice on retry). The sink must
// therefore never end a batch's context once the insert is done, neither
// on its way out nor when Run's context ends later.
func TestSinkLeavesBatchContextsAliveAfterInsert(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	conn := &recordingConn{Conn: e.db.Conn}
	cons := e.consumer()
	r := e.startSink(conn, cons, func(c *chx.SinkConfig) { c.MaxRows, c.Linger = 5, time.Hour })
	e.publish(0, 12)
	e.waitRows(10) // two full batches
	testkit.Eventually(t, "the rest buffered", func() (bool, string) {
		i := e.info(cons)
		return i.NumAckPending == 2, fmt.Sprintf("ack pending %d", i.NumAckPending)
	})
	r.stop() // the shutdown flush writes the rest
	if got := e.rows(); got != 12 {
		t.Fatalf("%d rows, want 12", got)
	}
	conn.mu.Lock()
	defer conn.mu.Unlock()
	if len(conn.ctxs) != 3 {
		t.Fatalf("%d batches, want 3", len(conn.ctxs))
	}
	for i, ctx := range conn.ctxs {
		if ctx.Err() != nil {
			t.Errorf("batch %d: its context ended after the insert (%v)", i+1, context.Cause(ctx))
		}
	}
}

// TestSinkRecordsMessageAges: every written message is observed once at
// each stage of vigil_sink_message_age_seconds, and a message's age only
// grows from one stage to the next.
func TestSinkRecordsMessageAges(t *testing.T) {
	e := newSinkEnv(t, "MergeTree()")
	const n = 60
	e.publish(0, n)
	cons := e.consumer()
	r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) { c.MaxRows = 7 })
	e.waitRows(n)
	e.waitAllAcked(cons)
	r.stop()

	mfs, err := r.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	count, sum := map[string]uint64{}, map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "vigil_sink_message_age_seconds" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "stage" {
					count[l.GetValue()] = m.GetHistogram().GetSampleCount()
					sum[l.GetValue()] = m.GetHistogram().GetSampleSum()
				}
			}
		}
	}
	stages := []string{"taken", "inserting", "written"}
	for i, st := range stages {
		if count[st] != n {
			t.Errorf("stage %s observed %d messages, want %d", st, count[st], n)
		}
		if i > 0 && sum[st] < sum[stages[i-1]] {
			t.Errorf("summed age at %s %.6fs < at %s %.6fs", st, sum[st], stages[i-1], sum[stages[i-1]])
		}
	}
}

package chx_test

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
)

// BenchmarkSink measures the projection path end to end: b.N messages
// already on the stream, drained by a sink with the production flush
// settings (5,000 rows or 200 ms) into ClickHouse and acked. One op is one
// message; run it with a fixed count (-benchtime=100000x) so the 20 ms
// poll for the last ack is noise.
func BenchmarkSink(b *testing.B) {
	e := newSinkEnv(b, "MergeTree()")
	e.publish(0, b.N)
	// As the services configure it: MaxAckPending 4 × the batch.
	cons := e.consumer(func(c *jetstream.ConsumerConfig) {
		*c = chx.ConsumerConfig(c.Durable, "bench", c.FilterSubject, 20000)
	})
	b.ResetTimer()
	start := time.Now()
	r := e.startSink(e.db.Conn, cons, func(c *chx.SinkConfig) { c.MaxRows, c.Linger = 5000, 200*time.Millisecond })
	e.waitAllAcked(cons)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "msgs/s")
	if got := e.rows(); got != uint64(b.N) {
		b.Fatalf("%d rows, want %d", got, b.N)
	}
	r.stop()
}

package natsx_test

import (
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
)

// TestPending: the gauge reads the consumer's lag as each delivery
// reports it, and a second registration of the same consumer shares the
// gauge instead of failing.
func TestPending(t *testing.T) {
	env := natstest.Start(t)
	ctx := testCtx(t)
	if err := natsx.EnsureStreams(ctx, env.JS, jetstream.StreamConfig{Name: "LAG", Subjects: []string{"lag.>"}}); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, err := env.JS.Publish(ctx, fmt.Sprintf("lag.%d", i), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	cons, err := env.JS.CreateOrUpdateConsumer(ctx, "LAG", jetstream.ConsumerConfig{Durable: "lagger", AckPolicy: jetstream.AckExplicitPolicy})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	p, err := natsx.NewPending(reg, "lagger")
	if err != nil {
		t.Fatal(err)
	}
	again, err := natsx.NewPending(reg, "lagger")
	if err != nil {
		t.Fatalf("second registration: %v", err)
	}
	for _, tt := range []struct {
		fetch int
		p     natsx.Pending
		want  float64
	}{{1, p, 4}, {3, again, 1}, {1, p, 0}} {
		batch, err := cons.Fetch(tt.fetch)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			tt.p.Observe(m)
			_ = m.Ack()
		}
		if got := testutil.ToFloat64(p.Gauge()); got != tt.want {
			t.Errorf("after %d more: %s = %v, want %v", tt.fetch, natsx.PendingMetric, got, tt.want)
		}
	}
	if n := testutil.CollectAndCount(reg, natsx.PendingMetric); n != 1 {
		t.Errorf("%d series, want 1", n)
	}
}

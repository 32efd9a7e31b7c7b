package notifier_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier"
)

// countingReceiver is a loopback target that counts deliveries and keeps
// each one's signal → arrival latency.
type countingReceiver struct {
	*httptest.Server
	n    atomic.Int64
	mu   sync.Mutex
	lats []time.Duration
}

func newCountingReceiver(b *testing.B) *countingReceiver {
	c := &countingReceiver{}
	c.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		var s struct {
			Timestamp time.Time `json:"timestamp"`
		}
		if json.Unmarshal(body, &s) == nil {
			c.mu.Lock()
			c.lats = append(c.lats, now.Sub(s.Timestamp))
			c.mu.Unlock()
		}
		c.n.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(c.Close)
	return c
}

func (c *countingReceiver) waitFor(b *testing.B, n int64) {
	deadline := time.Now().Add(5 * time.Minute)
	for c.n.Load() < n {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d deliveries arrived", c.n.Load(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func decisionMsg(i int, at time.Time) *nats.Msg {
	data, _ := json.Marshal(policy.DecisionRecord{
		ID: fmt.Sprintf("dec_bench_%d_%d", at.UnixNano(), i), Tenant: "acme", AgentID: "agent-1", Source: policy.SourceDecision,
		Input:    policy.Input{Action: policy.Action{Kind: "tool_call", Tool: "shell"}},
		Decision: policy.Decision{Outcome: policy.Block, ReasonCodes: []string{"BENCH"}}, At: at,
	})
	return &nats.Msg{Subject: streams.DecisionSubject("acme", "agent-1", "block"), Data: data}
}

func benchEnv(b *testing.B, channels int) (*env, *countingReceiver) {
	e := newEnv(b, benchConfig)
	rc := newCountingReceiver(b)
	for range channels {
		e.createChannel("acme", map[string]any{"url": rc.URL, "signals": []string{"verdict.block"}})
	}
	return e, rc
}

// benchConfig is set by experiments; nil keeps the defaults.
var benchConfig func(*notifier.Config)

func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// BenchmarkFanOut10 publishes b.N block decisions as fast as JetStream
// takes them and waits until all b.N × 10 signed webhook deliveries have
// reached a loopback receiver: the notifier's saturated throughput.
func BenchmarkFanOut10(b *testing.B) {
	e, rc := benchEnv(b, 10)
	ctx := context.Background()
	b.ResetTimer()
	start := time.Now()
	futures := make([]jetstream.PubAckFuture, 0, b.N)
	for i := range b.N {
		f, err := e.js.PublishMsgAsync(decisionMsg(i, time.Now().UTC()))
		if err != nil {
			b.Fatal(err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
		case err := <-f.Err():
			b.Fatal(err)
		case <-ctx.Done():
		}
	}
	rc.waitFor(b, int64(b.N)*10)
	el := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "signals/s")
	b.ReportMetric(float64(b.N)*10/el.Seconds(), "deliveries/s")
}

// BenchmarkSignalToFirstAttempt publishes block decisions open-loop at a
// steady 50 signals/s (500 deliveries/s over 10 channels) and reports the
// latency from the decision's timestamp to the first attempt arriving at
// the receiver.
func BenchmarkSignalToFirstAttempt(b *testing.B) {
	e, rc := benchEnv(b, 10)
	ctx := context.Background()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	b.ResetTimer()
	for i := range b.N {
		<-tick.C
		if _, err := e.js.PublishMsg(ctx, decisionMsg(i, time.Now().UTC())); err != nil {
			b.Fatal(err)
		}
	}
	rc.waitFor(b, int64(b.N)*10)
	b.StopTimer()
	rc.mu.Lock()
	defer rc.mu.Unlock()
	b.ReportMetric(float64(percentile(rc.lats, 0.50).Microseconds())/1000, "p50_ms")
	b.ReportMetric(float64(percentile(rc.lats, 0.99).Microseconds())/1000, "p99_ms")
	b.ReportMetric(float64(percentile(rc.lats, 1).Microseconds())/1000, "max_ms")
}

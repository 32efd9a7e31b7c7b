package main

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/telemetry/otlptest"
	"github.com/vigilhq/vigil/services/api"
)

// BenchmarkDecisionTracing measures POST /v1/decisions.evaluate (a pack of
// 100 rules, one client, sequential) on three stacks that differ only in
// tracing: off (no endpoint: the no-op provider), on and sampling every
// trace (exported to an in-process OTLP receiver on this machine), and on
// sampling none (--otel-sample-ratio 0). The requests go round-robin
// over the three, so each mode sees the same machine load; the reported
// figures are each mode's median latency and the ratios to off.
func BenchmarkDecisionTracing(b *testing.B) {
	recv := otlptest.Start(b)
	modes := []struct {
		name     string
		endpoint string
		ratio    float64
	}{{"off", "", 1}, {"sampled", recv.URL, 1}, {"unsampled", recv.URL, 0}}
	type target struct{ base, key string }
	targets := make([]target, len(modes))
	for i, m := range modes {
		tr, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: m.endpoint, SampleRatio: m.ratio, Service: "vigil-bench"}, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
		srv := stacktest.Start(b, stacktest.Options{DSN: chtest.New(b).DSN, Tracer: tr.Provider, Log: slog.New(slog.DiscardHandler),
			API: func(c *api.Config) { unlimited(c) }})
		targets[i] = target{srv.URL, srv.BootstrapKey}
		registerAgents(b, srv.Store, "default", "bench-bot")
		r, err := send(srv.URL, req{method: http.MethodPost, path: "/v1/policies", key: srv.BootstrapKey, body: benchPolicy(100),
			header: map[string]string{"Content-Type": "application/yaml"}})
		if err != nil || r.status != http.StatusCreated {
			b.Fatalf("policy: %v %s", err, r)
		}
	}
	body := `{"agentId":"bench-bot","action":"tool_7","context":{"amount":500}}`
	decide := func(t target) time.Duration {
		start := time.Now()
		r, err := send(t.base, req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: t.key, body: body})
		if err != nil || r.status != http.StatusOK {
			b.Fatalf("evaluate: %v %s", err, r)
		}
		return time.Since(start)
	}
	for range 50 { // warm up every stack
		for _, t := range targets {
			decide(t)
		}
	}
	took := make([][]time.Duration, len(modes))
	b.ResetTimer()
	i := 0
	for b.Loop() {
		m := i % len(modes)
		took[m] = append(took[m], decide(targets[m]))
		i++
	}
	b.StopTimer()
	median := func(d []time.Duration) float64 {
		if len(d) == 0 {
			return 0
		}
		slices.Sort(d)
		return float64(d[len(d)/2].Microseconds())
	}
	off := median(took[0])
	for m, mode := range modes {
		b.ReportMetric(median(took[m]), mode.name+"-p50-µs")
		if m > 0 && off > 0 {
			b.ReportMetric(median(took[m])/off, mode.name+"/off")
		}
	}
	if n := len(took[1]); n > 0 && len(recv.Spans()) == 0 {
		// Sampled requests were made: some of their spans must have been
		// exported by now (the batcher exports every 5 s) or at shutdown.
		b.Logf("no spans received yet after %d sampled requests", n)
	}
}

package risk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/risk"
	"github.com/vigilhq/vigil/services/risk/internal/baseline"
)

// benchEnv is NATS with CONTROL and POLICY and a synced catalog; the
// benchmarks run the risk service without ClickHouse projections, which
// are measured by the chx sink benchmarks.
func benchEnv(b *testing.B) (*natstest.Env, *control.Catalog) {
	b.Helper()
	ctx := context.Background()
	n := natstest.Start(b)
	if err := natsx.EnsureStreams(ctx, n.JS, streams.ControlConfig(streams.DefaultOptions), streams.PolicyConfig(streams.DefaultOptions)); err != nil {
		b.Fatal(err)
	}
	cat := control.NewCatalog(n.JS, slog.New(slog.DiscardHandler))
	cctx, cancel := context.WithCancel(ctx)
	b.Cleanup(cancel)
	if err := cat.Run(cctx); err != nil {
		b.Fatal(err)
	}
	return n, cat
}

func benchService(b *testing.B, n *natstest.Env, cat *control.Catalog, partitions int) (*risk.Service, func()) {
	b.Helper()
	cfg := risk.DefaultConfig()
	cfg.Project, cfg.Partitions = false, partitions
	svc, err := risk.New(cfg, risk.Deps{NC: n.Conn, JS: n.JS, Catalog: cat, Log: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	return svc, func() { cancel(); <-done }
}

// mixedDecision is decision i of a realistic mix: 200 agents, 10 actions
// per session, mostly routine, with a new tool now and then, some
// failures and some policy warnings and blocks.
func mixedDecision(i int) (string, []byte) {
	agentID := fmt.Sprintf("agent-%03d", i%200)
	rec := rules.DecisionRecord{
		ID: fmt.Sprintf("dec_%010d", i), Tenant: "acme", AgentID: agentID, SessionID: fmt.Sprintf("%s-s%d", agentID, i/2000),
		Source: rules.SourceEvent,
		Input: rules.Input{Tenant: "acme", Action: rules.Action{Kind: "tool_call", Tool: fmt.Sprintf("tool-%d", (i/200)%8),
			Target: "https://api.example.com/v1", Publisher: "example"}, Context: map[string]any{"responseStatus": 200}},
		Decision: rules.Decision{Outcome: rules.Allow, ReasonCodes: []string{rules.ReasonDefaultAllow}},
		At:       time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * 50 * time.Millisecond),
	}
	switch {
	case i%97 == 0:
		rec.Input.Context["responseStatus"] = 500
	case i%53 == 0:
		rec.Decision = rules.Decision{Outcome: rules.Warn, ReasonCodes: []string{"UNDECLARED_TOOL"}}
	case i%211 == 0:
		rec.Decision = rules.Decision{Outcome: rules.Block, ReasonCodes: []string{"ORG_BLOCKLIST_TOOL"}}
	}
	data, _ := json.Marshal(rec)
	return streams.DecisionSubject("acme", agentID, rec.Decision.Outcome.String()), data
}

// BenchmarkConsume measures decisions per second through the risk
// consumer: b.N decisions are on POLICY before an instance starts, and
// the clock runs until every partition has folded all of them into its
// baselines and sessions and published the anomalies and score changes.
func BenchmarkConsume(b *testing.B) {
	for _, parts := range []int{1, 4} {
		b.Run(fmt.Sprintf("partitions=%d", parts), func(b *testing.B) {
			n, cat := benchEnv(b)
			ctx := context.Background()
			var acks []jetstream.PubAckFuture
			for i := 0; i < b.N; i++ {
				subj, data := mixedDecision(i)
				f, err := n.JS.PublishAsync(subj, data)
				if err != nil {
					b.Fatal(err)
				}
				acks = append(acks, f)
			}
			select {
			case <-n.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publish did not complete")
			}
			_ = acks
			_ = ctx
			b.ResetTimer()
			start := time.Now()
			svc, stop := benchService(b, n, cat, parts)
			for len(svc.Owned()) != parts {
				time.Sleep(time.Millisecond)
			}
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(b.N)/el.Seconds(), "decisions/s")
			stop()
		})
	}
}

// BenchmarkScoreLag measures the lag from a decision being recorded on
// POLICY to the session's new score being on RISK (each op is one
// decision that changes its session's score).
func BenchmarkScoreLag(b *testing.B) {
	n, cat := benchEnv(b)
	svc, stop := benchService(b, n, cat, 1)
	defer stop()
	for len(svc.Owned()) != 1 {
		time.Sleep(time.Millisecond)
	}
	scores := make(chan *nats.Msg, 16)
	sub, err := n.Conn.ChanSubscribe(streams.AllSessionScores, scores)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	ctx := context.Background()
	lags := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		rec := rules.DecisionRecord{ID: fmt.Sprintf("dec_lag_%08d", i), Tenant: "acme", AgentID: "lagbot", SessionID: "lag-session",
			Input:    rules.Input{Action: rules.Action{Kind: "tool_call", Tool: "search"}},
			Decision: rules.Decision{Outcome: rules.Warn, ReasonCodes: []string{"X"}}, At: time.Date(2026, 11, 20, 0, 0, 0, 0, time.UTC).Add(time.Duration(i) * time.Second)}
		data, _ := json.Marshal(rec)
		start := time.Now()
		if _, err := n.JS.Publish(ctx, streams.DecisionSubject("acme", "lagbot", rec.Decision.Outcome.String()), data); err != nil {
			b.Fatal(err)
		}
		select {
		case <-scores:
		case <-time.After(10 * time.Second):
			b.Fatal("no score within 10s")
		}
		lags = append(lags, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-µs")
}

// BenchmarkObserve is the in-memory cost of folding one observation into
// a warm baseline.
func BenchmarkObserve(b *testing.B) {
	a := baseline.New("acme", "bot")
	cfg := baseline.DefaultConfig()
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		a.Observe(baseline.Observation{ID: "d", AtMS: int64(i) * 100, Kind: "tool_call", Tool: fmt.Sprint("t", i%16),
			Destination: "api.example.com", Publisher: "example", Error: i%97 == 0}, cfg)
	}
}

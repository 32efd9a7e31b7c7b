package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// BenchmarkRiskEventToScore measures the lag from POST /v1/events to the
// session's new risk score on RISK, through ingest, the policy verdict and
// the risk service, in one `vigil dev` process. Each op is one failing
// event, which always changes its session's score.
func BenchmarkRiskEventToScore(b *testing.B) {
	db := chtest.New(b)
	pc := policysvc.DefaultConfig()
	pc.SigningSeed = testSigningSeed
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := StartStack(ctx, StackConfig{DataDir: b.TempDir(), NATSHost: "127.0.0.1", NATSPort: -1,
		ClickHouseDSN: db.DSN, ClickHouseWait: 20 * time.Second, Ingest: ingest.DefaultConfig(), API: api.DefaultConfig(),
		Policy: pc, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	defer func() { stop(); <-served; st.Close() }()

	scores := make(chan *nats.Msg, 64)
	sub, err := st.NC.ChanSubscribe(streams.SessionScoreSubject("default", "bench-risk"), scores)
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	url := "http://" + ln.Addr().String() + "/v1/events"
	lags := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		e := ev("bench-agent", "bench-risk", baseTime.Add(time.Duration(i)*time.Millisecond))
		e["payload"] = map[string]any{"toolName": "web_search", "responseStatus": 500}
		body, _ := json.Marshal(e)
		req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+st.BootstrapKey)
		req.Header.Set("Content-Type", "application/json")
		start := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode >= 300 {
			b.Fatalf("POST /v1/events: %d", res.StatusCode)
		}
		select {
		case <-scores:
		case <-time.After(10 * time.Second):
			b.Fatal("no new score within 10s")
		}
		lags = append(lags, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(lags)
	b.ReportMetric(float64(lags[len(lags)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lags[len(lags)*99/100].Microseconds()), "p99-µs")
}

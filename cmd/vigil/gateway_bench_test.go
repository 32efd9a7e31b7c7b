package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/gateway"
	"github.com/vigilhq/vigil/pkg/routes"
)

// BenchmarkGatewayAddedLatency measures what the front door adds to a
// request: the same authenticated read (GET /v1/agents/:id, answered from
// CONTROL without ClickHouse) sent to the in-process stack directly and
// through `vigil gateway` in front of it, alternately in the same run, on
// keep-alive connections. It reports each path's p50/p99 and the added
// p50/p99 (through minus direct, per percentile). docs/benchmarks.md.
func BenchmarkGatewayAddedLatency(b *testing.B) {
	_, base, key := readBenchStack(b, 50*time.Millisecond)
	if r, err := send(base, req{method: http.MethodPost, path: "/v1/agents", key: key, body: map[string]any{"agentId": "bench-agent"}}); err != nil || r.status != http.StatusCreated {
		b.Fatalf("register: %v %v", r, err)
	}
	target, _ := url.Parse(base)
	ups := map[string]*url.URL{}
	for _, s := range routes.Default().Services() {
		ups[s] = target
	}
	gw, err := gateway.New(gateway.Config{Table: routes.Default(), Upstreams: ups, Log: testLogger(b), Reg: daemon.Registry()})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(gw)
	defer srv.Close()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(base string) time.Duration {
		req, _ := http.NewRequest(http.MethodGet, base+"/v1/agents/bench-agent", nil)
		req.Header.Set("Authorization", "Bearer "+key)
		start := time.Now()
		res, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		took := time.Since(start)
		if res.StatusCode != http.StatusOK {
			b.Fatalf("GET via %s: HTTP %d", base, res.StatusCode)
		}
		return took
	}
	for range 200 { // warm both paths' connections and caches
		get(base)
		get(srv.URL)
	}
	direct, through := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			direct = append(direct, get(base))
			through = append(through, get(srv.URL))
		} else {
			through = append(through, get(srv.URL))
			direct = append(direct, get(base))
		}
	}
	b.StopTimer()
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[int(p*float64(len(d)-1))].Microseconds())
	}
	d50, d99, g50, g99 := pct(direct, 0.50), pct(direct, 0.99), pct(through, 0.50), pct(through, 0.99)
	b.ReportMetric(d50, "direct-p50-µs")
	b.ReportMetric(d99, "direct-p99-µs")
	b.ReportMetric(g50, "gateway-p50-µs")
	b.ReportMetric(g99, "gateway-p99-µs")
	b.ReportMetric(g50-d50, "added-p50-µs")
	b.ReportMetric(g99-d99, "added-p99-µs")
}

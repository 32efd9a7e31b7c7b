package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/sdk/go/vigil"
)

// BenchmarkGuardOverhead measures what the Go SDK's Guard adds to a
// raw HTTP call of POST /v1/decisions.evaluate against the real stack
// (allow, no rule matches): each iteration makes one raw call and one
// Guard, in alternating order, with the same body shape, keep-alive and
// JSON decoding, so both meet the same stack state. It reports p50 and
// p99 of each and the overhead at each percentile.
func BenchmarkGuardOverhead(b *testing.B) {
	root, err := filepath.Abs("../..")
	if err != nil {
		b.Fatal(err)
	}
	sf := loadScenarios(b, filepath.Join(root, "sdk", "conformance", "scenarios.json"))
	log, _ := testkit.Logger(b, 8) // above error: a quiet stack
	srv := stacktest.Start(b, stacktest.Options{DSN: chtest.New(b).DSN, Log: log})
	_, key := setupTenant(b, srv, sf, "sdk-bench")
	c, err := vigil.New(srv.URL, key, vigil.WithAgent(agentID))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	ctx := context.Background()
	action := vigil.Action{Tool: "sdk_read_docs", Arguments: map[string]any{"page": 1}, SessionID: "bench"}
	raw := func(i int) {
		body, _ := json.Marshal(map[string]any{"agentId": agentID, "sessionId": "bench",
			"action": map[string]any{"kind": "tool_call", "tool": "sdk_read_docs", "arguments": map[string]any{"page": 1}}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/decisions.evaluate", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Idempotency-Key", fmt.Sprintf("bench-raw-%d-%d", time.Now().UnixNano(), i))
		res, err := hc.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var d struct {
			Decision string `json:"decision"`
		}
		err = json.NewDecoder(res.Body).Decode(&d)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if err != nil || res.StatusCode != http.StatusOK || d.Decision != "allow" {
			b.Fatalf("raw call: %d %v %+v", res.StatusCode, err, d)
		}
	}
	guard := func(int) {
		if d, err := c.Guard(ctx, action); err != nil || d.Outcome != vigil.Allow {
			b.Fatalf("guard: %+v %v", d, err)
		}
	}
	for i := range 50 { // warm both connection pools and the stack
		raw(i)
		guard(i)
	}
	rawT, guardT := make([]time.Duration, 0, b.N), make([]time.Duration, 0, b.N)
	timed := func(f func(int), i int, into *[]time.Duration) {
		t0 := time.Now()
		f(i)
		*into = append(*into, time.Since(t0))
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if i%2 == 0 {
			timed(raw, i, &rawT)
			timed(guard, i, &guardT)
		} else {
			timed(guard, i, &guardT)
			timed(raw, i, &rawT)
		}
	}
	b.StopTimer()
	pct := func(ds []time.Duration, p float64) float64 {
		s := slices.Clone(ds)
		slices.Sort(s)
		return float64(s[min(len(s)-1, int(p*float64(len(s))))].Microseconds())
	}
	r50, r99, g50, g99 := pct(rawT, .50), pct(rawT, .99), pct(guardT, .50), pct(guardT, .99)
	b.ReportMetric(r50, "raw-p50-µs")
	b.ReportMetric(r99, "raw-p99-µs")
	b.ReportMetric(g50, "guard-p50-µs")
	b.ReportMetric(g99, "guard-p99-µs")
	b.ReportMetric(g50-r50, "overhead-p50-µs")
	b.ReportMetric(g99-r99, "overhead-p99-µs")
}

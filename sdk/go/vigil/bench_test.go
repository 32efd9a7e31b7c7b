package vigil_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/sdk/go/vigil"
)

// BenchmarkGuardClientCost isolates the SDK's own cost per Guard: against
// a loopback server that answers a fixed allow at once, "raw" is a
// hand-written call (marshal, POST, decode) and "guard" the SDK's Guard,
// interleaved; it reports the median of each.
// The stack's part of a real decision is measured in sdk/conformance
// (BenchmarkGuardOverhead).
func BenchmarkGuardClientCost(b *testing.B) {
	answer := []byte(`{"decision":"allow","reasonCodes":[],"requiresDeskApproval":false,"decisionId":"dec_0123456789abcdef0123","packHash":"sha256:00","matches":[],"evaluatedAt":"2026-01-01T00:00:00Z"}`)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(answer)
	}))
	defer srv.Close()
	ctx := context.Background()
	raw := func() {
		body, _ := json.Marshal(map[string]any{"agentId": "a", "sessionId": "s",
			"action": map[string]any{"kind": "tool_call", "tool": "t", "arguments": map[string]any{"page": 1}}})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/v1/decisions.evaluate", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		var d struct {
			Decision string `json:"decision"`
		}
		_ = json.NewDecoder(res.Body).Decode(&d)
		_, _ = io.Copy(io.Discard, res.Body)
		res.Body.Close()
	}
	c, err := vigil.New(srv.URL, "k", vigil.WithAgent("a"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	a := vigil.Action{Tool: "t", Arguments: map[string]any{"page": 1}, SessionID: "s"}
	guard := func() {
		if _, err := c.Guard(ctx, a); err != nil {
			b.Fatal(err)
		}
	}
	// Interleaved, so that both meet the same load on a shared machine.
	var rawT, guardT []time.Duration
	for i := 0; b.Loop(); i++ {
		first, second, fT, sT := raw, guard, &rawT, &guardT
		if i%2 == 1 {
			first, second, fT, sT = guard, raw, &guardT, &rawT
		}
		t0 := time.Now()
		first()
		t1 := time.Now()
		second()
		*fT, *sT = append(*fT, t1.Sub(t0)), append(*sT, time.Since(t1))
	}
	median := func(ds []time.Duration) float64 {
		slices.Sort(ds)
		return float64(ds[len(ds)/2].Nanoseconds())
	}
	r, g := median(rawT), median(guardT)
	b.ReportMetric(r, "raw-p50-ns")
	b.ReportMetric(g, "guard-p50-ns")
	b.ReportMetric(g-r, "overhead-p50-ns")
}

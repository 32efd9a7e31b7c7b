package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/services/api"
)

// BenchmarkHaltPropagation measures how long a halt takes to reach the
// decisions of another api instance: from the 201 of POST /v1/halts on
// instance B to the first decision answered HALTED through instance A
// (whose policy service follows CONTROL on its own). Each iteration
// raises an agent halt, asks A until it blocks, then resumes (untimed).
// Reported: p50 and p99 of that interval; ns/op covers the whole loop.
func BenchmarkHaltPropagation(b *testing.B) {
	st, base, key := readBenchStack(b, 200*time.Millisecond)
	cfg := api.DefaultConfig()
	unlimited(&cfg)
	replica := startReplica(b, st, cfg)
	ask := `{"agentId":"bench-bot","action":"lookup"}`
	decide := func() []string {
		r, err := send(base, req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: key, body: ask})
		if err != nil || r.status != http.StatusOK {
			b.Fatalf("evaluate: %v %s", err, r)
		}
		var d struct {
			ReasonCodes []string `json:"reasonCodes"`
		}
		if err := json.Unmarshal(r.body, &d); err != nil {
			b.Fatal(err)
		}
		return d.ReasonCodes
	}
	isHalted := func(codes []string) bool { return len(codes) > 0 && codes[0] == "HALTED" }
	decide() // warm the pack and connections
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for range b.N {
		r, err := send(replica.base, req{method: http.MethodPost, path: "/v1/halts", key: key,
			body: `{"scope":"agent","agentId":"bench-bot","reason":"benchmark"}`})
		if err != nil || r.status != http.StatusCreated {
			b.Fatalf("raise: %v %s", err, r)
		}
		created := time.Now()
		for !isHalted(decide()) {
		}
		lat = append(lat, time.Since(created))
		b.StopTimer()
		var h struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r.body, &h); err != nil {
			b.Fatal(err)
		}
		if r, err := send(replica.base, req{method: http.MethodDelete, path: "/v1/halts/" + h.ID, key: key}); err != nil || r.status != http.StatusOK {
			b.Fatalf("resume: %v %s", err, r)
		}
		for isHalted(decide()) {
		}
		b.StartTimer()
	}
	b.StopTimer()
	slices.Sort(lat)
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds()), "max-µs")
}

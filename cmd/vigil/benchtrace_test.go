package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
)

// TestLatencyTimeline: buckets cut latencies in schedule order, each
// with its own percentiles, the last one short.
func TestLatencyTimeline(t *testing.T) {
	lat := []time.Duration{1, 3, 2, 10, 20, 30, 5}
	for i := range lat {
		lat[i] *= time.Millisecond
	}
	got := latencyTimeline(lat, 10*time.Millisecond, 30*time.Millisecond)
	want := []timelineBucket{
		{StartMs: 0, N: 3, P50Ms: 2, P99Ms: 3, MaxMs: 3},
		{StartMs: 30, N: 3, P50Ms: 20, P99Ms: 30, MaxMs: 30},
		{StartMs: 60, N: 1, P50Ms: 5, P99Ms: 5, MaxMs: 5},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d buckets, want %d: %+v", len(got), len(want), got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("bucket %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

// TestBenchDecideTraces: the timeline accounts for every request, the
// execution trace is written, and a stall threshold of zero makes the
// flight recorder snapshot the slowest request.
func TestBenchDecideTraces(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	whole, stall := filepath.Join(dir, "whole.trace"), filepath.Join(dir, "stall.trace")
	var out bytes.Buffer
	err := runBench(ctx, []string{"decide", "--rate", "200", "--duration", "1s", "--rules", "20",
		"--connections", "8", "--clickhouse-dsn", chtest.New(t).DSN, "--json",
		"--timeline", "250ms", "--trace", whole, "--stall-trace", stall, "--stall-min", "0s"}, &out)
	if err != nil {
		t.Fatalf("bench decide: %v\n%s", err, out.String())
	}
	var rep decideReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	n := 0
	for _, b := range rep.Timeline {
		n += b.N
		if !(b.P50Ms > 0 && b.P50Ms <= b.P99Ms && b.P99Ms <= b.MaxMs) {
			t.Errorf("bucket %+v", b)
		}
	}
	if len(rep.Timeline) != 4 || n != rep.Requests {
		t.Errorf("timeline of %d buckets holds %d requests, want 4 and %d: %+v", len(rep.Timeline), n, rep.Requests, rep.Timeline)
	}
	if rep.GCCycles == 0 && rep.AllocKiBPerDecision <= 0 {
		t.Errorf("no allocation counted: %+v", rep)
	}
	for _, f := range []string{whole, stall} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		// Every execution trace starts with its version header.
		if !bytes.HasPrefix(b, []byte("go 1.")) {
			t.Errorf("%s does not start as an execution trace: %q", f, b[:min(len(b), 16)])
		}
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/chtest"
)

// TestBenchIngest runs `vigil bench ingest` with tiny counts and checks
// that the report is complete and self-consistent. Timings are whatever
// the machine gives; only their sanity is checked, never their size.
func TestBenchIngest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runBench(ctx, []string{"ingest", "--events", "300", "--concurrency", "4", "--batch", "25",
		"--batch-concurrency", "2", "--warmup", "20", "--data-dir", t.TempDir(), "--json"}, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Config.Events != 300 || rep.Config.Batch != 25 || rep.Config.Warmup != 20 {
		t.Errorf("config = %+v", rep.Config)
	}
	for _, p := range []benchPhase{rep.Single, rep.Batch, rep.Raw} {
		if p.Events != 300 || p.Errors != 0 || p.Seconds <= 0 || p.EventsPerSec <= 0 {
			t.Errorf("phase %s: %+v", p.Name, p)
		}
	}
	for _, p := range []benchPhase{rep.Single, rep.Batch} {
		if !(p.P50Ms > 0 && p.P50Ms <= p.P99Ms && p.P99Ms <= p.MaxMs) {
			t.Errorf("phase %s latencies: p50 %v p99 %v max %v", p.Name, p.P50Ms, p.P99Ms, p.MaxMs)
		}
	}
	if rep.Single.Requests != 300 || rep.Batch.Requests != 12 {
		t.Errorf("requests: single %d, batch %d; want 300 and 12", rep.Single.Requests, rep.Batch.Requests)
	}
	for _, p := range []benchPhase{rep.Single, rep.Batch, rep.Raw} {
		if p.OtherCPUPct != nil && (p.CPUUsPerEvent < 0 || *p.OtherCPUPct < 0 || *p.OtherCPUPct > 100) {
			t.Errorf("phase %s CPU: %v µs/event, other %v%%", p.Name, p.CPUUsPerEvent, *p.OtherCPUPct)
		}
	}
	if rep.BatchVsRaw <= 0 || rep.SingleVsRaw <= 0 {
		t.Errorf("ratios batch/raw %v, single/raw %v", rep.BatchVsRaw, rep.SingleVsRaw)
	}
	if rep.Stored.Expected != 20+3*300 || rep.Stored.Messages != rep.Stored.Expected {
		t.Errorf("stored = %+v, want %d", rep.Stored, 20+3*300)
	}
	if rep.AvgPayloadBytes < 250 || rep.AvgPayloadBytes > 400 || rep.AvgEventBytes <= rep.AvgPayloadBytes {
		t.Errorf("event sizes: payload %d B, event %d B", rep.AvgPayloadBytes, rep.AvgEventBytes)
	}
	if rep.PeakRSSMiB <= 0 {
		t.Errorf("peak RSS = %v MiB", rep.PeakRSSMiB)
	}
	if len(rep.Goals) != 2 {
		t.Errorf("goals = %+v", rep.Goals)
	}
}

func TestBenchIngestTable(t *testing.T) {
	if testing.Short() {
		t.Skip("starts an embedded NATS server")
	}
	var out bytes.Buffer
	// The batch phase alone profiled (--profile-phase).
	prof := filepath.Join(t.TempDir(), "batch.cpu")
	err := runBench(context.Background(), []string{"ingest", "--events", "50", "--concurrency", "2", "--batch", "10",
		"--batch-concurrency", "1", "--warmup", "0", "--profile-phase", "batch", "--cpuprofile", prof}, &out)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Errorf("batch phase profile: %v", err)
	}
	for _, want := range []string{"single", "batch", "raw", "batch/raw", "single/raw", "batch ingest ≥ 0.6× raw", "single-event p99 ≤ 5 ms"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, out.String())
		}
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"egress"}, {"ingest", "--events", "0"}, {"ingest", "--batch", "100000"}, {"ingest", "extra"}, {"ingest", "--profile-phase", "warmup"}, {"decide", "--budgets", "4"}, {"decide", "--apart", "policy"}, {"decide", "--apart", "api"}, {"decide", "--apart", "ledger,sidecar"}, {"decide", "--apart", "ledger", "--apart-nice", "20"}, {"freshness", "--rate", "10"}, {"otlp", "--rounds", "0"}, {"otlp", "extra"}} {
		if err := runBench(context.Background(), args, &bytes.Buffer{}); err == nil {
			t.Errorf("runBench(%q) succeeded", args)
		}
	}
}

// TestBenchDecide drives a few hundred decisions through `vigil bench
// decide` and checks the report adds up: every request answered, the
// outcomes those of the bench pack, percentiles ordered. Budgets cover
// every decision and are never reached, so they change no outcome; a
// warm-up runs first and is not counted.
func TestBenchDecide(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runBench(ctx, []string{"decide", "--rate", "200", "--duration", "1s", "--rules", "20",
		"--connections", "8", "--budgets", "3", "--warmup", "300ms", "--clickhouse-dsn", chtest.New(t).DSN, "--json"}, &out)
	if err != nil {
		t.Fatalf("bench decide: %v\n%s", err, out.String())
	}
	var rep decideReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	// The warm-up's requests are not the phase's.
	if rep.Requests != 200 || rep.Errors != 0 || rep.Rules != 20 || rep.Budgets != 3 || rep.WarmupS != 0.3 {
		t.Errorf("report = %+v", rep)
	}
	total := 0
	for o, n := range rep.Outcomes {
		if o != "allow" && o != "warn" && o != "block" && o != "require_approval" {
			t.Errorf("unexpected outcome %q", o)
		}
		total += n
	}
	if total != rep.Requests {
		t.Errorf("outcomes %v sum to %d, want %d", rep.Outcomes, total, rep.Requests)
	}
	if !(rep.P50Ms > 0 && rep.P50Ms <= rep.P99Ms && rep.P99Ms <= rep.MaxMs) || rep.InProcessUs <= 0 {
		t.Errorf("latencies: %+v", rep)
	}
	if !(rep.FloorP50Ms > 0 && rep.FloorP50Ms <= rep.FloorP99Ms && rep.FloorP99Ms <= rep.FloorMaxMs) ||
		rep.P50VsFloor != rep.P50Ms/rep.FloorP50Ms || rep.P99VsFloor != rep.P99Ms/rep.FloorP99Ms {
		t.Errorf("floor: %+v", rep)
	}
	if rep.PeakRSSMiB <= 0 {
		t.Errorf("peak RSS = %v MiB", rep.PeakRSSMiB)
	}
}

// TestBenchDecideApart: with --apart, the consumers of recorded
// decisions run in a second process at the niceness asked for, and they
// really run there: the ledger, which this process does not run, seals
// leaves into the bench's database.
func TestBenchDecideApart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	db := chtest.New(t)
	var out bytes.Buffer
	err := benchDecideWith(ctx, []string{"--rate", "200", "--duration", "1s", "--rules", "20", "--connections", "8",
		"--apart", "risk, ledger,guardian,notifier,ledger", "--apart-nice", "5", "--clickhouse-dsn", db.DSN, "--json"}, &out, subVigil)
	if err != nil {
		t.Fatalf("bench decide --apart: %v\n%s", err, out.String())
	}
	var rep decideReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Requests != 200 || rep.Errors != 0 {
		t.Errorf("report = %+v", rep)
	}
	a := rep.Apart
	if a == nil || !slices.Equal(a.Services, []string{"risk", "ledger", "guardian", "notifier"}) || a.Nice != 5 || a.PID <= 0 || a.PID == os.Getpid() {
		t.Fatalf("apart = %+v", a)
	}
	if a.CPUUsPerDecision <= 0 || a.PeakRSSMiB <= 0 {
		t.Errorf("apart costs = %+v", a)
	}
	var leaves uint64
	if err := db.Conn.QueryRow(ctx, "SELECT count() FROM ledger_leaves").Scan(&leaves); err != nil || leaves == 0 {
		t.Errorf("ledger leaves sealed by the process apart: %d, %v", leaves, err)
	}
}

// TestBenchDecideApartFails: when the process apart cannot start, the
// bench says why and returns, although the stack beside it was waiting
// for a stream only that process makes (the approval board waits for
// GUARDIAN, which the guardian owns).
func TestBenchDecideApartFails(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := benchDecideWith(ctx, []string{"--rate", "10", "--duration", "1s", "--apart", "guardian",
		"--clickhouse-dsn", chtest.New(t).DSN}, &out, subVigil, "no-such-command")
	if err == nil || !strings.Contains(err.Error(), "exited at start") {
		t.Fatalf("bench decide with a process apart that cannot start: %v", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("returned only when the test's deadline passed: %v", err)
	}
}

// TestBenchFreshness: every accepted event is found queryable in
// ClickHouse, and the report adds up.
func TestBenchFreshness(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runBench(ctx, []string{"freshness", "--rate", "500", "--duration", "1s", "--connections", "4",
		"--clickhouse-dsn", chtest.New(t).DSN, "--json"}, &out)
	if err != nil {
		t.Fatalf("bench freshness: %v\n%s", err, out.String())
	}
	var rep freshReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Events != 500 || rep.Batch != 5 || rep.Errors != 0 || rep.AchievedRate <= 0 || rep.PeakRSSMiB <= 0 {
		t.Errorf("report = %+v", rep)
	}
	if !(rep.P50Ms > 0 && rep.P50Ms <= rep.P99Ms && rep.P99Ms <= rep.MaxMs && rep.AfterAckP99Ms <= rep.MaxMs) {
		t.Errorf("latencies = %+v", rep)
	}
	if rep.Queryable != 500 || rep.Duplicates != 0 {
		t.Errorf("queryable %d, duplicates %d; want 500 and 0", rep.Queryable, rep.Duplicates)
	}
	// The projector's own histograms saw every event at every stage.
	if len(rep.Stages) != 3 {
		t.Fatalf("projector stages = %+v", rep.Stages)
	}
	for _, st := range rep.Stages {
		if st.Messages != 500 || st.P50Ms > st.P99Ms {
			t.Errorf("stage %+v", st)
		}
	}
}

// TestBenchNotify: every block decision reaches every channel, and the
// report adds up.
func TestBenchNotify(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	err := runBench(ctx, []string{"notify", "--channels", "3", "--rate", "20", "--duration", "1s",
		"--clickhouse-dsn", chtest.New(t).DSN, "--json"}, &out)
	if err != nil {
		t.Fatalf("bench notify: %v\n%s", err, out.String())
	}
	var rep notifyReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if rep.Decisions != 20 || rep.Expected != 60 || rep.Delivered != 60 || rep.DeliveriesPerS <= 0 {
		t.Errorf("report = %+v", rep)
	}
	if !(rep.FirstP50Ms > 0 && rep.FirstP50Ms <= rep.FirstP99Ms && rep.FirstP99Ms <= rep.AllP99Ms) {
		t.Errorf("latencies = %+v", rep)
	}
}

// TestBenchOTLP runs `vigil bench otlp` with tiny counts, gzip on: every
// span and event is acknowledged and stored, and the report adds up.
func TestBenchOTLP(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := runBench(ctx, []string{"otlp", "--events", "200", "--batch", "50", "--concurrency", "2", "--rounds", "2", "--gzip", "--json"}, &out); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	var rep benchOTLPReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("report is not JSON: %v\n%s", err, out.String())
	}
	if len(rep.Batch) != 2 || len(rep.OTLP) != 2 || len(rep.RoundRatios) != 2 {
		t.Fatalf("rounds: %+v", rep)
	}
	for _, p := range append(rep.Batch, rep.OTLP...) {
		if p.Events != 200 || p.Requests != 4 || p.Errors != 0 || p.EventsPerSec <= 0 {
			t.Errorf("phase %s: %+v", p.Name, p)
		}
	}
	if rep.OTLPVsBatch <= 0 || rep.Stored != rep.Expected || rep.Expected != 2*20+2*2*200 {
		t.Errorf("ratio %v, stored %d of %d", rep.OTLPVsBatch, rep.Stored, rep.Expected)
	}
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// ledgerBenchReport is what `vigil bench ledger` measured.
type ledgerBenchReport struct {
	Events       int     `json:"events"`
	SealSeconds  float64 `json:"sealSeconds"`
	LeavesSealed uint64  `json:"leavesSealed"`
	LeavesPerSec float64 `json:"leavesPerSec"`
	EventsPerSec float64 `json:"eventsPerSec"`
	// The stream phase: event records published straight onto INGEST,
	// sealed by the ledger (what BenchmarkSeal and the developers'
	// 34,200 leaves/s measure), without HTTP ingest in front.
	StreamEvents       int     `json:"streamEvents"`
	StreamSeconds      float64 `json:"streamSeconds"`
	StreamPublishSecs  float64 `json:"streamPublishSeconds"`
	StreamLeavesPerSec float64 `json:"streamLeavesPerSec"`
	// StreamAllSeconds runs until the policy's verdicts on those events
	// (a second leaf each) are sealed too.
	// StreamCPUUsPerEvent is this process's CPU (publisher, ledger,
	// embedded NATS, projections and policy; not ClickHouse's) per event
	// in the stream phase, and StreamOtherCPUPct the rest of the
	// machine's CPU meanwhile: what makes runs on a busy box comparable.
	StreamCPUUsPerEvent   float64  `json:"streamCpuUsPerEvent,omitempty"`
	StreamOtherCPUPct     *float64 `json:"streamOtherCpuPct,omitempty"`
	StreamAllSeconds      float64  `json:"streamAllSeconds"`
	StreamAllLeavesPerSec float64  `json:"streamAllLeavesPerSec"`
	LatencyRate           int      `json:"latencyRate"`
	LatencyEvents         int      `json:"latencyEvents"`
	CoverP50Ms            float64  `json:"coverP50Ms"`
	CoverP99Ms            float64  `json:"coverP99Ms"`
	CoverMaxMs            float64  `json:"coverMaxMs"`
	// PeakRSSMiB is this process's peak resident set (VmHWM).
	PeakRSSMiB float64 `json:"peakRssMiB"`
}

// runBenchLedger is `vigil bench ledger`.
func runBenchLedger(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil bench ledger", `Measure the ledger end to end on this machine: an in-process Vigil (embedded
NATS, ClickHouse in a fresh database dropped afterwards). Phase "seal" posts
--events events over HTTP in batches and measures how fast the ledger seals
them (each event and the verdict the policy service records for it is a
leaf) until a signed checkpoint covers them all. Phase "cover" posts single
events at --rate for --duration and measures, per event, the time from its
HTTP 202 to the first checkpoint that covers it (sampled every 10 ms plus
the lookups' time, so figures are upper bounds). Phase "stream" (first)
publishes --stream-events event records straight onto INGEST, as ingest
would, and measures how fast the ledger seals them (event leaves per
second until the ledger has committed the last one): the ledger's own path
from INGEST, which "seal" only shows when HTTP ingest and the policy
verdicts (each event's second leaf) keep up with it.`)
	streamEvents := fs.Int("stream-events", "", 50000, "events published straight onto INGEST in the stream phase (0 skips it)")
	events := fs.Int("events", "", 20000, "events in the seal phase")
	rate := fs.Int("rate", "", 200, "events per second in the cover phase")
	duration := fs.Duration("duration", "", 10*time.Second, "length of the cover phase")
	server := fs.String("clickhouse", "VIGIL_BENCH_CLICKHOUSE", "clickhouse://127.0.0.1:9000", "ClickHouse server (a fresh database is created on it)")
	cpuProfile := fs.String("cpuprofile", "", "", "write a CPU profile of the stream phase to this file")
	blockProfile := fs.String("blockprofile", "", "", "write a block profile of the stream phase to this file")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	logLevel := fs.String("log-level", "", "warn", "log level of the in-process services")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *events < 100 || *rate < 1 || *duration <= 0 {
		return errors.New("--events must be at least 100; --rate and --duration positive")
	}
	log, err := daemon.Logger(*logLevel, "text")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "vigil-bench-ledger-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	db := fmt.Sprintf("vigil_bench_ledger_%d", time.Now().UnixNano()%1e9)
	st, err := StartStack(ctx, StackConfig{
		DataDir: dir, NATSHost: "127.0.0.1", NATSPort: -1, ClickHouseDSN: *server + "/" + db, ClickHouseWait: 10 * time.Second,
		Ingest: ingest.DefaultConfig(), API: benchAPIConfig(), Log: log,
	})
	if err != nil {
		return err
	}
	defer func() {
		if conn, err := chx.Open(context.WithoutCancel(ctx), *server); err == nil {
			_ = conn.Exec(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+db)
			_ = conn.Close()
		}
	}()
	defer st.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	sctx, stop := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	defer func() { stop(); <-served }()
	tenant := fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9)
	_, key, err := st.Store.CreateKey(ctx, tenant, auth.RoleOwner, "bench", "vigil bench ledger")
	if err != nil {
		return err
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 8}, Timeout: 30 * time.Second}
	base := "http://" + ln.Addr().String()
	post := func(path string, body any) error {
		data, _ := json.Marshal(body)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(data))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		defer res.Body.Close()
		_, _ = io.Copy(io.Discard, res.Body)
		if res.StatusCode != http.StatusAccepted {
			return fmt.Errorf("POST %s: %s", path, res.Status)
		}
		return nil
	}
	ev := func(i int) map[string]any {
		return map[string]any{
			"eventId": uuid.NewString(), "agentId": fmt.Sprintf("agent-%d", i%8), "sessionId": fmt.Sprintf("s-%d", i/50),
			"sourceTimestamp": time.Now().UTC().Format(time.RFC3339Nano), "category": "tool_api", "schemaVersion": "1.0",
			"payload": map[string]any{"toolName": "web_search", "target": "https://example.com", "n": i},
		}
	}
	size := func() uint64 {
		cp, err := st.Ledger.LatestCheckpoint(ctx, tenant)
		if err != nil {
			return 0
		}
		return cp.TreeSize
	}
	// Wait for the key's own control record, so the seal phase starts
	// from a settled log.
	for deadline := time.Now().Add(30 * time.Second); size() == 0 && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	rep := ledgerBenchReport{Events: *events, LatencyRate: *rate, StreamEvents: *streamEvents}

	// Phase stream.
	if *streamEvents > 0 {
		stopProfiles, err := startProfiles(*cpuProfile, *blockProfile, "")
		if err != nil {
			return err
		}
		err = benchLedgerStream(ctx, st, tenant, *streamEvents, &rep)
		if perr := stopProfiles(); err == nil {
			err = perr
		}
		if err != nil {
			return err
		}
	}

	// Phase seal.
	size0 := size()
	target := size0 + 2*uint64(*events)
	start := time.Now()
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	jobs := make(chan int)
	for range 4 {
		wg.Go(func() {
			for j := range jobs {
				batch := make([]map[string]any, 0, 100)
				for i := j; i < min(j+100, *events); i++ {
					batch = append(batch, ev(i))
				}
				if err := post("/v1/events/batch", map[string]any{"events": batch}); err != nil {
					mu.Lock()
					firstErr = firstOf(firstErr, err)
					mu.Unlock()
				}
			}
		})
	}
	for j := 0; j < *events; j += 100 {
		jobs <- j
	}
	close(jobs)
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	for size() < target {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("seal: the log reached %d leaves of %d in 5 minutes", size()-size0, target-size0)
		}
		time.Sleep(5 * time.Millisecond)
	}
	took := time.Since(start)
	rep.SealSeconds, rep.LeavesSealed = took.Seconds(), size()-size0
	rep.LeavesPerSec, rep.EventsPerSec = float64(rep.LeavesSealed)/took.Seconds(), float64(*events)/took.Seconds()

	// Phase cover: one client, open loop. After each 202 the INGEST
	// stream's last sequence bounds the event's own; the event counts as
	// covered once the ledger has committed that sequence under a
	// checkpoint (sampled every 5 ms: figures are upper bounds).
	n := int(duration.Seconds() * float64(*rate))
	seqs := make([]uint64, n)
	acked := make([]time.Time, n)
	covered := make([]time.Duration, 0, n)
	var ackedN int
	done := make(chan struct{})
	go func() {
		defer close(done)
		for next := 0; next < n; {
			time.Sleep(5 * time.Millisecond)
			sealed := st.Ledger.SealedThrough(streams.Ingest)
			now := time.Now()
			mu.Lock()
			for ; next < ackedN && seqs[next] <= sealed; next++ {
				covered = append(covered, now.Sub(acked[next]))
			}
			mu.Unlock()
		}
	}()
	ingestStream, err := st.JS.Stream(ctx, streams.Ingest)
	if err != nil {
		return err
	}
	interval := time.Second / time.Duration(*rate)
	t0 := time.Now()
	for i := range n {
		if d := time.Until(t0.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		if err := post("/v1/events", ev(i)); err != nil {
			return err
		}
		at := time.Now()
		last, err := natsx.LastSequence(ctx, ingestStream)
		if err != nil {
			return err
		}
		mu.Lock()
		seqs[i], acked[i], ackedN = last, at, i+1
		mu.Unlock()
	}
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		return errors.New("cover: events not covered within 2 minutes")
	}
	slices.Sort(covered)
	rep.LatencyEvents = len(covered)
	rep.CoverP50Ms, rep.CoverP99Ms = benchMs(benchPercentile(covered, 0.50)), benchMs(benchPercentile(covered, 0.99))
	rep.CoverMaxMs = benchMs(covered[len(covered)-1])
	rep.PeakRSSMiB = peakRSSMiB()

	if *asJSON {
		return benchJSON(out, rep)
	}
	fmt.Fprintf(out, "vigil bench ledger\n")
	if rep.StreamEvents > 0 {
		fmt.Fprintf(out, "  stream   %d event records on INGEST sealed in %.2fs (published in %.2fs): %.0f leaves/s (goal ≥ 50,000 leaves/s)\n",
			rep.StreamEvents, rep.StreamSeconds, rep.StreamPublishSecs, rep.StreamLeavesPerSec)
		fmt.Fprintf(out, "           with the policy's verdicts on them: %d leaves in %.2fs, %.0f leaves/s\n",
			2*rep.StreamEvents, rep.StreamAllSeconds, rep.StreamAllLeavesPerSec)
		if rep.StreamOtherCPUPct != nil {
			fmt.Fprintf(out, "           CPU %.0f µs per event until its verdict is sealed (this process, publisher and whole stack; not ClickHouse); rest of the machine %.0f %%\n",
				rep.StreamCPUUsPerEvent, *rep.StreamOtherCPUPct)
		}
	}
	fmt.Fprintf(out, "  seal     %d events (%d leaves) in %.2fs: %.0f leaves/s, %.0f events/s (whole stack: HTTP ingest, policy, projections)\n",
		rep.Events, rep.LeavesSealed, rep.SealSeconds, rep.LeavesPerSec, rep.EventsPerSec)
	fmt.Fprintf(out, "  cover    %d events at %d/s: 202 → covered by a checkpoint p50 %.0f ms  p99 %.0f ms  max %.0f ms (goal p99 ≤ 2,000 ms)\n",
		rep.LatencyEvents, rep.LatencyRate, rep.CoverP50Ms, rep.CoverP99Ms, rep.CoverMaxMs)
	fmt.Fprintf(out, "  peak RSS %.0f MiB (this process: load generator and the whole stack)\n", rep.PeakRSSMiB)
	return nil
}

func firstOf(first, err error) error {
	if first != nil {
		return first
	}
	return err
}

// benchLedgerStream is the stream phase: n event records, as ingest
// publishes them, go straight onto INGEST (async, acked per thousand) and
// the clock runs from the first publish until the ledger has committed
// the last one under a checkpoint. The rest of the stack consumes them
// too (projections, the policy verdicts, whose decisions the ledger also
// seals), as in a deployment.
func benchLedgerStream(ctx context.Context, st *Stack, tenant string, n int, rep *ledgerBenchReport) error {
	now := time.Now()
	data := make([][]byte, n)
	for i := range data {
		r := event.Record{Tenant: tenant, SourceMS: now.UnixMilli(), ReceivedMS: now.UnixMilli() + int64(i), Client: event.Client{SDK: "go"},
			Event: event.Event{EventID: uuid.NewString(), AgentID: fmt.Sprintf("agent-%d", i%8), SessionID: fmt.Sprintf("s-%d", i/50),
				SourceTimestamp: now.UTC().Format(time.RFC3339Nano), Category: "tool_api", SchemaVersion: "1.0",
				Payload: json.RawMessage(fmt.Sprintf(`{"toolName":"web_search","target":"https://example.com","n":%d}`, i))}}
		data[i], _ = json.Marshal(r)
	}
	size := func() uint64 {
		cp, err := st.Ledger.LatestCheckpoint(ctx, tenant)
		if err != nil {
			return 0
		}
		return cp.TreeSize
	}
	size0 := size()
	start, cpu0 := time.Now(), readCPU()
	var last uint64
	for i, d := range data {
		subject := streams.EventReceivedSubject(tenant, fmt.Sprintf("agent-%d", i%8))
		if _, err := st.JS.PublishAsync(subject, d); err != nil {
			return fmt.Errorf("stream: publish: %w", err)
		}
		if i%1000 == 999 || i == n-1 {
			select {
			case <-st.JS.PublishAsyncComplete():
			case <-time.After(time.Minute):
				return errors.New("stream: publishes not acked within a minute")
			}
		}
	}
	rep.StreamPublishSecs = time.Since(start).Seconds()
	ingest, err := st.JS.Stream(ctx, streams.Ingest)
	if err != nil {
		return err
	}
	if last, err = natsx.LastSequence(ctx, ingest); err != nil {
		return err
	}
	for st.Ledger.SealedThrough(streams.Ingest) < last {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("stream: INGEST sealed through %d of %d after 5 minutes", st.Ledger.SealedThrough(streams.Ingest), last)
		}
		time.Sleep(2 * time.Millisecond)
	}
	took := time.Since(start)
	rep.StreamSeconds, rep.StreamLeavesPerSec = took.Seconds(), float64(n)/took.Seconds()
	// The verdicts must be in before the seal phase counts its leaves.
	for size() < size0+2*uint64(n) {
		if time.Since(start) > 5*time.Minute {
			return fmt.Errorf("stream: the log reached %d leaves of %d in 5 minutes", size()-size0, 2*n)
		}
		time.Sleep(2 * time.Millisecond)
	}
	took = time.Since(start)
	rep.StreamAllSeconds, rep.StreamAllLeavesPerSec = took.Seconds(), float64(2*n)/took.Seconds()
	cpu := benchPhase{Events: n}
	cpu.addCPU(cpu0, readCPU())
	rep.StreamCPUUsPerEvent, rep.StreamOtherCPUPct = cpu.CPUUsPerEvent, cpu.OtherCPUPct
	return nil
}

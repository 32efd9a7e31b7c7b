package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// The goals for ingest, reported (not enforced) by every run.
const (
	goalBatchVsRaw  = 0.6 // batch ingest ≥ 0.6× raw JetStream publish
	goalSingleP99Ms = 5.0 // single-event p99 ≤ 5 ms
)

// benchRawTenant is where the raw phase publishes, so that its messages
// land on the real INGEST subjects without touching the HTTP phases'
// tenant.
const benchRawTenant = "bench-raw"

const benchUsage = `usage: vigil bench ingest|otlp|decide|freshness|ledger|notify [flags]   (vigil bench <path> --help lists each path's flags)`

// benchConfig is what one `vigil bench ingest` run does.
type benchConfig struct {
	Events           int `json:"events"`
	Concurrency      int `json:"concurrency"`
	Batch            int `json:"batch"`
	BatchConcurrency int `json:"batchConcurrency"`
	Warmup           int `json:"warmup"`
	// PublishConns is ingest's Config.PublishConns: the NATS connections
	// its receivers publish on.
	PublishConns int `json:"publishConns"`
	// NATS is how the embedded server admits the services (auth, tls or
	// open), to measure what authentication and TLS cost.
	NATS NATSSecurity `json:"nats"`
}

// benchPhase is the outcome of one phase. Latencies are per HTTP request
// (one event for single, one batch for batch); the raw phase has none.
type benchPhase struct {
	Name         string  `json:"name"`
	Events       int     `json:"events"`
	Requests     int     `json:"requests"`
	Concurrency  int     `json:"concurrency"`
	Errors       int     `json:"errors"`
	FirstError   string  `json:"firstError,omitempty"`
	Seconds      float64 `json:"seconds"`
	EventsPerSec float64 `json:"eventsPerSec"`
	P50Ms        float64 `json:"p50Ms,omitempty"`
	P99Ms        float64 `json:"p99Ms,omitempty"`
	MaxMs        float64 `json:"maxMs,omitempty"`
	// CPUUsPerEvent is the CPU time this process (clients, HTTP server,
	// ingest and the embedded NATS server together) spent per event: a
	// cost figure that, unlike events/s, barely moves when other
	// processes compete for the CPUs. OtherCPUPct is how busy everything
	// else kept the machine meanwhile, in percent of all its CPUs; runs
	// with more than a few percent measure the neighbours too. Both come
	// from /proc and are absent where it is not available.
	CPUUsPerEvent float64  `json:"cpuUsPerEvent,omitempty"`
	OtherCPUPct   *float64 `json:"otherCpuPct,omitempty"`
}

type benchGoal struct {
	Goal   string  `json:"goal"`
	Actual float64 `json:"actual"`
	Unit   string  `json:"unit"`
	Met    bool    `json:"met"`
}

type benchMachine struct {
	GOOS       string `json:"goos"`
	GOARCH     string `json:"goarch"`
	NumCPU     int    `json:"numCpu"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	GoVersion  string `json:"goVersion"`
}

// benchReport is the whole result; --json prints it as is.
type benchReport struct {
	Machine benchMachine `json:"machine"`
	Config  benchConfig  `json:"config"`
	// AvgPayloadBytes and AvgEventBytes describe the generated events.
	AvgPayloadBytes int          `json:"avgPayloadBytes"`
	AvgEventBytes   int          `json:"avgEventBytes"`
	Single          benchPhase   `json:"single"`
	Batch           benchPhase   `json:"batch"`
	Raw             benchPhase   `json:"raw"`
	BatchVsRaw      float64      `json:"batchVsRaw"`
	SingleVsRaw     float64      `json:"singleVsRaw"`
	Goals           []benchGoal  `json:"goals"`
	Stored          benchStorage `json:"stored"`
	// PeakRSSMiB is this process's peak resident set (VmHWM): the stack,
	// the clients and the generated events together.
	PeakRSSMiB float64 `json:"peakRssMiB"`
}

// benchStorage checks that every acknowledged event is in INGEST, once.
type benchStorage struct {
	Expected uint64 `json:"expected"`
	Messages uint64 `json:"messages"`
}

func runBench(ctx context.Context, args []string, out io.Writer) error {
	if len(args) > 0 && (args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
		fmt.Fprintln(out, benchUsage)
		return flag.ErrHelp
	}
	if len(args) > 0 && args[0] == "decide" {
		return runBenchDecide(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "freshness" {
		return runBenchFreshness(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "notify" {
		return runBenchNotify(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "ledger" {
		return runBenchLedger(ctx, args[1:], out)
	}
	if len(args) > 0 && args[0] == "otlp" {
		return runBenchOTLP(ctx, args[1:], out)
	}
	if len(args) == 0 || args[0] != "ingest" {
		return errors.New(benchUsage)
	}
	fs := config.New("vigil bench ingest", `Measure ingest end to end on this machine: an in-process Vigil (embedded NATS,
no ClickHouse) serving HTTP on loopback. Three phases of --events events each:
"single" POSTs one event per request to /v1/events, "batch" POSTs --batch
events per request to /v1/events/batch, and "raw" publishes the same records
straight to JetStream (async, with dedupe ids) as the ceiling. Every event
is durably acknowledged by JetStream before it counts.`)
	var cfg benchConfig
	fs.IntVar(&cfg.Events, "events", 20000, "events per phase")
	fs.IntVar(&cfg.Concurrency, "concurrency", 32, "concurrent clients in the single-event phase")
	fs.IntVar(&cfg.Batch, "batch", 100, "events per request in the batch phase")
	fs.IntVar(&cfg.BatchConcurrency, "batch-concurrency", 8, "concurrent clients in the batch phase")
	fs.IntVar(&cfg.Warmup, "warmup", -1, "single events sent before measuring (-1: events/10, at most 1000)")
	fs.IntVar(&cfg.PublishConns, "publish-conns", ingest.DefaultPublishConns, "NATS connections ingest's receivers publish on (its Config.PublishConns)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	natsSec := fs.String("nats", "", string(NATSAuth), "how NATS admits the services: auth (NKeys, as deployed), tls (NKeys over TLS) or open (no auth, to measure its cost)")
	dataDir := fs.String("data-dir", "", "", "directory for the embedded NATS store; empty: a temporary one, removed afterwards")
	logLevel := fs.String("log-level", "", "warn", "log level of the in-process services")
	cpuProfile := fs.String("cpuprofile", "", "", "write a CPU profile of the measured phases to this file")
	blockProfile := fs.String("blockprofile", "", "", "write a blocking profile of the measured phases to this file")
	mutexProfile := fs.String("mutexprofile", "", "", "write a mutex contention profile of the measured phases to this file")
	profPhase := fs.String("profile-phase", "", "", "profile only this phase (single, batch or raw); empty: all three")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), benchUsage)
	}
	if cfg.Warmup < 0 {
		cfg.Warmup = min(cfg.Events/10, 1000)
	}
	var err error
	if cfg.NATS, err = ParseNATSSecurity(*natsSec); err != nil {
		return fmt.Errorf("--nats: %w", err)
	}
	ic := ingest.DefaultConfig()
	ic.PublishConns = cfg.PublishConns
	switch {
	case cfg.Events < 1:
		return errors.New("--events must be at least 1")
	case cfg.Concurrency < 1 || cfg.BatchConcurrency < 1:
		return errors.New("--concurrency and --batch-concurrency must be at least 1")
	case cfg.Batch < 1 || cfg.Batch > ic.MaxBatch:
		return fmt.Errorf("--batch must be 1-%d (ingest's MaxBatch)", ic.MaxBatch)
	case *profPhase != "" && *profPhase != "single" && *profPhase != "batch" && *profPhase != "raw":
		return errors.New("--profile-phase must be single, batch or raw (or empty for all)")
	}
	log, err := daemon.Logger(*logLevel, "text")
	if err != nil {
		return err
	}

	rep, err := benchIngest(ctx, cfg, ic, *dataDir, benchProfiles{*cpuProfile, *blockProfile, *mutexProfile, *profPhase}, log)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := benchJSON(out, rep); err != nil {
			return err
		}
	} else {
		printBenchReport(out, rep)
	}
	// A run where anything failed measured something else than ingest:
	// say so with the exit status. Unmet goals are only reported.
	if n := rep.Single.Errors + rep.Batch.Errors + rep.Raw.Errors; n > 0 {
		return fmt.Errorf("bench: %d requests or publishes failed (first: %s)", n,
			benchFirstNonEmpty(rep.Single.FirstError, rep.Batch.FirstError, rep.Raw.FirstError))
	}
	if rep.Stored.Messages != rep.Stored.Expected {
		return fmt.Errorf("bench: INGEST holds %d messages, want %d", rep.Stored.Messages, rep.Stored.Expected)
	}
	return nil
}

// benchProfiles names the files the measured phases are profiled to, and
// the one phase profiled (phase; "": all three), so that a profile of the
// batch phase is not mixed with the single events' syscalls.
type benchProfiles struct{ cpu, block, mutex, phase string }

func benchIngest(ctx context.Context, cfg benchConfig, ic ingest.Config, dataDir string, prof benchProfiles, log *slog.Logger) (*benchReport, error) {
	st, c, done, err := startIngestBench(ctx, cfg.NATS, ic, dataDir, log)
	if err != nil {
		return nil, err
	}
	defer done()

	rep := &benchReport{
		Machine: benchMachine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(),
			GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()},
		Config: cfg,
	}
	gen := newBenchGen()

	// Warm up: open the keep-alive connections, fill the catalog, let
	// the stream's file store create its first block.
	if cfg.Warmup > 0 {
		ph, err := c.single(ctx, "warmup", gen.events(cfg.Warmup), cfg.Concurrency)
		if err != nil {
			return nil, err
		}
		if ph.Errors > 0 {
			return nil, fmt.Errorf("bench: warm-up failed: %s", ph.FirstError)
		}
	}

	// Generate every event first, so that neither generation nor the
	// garbage it leaves is measured.
	single, batch, raw := gen.events(cfg.Events), gen.events(cfg.Events), gen.events(cfg.Events)
	rep.AvgPayloadBytes, rep.AvgEventBytes = gen.avgSizes()

	stopProfiles := func() error { return nil }
	defer func() { _ = stopProfiles() }()
	for _, ph := range []struct {
		name string
		dst  *benchPhase
		run  func() (benchPhase, error)
	}{
		{"single", &rep.Single, func() (benchPhase, error) { return c.single(ctx, "single", single, cfg.Concurrency) }},
		{"batch", &rep.Batch, func() (benchPhase, error) { return c.batch(ctx, batch, cfg.Batch, cfg.BatchConcurrency) }},
		{"raw", &rep.Raw, func() (benchPhase, error) { return benchRaw(ctx, st, raw, log) }},
	} {
		runtime.GC()
		profiled := prof.phase == "" || prof.phase == ph.name
		if profiled && (prof.phase != "" || ph.name == "single") {
			if stopProfiles, err = startProfiles(prof.cpu, prof.block, prof.mutex); err != nil {
				return nil, err
			}
		}
		before := readCPU()
		p, err := ph.run()
		if err != nil {
			return nil, err
		}
		p.addCPU(before, readCPU())
		*ph.dst = p
		if profiled && (prof.phase != "" || ph.name == "raw") {
			err := stopProfiles()
			stopProfiles = func() error { return nil }
			if err != nil {
				return nil, err
			}
		}
	}
	rep.PeakRSSMiB = peakRSSMiB()

	rep.Stored.Expected = uint64(cfg.Warmup + 3*cfg.Events)
	s, err := st.JS.Stream(ctx, streams.Ingest)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	rep.Stored.Messages = info.State.Msgs

	if rep.Raw.EventsPerSec > 0 {
		rep.BatchVsRaw = rep.Batch.EventsPerSec / rep.Raw.EventsPerSec
		rep.SingleVsRaw = rep.Single.EventsPerSec / rep.Raw.EventsPerSec
	}
	rep.Goals = []benchGoal{
		{Goal: fmt.Sprintf("batch ingest ≥ %.1f× raw", goalBatchVsRaw), Actual: rep.BatchVsRaw, Unit: "×", Met: rep.BatchVsRaw >= goalBatchVsRaw},
		{Goal: fmt.Sprintf("single-event p99 ≤ %g ms", goalSingleP99Ms), Actual: rep.Single.P99Ms, Unit: "ms", Met: rep.Single.P99Ms <= goalSingleP99Ms},
	}
	return rep, nil
}

// startIngestBench starts an in-process Vigil without ClickHouse (the
// receivers and the streams: what ingest benchmarks measure) serving HTTP
// on loopback, and a client holding its bootstrap owner key. done stops
// both and removes a temporary data directory.
func startIngestBench(ctx context.Context, sec NATSSecurity, ic ingest.Config, dataDir string, log *slog.Logger) (_ *Stack, _ *benchClient, done func(), err error) {
	var cleanups []func()
	done = func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	defer func() {
		if err != nil {
			done()
		}
	}()
	if dataDir == "" {
		tmp, err := os.MkdirTemp("", "vigil-bench-")
		if err != nil {
			return nil, nil, nil, err
		}
		cleanups = append(cleanups, func() { os.RemoveAll(tmp) })
		dataDir = tmp
	}
	st, err := StartStack(ctx, StackConfig{
		DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1, NATSSecurity: sec,
		Ingest: ic, API: benchAPIConfig(), Log: log,
	})
	if err != nil {
		return nil, nil, nil, err
	}
	cleanups = append(cleanups, st.Close)
	if st.BootstrapKey == "" {
		return nil, nil, nil, fmt.Errorf("bench: %s already holds API keys; use an empty --data-dir", dataDir)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, nil, nil, err
	}
	srvCtx, stopSrv := context.WithCancel(ctx)
	srvDone := make(chan error, 1)
	go func() { srvDone <- st.Serve(srvCtx, ln) }()
	cleanups = append(cleanups, func() {
		stopSrv()
		if err := <-srvDone; err != nil {
			log.Warn("bench: server shutdown", slog.String("error", err.Error()))
		}
	})
	c := &benchClient{
		base: "http://" + ln.Addr().String(),
		key:  st.BootstrapKey,
		// No Client.Timeout: benchWorkers bounds each request (benchStall).
		http: &http.Client{
			Transport: &http.Transport{
				Proxy:               nil,
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
				MaxIdleConns:        0,
				MaxIdleConnsPerHost: 1024,
				IdleConnTimeout:     90 * time.Second,
				DisableCompression:  true,
			},
		},
	}
	cleanups = append(cleanups, c.http.CloseIdleConnections)
	if err := c.waitHealthy(ctx); err != nil {
		return nil, nil, nil, err
	}
	return st, c, done, nil
}

// benchEvent is one generated event: its JSON as a client sends it, and
// the parts the raw phase needs to build the record ingest would publish.
type benchEvent struct {
	body     []byte
	ev       event.Event
	sourceMS int64
}

// benchGen makes valid, unique events that look like real agent traffic:
// a few agents, each with a handful of sessions, tool calls with ~300 byte
// payloads.
type benchGen struct {
	rng          *rand.Rand
	agents       []string
	sessions     [][]string
	n            int
	payloadBytes int
	eventBytes   int
}

var (
	benchTools      = []string{"web_search", "http_request", "sql_query", "file_read", "send_email", "code_exec", "vector_search", "calendar_create"}
	benchCategories = []string{"tool_api", "tool_api", "tool_api", "llm_call", "data_access", "agent.lifecycle"}
	benchModels     = []string{"gpt-4o-mini", "claude-3-5-sonnet", "llama-3.1-70b"}
	benchHosts      = []string{"api.example.com", "crm.internal.example.net", "search.example.org", "db.prod.example.io"}
	benchStatuses   = []int{200, 200, 200, 200, 200, 201, 204, 400, 404, 429, 500}
)

func newBenchGen() *benchGen {
	g := &benchGen{rng: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x76696769))}
	for a := range 8 {
		id := fmt.Sprintf("agent-%02d.support-bot", a+1)
		g.agents = append(g.agents, id)
		var ss []string
		for s := range 8 {
			ss = append(ss, fmt.Sprintf("sess-%02d-%04d", a+1, s+1))
		}
		g.sessions = append(g.sessions, ss)
	}
	return g
}

// benchPayload is a tool call as an agent SDK reports it.
type benchPayload struct {
	ToolName       string   `json:"toolName"`
	ArgumentsHash  string   `json:"argumentsHash"`
	ResponseStatus int      `json:"responseStatus"`
	DurationMs     int      `json:"durationMs"`
	Model          string   `json:"model"`
	InputTokens    int      `json:"inputTokens"`
	OutputTokens   int      `json:"outputTokens"`
	Target         string   `json:"target"`
	Tags           []string `json:"tags"`
}

func (g *benchGen) events(n int) []benchEvent {
	out := make([]benchEvent, n)
	now := time.Now()
	for i := range out {
		a := g.rng.IntN(len(g.agents))
		var hash [32]byte
		for j := 0; j < len(hash); j += 8 {
			v := g.rng.Uint64()
			for k := range 8 {
				hash[j+k] = byte(v >> (8 * k))
			}
		}
		host := benchHosts[g.rng.IntN(len(benchHosts))]
		payload, err := json.Marshal(benchPayload{
			ToolName:       benchTools[g.rng.IntN(len(benchTools))],
			ArgumentsHash:  fmt.Sprintf("sha256:%x", hash),
			ResponseStatus: benchStatuses[g.rng.IntN(len(benchStatuses))],
			DurationMs:     5 + g.rng.IntN(2000),
			Model:          benchModels[g.rng.IntN(len(benchModels))],
			InputTokens:    g.rng.IntN(4000),
			OutputTokens:   g.rng.IntN(1000),
			Target:         fmt.Sprintf("https://%s/v1/items/%d?expand=owner", host, g.rng.IntN(1_000_000)),
			Tags:           []string{"env:prod", "team:support"},
		})
		if err != nil {
			panic(err) // a fixed struct of strings and ints always encodes
		}
		ts := now.Add(-time.Duration(g.rng.IntN(60_000)) * time.Millisecond).UTC()
		ev := event.Event{
			EventID:         uuid.NewString(),
			AgentID:         g.agents[a],
			SessionID:       g.sessions[a][g.rng.IntN(len(g.sessions[a]))],
			SourceTimestamp: ts.Format(time.RFC3339Nano),
			Category:        benchCategories[g.rng.IntN(len(benchCategories))],
			SchemaVersion:   "1.0",
			Payload:         payload,
		}
		body, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		out[i] = benchEvent{body: body, ev: ev, sourceMS: ts.UnixMilli()}
		g.n++
		g.payloadBytes += len(payload)
		g.eventBytes += len(body)
	}
	return out
}

func (g *benchGen) avgSizes() (payload, event int) {
	if g.n == 0 {
		return 0, 0
	}
	return g.payloadBytes / g.n, g.eventBytes / g.n
}

type benchClient struct {
	base string
	key  string
	http *http.Client
}

func (c *benchClient) waitHealthy(ctx context.Context) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/healthz", nil)
		if err != nil {
			return err
		}
		resp, err := c.http.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: server at %s not healthy after 10s", c.base)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// post sends a JSON body and returns the response body of a 202, or an
// error describing anything else.
func (c *benchClient) post(ctx context.Context, path string, body []byte, buf *bytes.Buffer) ([]byte, error) {
	return c.send(ctx, path, body, http.StatusAccepted, buf, "Content-Type", "application/json")
}

// send POSTs body with the given header pairs and returns the response
// body if the status is want, or an error describing anything else.
func (c *benchClient) send(ctx context.Context, path string, body []byte, want int, buf *bytes.Buffer, header ...string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	req.Header.Set("X-Vigil-Sdk", "vigil-bench/"+version)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(buf.Bytes()))
	}
	return buf.Bytes(), nil
}

// benchRecorder collects the outcome of concurrent requests.
type benchRecorder struct {
	mu       sync.Mutex
	errors   int
	firstErr string
}

func (r *benchRecorder) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.errors++
	if r.firstErr == "" {
		r.firstErr = err.Error()
	}
}

// benchStall bounds one request of a phase: a request still unanswered
// after it cancels the phase (the bound http.Client.Timeout set per
// request before; a per-request timeout costs the client a context and a
// timer on every request, on the cores the server runs on).
const benchStall = 30 * time.Second

// benchWorker is one client goroutine's state: its response buffer and
// the request it reuses (see reuse) with the body it sends.
type benchWorker struct {
	buf  bytes.Buffer
	req  *http.Request
	body []byte
}

// benchWorkers runs n jobs on conc goroutines, timing each; it returns the
// wall time and every job's latency. A job that takes longer than
// benchStall cancels the context the jobs run with.
func benchWorkers(ctx context.Context, n, conc int, job func(ctx context.Context, i int, w *benchWorker) error, rec *benchRecorder) (time.Duration, []time.Duration) {
	lat := make([]time.Duration, n)
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	conc = min(conc, n)
	// When each worker's current job started (UnixNano; 0: between jobs).
	started := make([]atomic.Int64, conc)
	watchdogDone := make(chan struct{})
	defer close(watchdogDone)
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-watchdogDone:
				return
			case now := <-t.C:
				for i := range started {
					if s := started[i].Load(); s != 0 && now.Sub(time.Unix(0, s)) > benchStall {
						cancel(fmt.Errorf("bench: a request took longer than %s", benchStall))
						return
					}
				}
			}
		}
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for k := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var w benchWorker
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				started[k].Store(t0.UnixNano())
				err := job(ctx, i, &w)
				lat[i] = time.Since(t0)
				started[k].Store(0)
				if err != nil {
					if cause := context.Cause(ctx); cause != nil && ctx.Err() != nil {
						err = cause
					}
					rec.fail(err)
				}
			}
		}()
	}
	wg.Wait()
	return time.Since(start), lat
}

// reuse POSTs body to path on the worker's one *http.Request, built on the
// first call and reused once the previous response body is closed (as
// net/http allows): no URL parse, header map or request per event. The
// body reader is new each time: the transport may close the previous one
// after RoundTrip returned.
func (w *benchWorker) reuse(ctx context.Context, c *benchClient, path string, body []byte, want int) ([]byte, error) {
	if w.req == nil || w.req.URL.Path != path {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header = http.Header{
			"Authorization": {"Bearer " + c.key},
			"Content-Type":  {"application/json"},
			"X-Vigil-Sdk":   {"vigil-bench/" + version},
		}
		// For a retry on a reused connection that turned out closed.
		req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(w.body)), nil }
		w.req = req
	}
	w.body = body
	w.req.ContentLength = int64(len(body))
	w.req.Body = io.NopCloser(bytes.NewReader(body))
	resp, err := c.http.Do(w.req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	w.buf.Reset()
	if _, err := w.buf.ReadFrom(resp.Body); err != nil {
		return nil, err
	}
	if resp.StatusCode != want {
		return nil, fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, bytes.TrimSpace(w.buf.Bytes()))
	}
	return w.buf.Bytes(), nil
}

var benchAcceptedMarker = []byte(`"status":"accepted"`)

func (c *benchClient) single(ctx context.Context, name string, evs []benchEvent, conc int) (benchPhase, error) {
	var rec benchRecorder
	took, lat := benchWorkers(ctx, len(evs), conc, func(ctx context.Context, i int, w *benchWorker) error {
		body, err := w.reuse(ctx, c, "/v1/events", evs[i].body, http.StatusAccepted)
		if err == nil && !bytes.Contains(body, benchAcceptedMarker) {
			err = fmt.Errorf("/v1/events: not accepted: %s", body)
		}
		return err
	}, &rec)
	if err := ctx.Err(); err != nil {
		return benchPhase{}, err
	}
	return newBenchPhase(name, len(evs), len(evs), conc, took, lat, &rec), nil
}

func (c *benchClient) batch(ctx context.Context, evs []benchEvent, size, conc int) (benchPhase, error) {
	var bodies [][]byte
	for lo := 0; lo < len(evs); lo += size {
		bodies = append(bodies, batchBody(evs[lo:min(lo+size, len(evs))]))
	}
	var rec benchRecorder
	took, lat := benchWorkers(ctx, len(bodies), conc, func(ctx context.Context, i int, w *benchWorker) error {
		body, err := c.post(ctx, "/v1/events/batch", bodies[i], &w.buf)
		if err != nil {
			return err
		}
		want := min(size, len(evs)-i*size)
		// The summary leads the response; matching it saves decoding
		// every per-event result on the cores the server runs on.
		if bytes.HasPrefix(body, fmt.Appendf(nil, `{"accepted":%d,"duplicates":0,"rejected":0,"failed":0,`, want)) {
			return nil
		}
		var r struct{ Accepted, Duplicates, Rejected, Failed int }
		if err := json.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("/v1/events/batch: %w", err)
		}
		if r.Accepted != want || r.Duplicates+r.Rejected+r.Failed > 0 {
			return fmt.Errorf("/v1/events/batch: %d of %d accepted (%d duplicates, %d rejected, %d failed)",
				r.Accepted, want, r.Duplicates, r.Rejected, r.Failed)
		}
		return nil
	}, &rec)
	if err := ctx.Err(); err != nil {
		return benchPhase{}, err
	}
	return newBenchPhase("batch", len(evs), len(bodies), conc, took, lat, &rec), nil
}

// benchRaw publishes the records ingest would publish for evs, through a
// connection of its own with the same async window ingest's has, and
// waits for every ack: the ceiling the HTTP path is compared with.
func benchRaw(ctx context.Context, st *Stack, evs []benchEvent, log *slog.Logger) (benchPhase, error) {
	nc, js, err := st.Connect(streams.ServiceIngest, "vigil-bench-raw", log)
	if err != nil {
		return benchPhase{}, err
	}
	defer nc.Close()
	now := time.Now()
	msgs := make([]*nats.Msg, len(evs))
	for i, e := range evs {
		data, err := json.Marshal(event.Record{Tenant: benchRawTenant, Event: e.ev, SourceMS: e.sourceMS,
			ReceivedMS: now.UnixMilli(), Client: event.Client{SDK: "vigil-bench/" + version}, KeyID: "bench"})
		if err != nil {
			return benchPhase{}, err
		}
		m := nats.NewMsg(streams.EventReceivedSubject(benchRawTenant, e.ev.AgentID))
		m.Data = data
		m.Header.Set(jetstream.MsgIDHeader, benchRawTenant+":"+e.ev.EventID)
		msgs[i] = m
	}

	var rec benchRecorder
	futures := make([]jetstream.PubAckFuture, len(msgs))
	start := time.Now()
	for i, m := range msgs {
		if futures[i], err = js.PublishMsgAsync(m, jetstream.WithStallWait(30*time.Second)); err != nil {
			rec.fail(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(60 * time.Second):
		return benchPhase{}, errors.New("bench: raw publishes not acknowledged after 60s")
	case <-ctx.Done():
		return benchPhase{}, ctx.Err()
	}
	took := time.Since(start)
	for _, f := range futures {
		if f == nil {
			continue
		}
		select {
		case ack := <-f.Ok():
			if ack.Duplicate {
				rec.fail(errors.New("raw publish reported a duplicate"))
			}
		case err := <-f.Err():
			rec.fail(err)
		default:
			rec.fail(errors.New("raw publish: no ack"))
		}
	}
	return newBenchPhase("raw", len(evs), 0, 1, took, nil, &rec), nil
}

func newBenchPhase(name string, events, requests, conc int, took time.Duration, lat []time.Duration, rec *benchRecorder) benchPhase {
	p := benchPhase{
		Name: name, Events: events, Requests: requests, Concurrency: conc,
		Errors: rec.errors, FirstError: rec.firstErr,
		Seconds: took.Seconds(), EventsPerSec: float64(events) / took.Seconds(),
	}
	if len(lat) > 0 {
		slices.Sort(lat)
		p.P50Ms, p.P99Ms, p.MaxMs = benchMs(benchPercentile(lat, 0.50)), benchMs(benchPercentile(lat, 0.99)), benchMs(lat[len(lat)-1])
	}
	return p
}

// cpuSample is CPU time in clock ticks, read from /proc (Linux).
type cpuSample struct {
	ok              bool
	self, busy, all uint64
}

// clockTicks is USER_HZ, the unit of /proc's CPU times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

func readCPU() cpuSample {
	self, ok := statCPUTicks("/proc/self/stat")
	if !ok {
		return cpuSample{}
	}
	machine, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuSample{}
	}
	line, _, _ := strings.Cut(string(machine), "\n")
	cpu := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal ...
	if len(cpu) < 9 || cpu[0] != "cpu" {
		return cpuSample{}
	}
	var s cpuSample
	num := func(v string) uint64 {
		n, perr := strconv.ParseUint(v, 10, 64)
		if perr != nil {
			err = perr
		}
		return n
	}
	s.self = self
	for i, v := range cpu[1:9] {
		n := num(v)
		s.all += n
		if i != 3 && i != 4 { // idle, iowait
			s.busy += n
		}
	}
	s.ok = err == nil && s.all > 0
	return s
}

// statCPUTicks is the CPU time (user and system, in clock ticks) in a
// process's stat file (/proc/self/stat, /proc/PID/stat), or false where
// /proc does not say.
func statCPUTicks(path string) (uint64, bool) {
	f := statFields(path)
	if len(f) < 13 {
		return 0, false
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	return u + s, err1 == nil && err2 == nil
}

// procNice is process pid's niceness, read from /proc/PID/stat.
func procNice(pid int) (int, bool) {
	f := statFields(fmt.Sprintf("/proc/%d/stat", pid))
	if len(f) < 17 {
		return 0, false
	}
	n, err := strconv.Atoi(f[16])
	return n, err == nil
}

// statFields are the fields of a /proc stat file after the command
// name, which may hold spaces: f[0] is field 3 (state), utime 14 is
// f[11], stime f[12], nice 19 f[16]; nil if it cannot be read.
func statFields(path string) []string {
	stat, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	return strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
}

func (p *benchPhase) addCPU(a, b cpuSample) {
	if !a.ok || !b.ok || b.all <= a.all {
		return
	}
	self := float64(b.self - a.self)
	p.CPUUsPerEvent = self / clockTicks * 1e6 / float64(p.Events)
	other := 100 * max(0, float64(b.busy-a.busy)-self) / float64(b.all-a.all)
	p.OtherCPUPct = &other
}

// benchPercentile is the nearest-rank percentile of sorted latencies.
func benchPercentile(sorted []time.Duration, p float64) time.Duration {
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func benchMs(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func printBenchReport(out io.Writer, r *benchReport) {
	m := r.Machine
	fmt.Fprintf(out, "vigil bench ingest: %d events per phase, %d CPUs (GOMAXPROCS %d), %s %s/%s\n",
		r.Config.Events, m.NumCPU, m.GOMAXPROCS, m.GoVersion, m.GOOS, m.GOARCH)
	fmt.Fprintf(out, "events ≈ %d B (payload ≈ %d B), 8 agents × 8 sessions; acked by embedded JetStream (file store, NATS %s); %d warm-up events\n\n",
		r.AvgEventBytes, r.AvgPayloadBytes, r.Config.NATS, r.Config.Warmup)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "phase\tclients\trequests\tevents\tevents/s\tp50 ms\tp99 ms\tmax ms\terrors\tcpu µs/event\tother cpu\t")
	for _, p := range []benchPhase{r.Single, r.Batch, r.Raw} {
		clients, reqs, p50, p99, mx := fmt.Sprint(p.Concurrency), fmt.Sprint(p.Requests), fmt.Sprintf("%.2f", p.P50Ms), fmt.Sprintf("%.2f", p.P99Ms), fmt.Sprintf("%.2f", p.MaxMs)
		if p.Name == "raw" {
			clients, reqs, p50, p99, mx = "async", "-", "-", "-", "-"
		}
		cpu, other := "-", "-"
		if p.OtherCPUPct != nil {
			cpu, other = fmt.Sprintf("%.1f", p.CPUUsPerEvent), fmt.Sprintf("%.0f%%", *p.OtherCPUPct)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.0f\t%s\t%s\t%s\t%d\t%s\t%s\t\n", p.Name, clients, reqs, p.Events, p.EventsPerSec, p50, p99, mx, p.Errors, cpu, other)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nbatch/raw   %.2f×\nsingle/raw  %.2f×\n", r.BatchVsRaw, r.SingleVsRaw)
	fmt.Fprintf(out, "stored      %d of %d events in INGEST\n", r.Stored.Messages, r.Stored.Expected)
	fmt.Fprintf(out, "peak RSS    %.0f MiB (this process: stack, clients and generated events)\n\ngoals (informational):\n", r.PeakRSSMiB)
	for _, g := range r.Goals {
		met := "met"
		if !g.Met {
			met = "NOT met"
		}
		actual := fmt.Sprintf("%.2f%s", g.Actual, g.Unit)
		if g.Unit == "ms" {
			actual = fmt.Sprintf("%.2f ms", g.Actual)
		}
		fmt.Fprintf(out, "  %-28s %-10s %s\n", g.Goal, actual, met)
	}
	for _, p := range []benchPhase{r.Single, r.Batch, r.Raw} {
		if p.FirstError != "" {
			fmt.Fprintf(out, "\n%s: first error: %s", p.Name, strings.TrimSpace(p.FirstError))
		}
	}
}

func benchFirstNonEmpty(ss ...string) string {
	for _, s := range ss {
		if s != "" {
			return s
		}
	}
	return ""
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// decideReport is what `vigil bench decide` measures.
type decideReport struct {
	Rules        int            `json:"rules"`
	Budgets      int            `json:"budgets"`
	TargetRate   int            `json:"targetRatePerSec"`
	Requests     int            `json:"requests"`
	Errors       int            `json:"errors"`
	FirstError   string         `json:"firstError,omitempty"`
	AchievedRate float64        `json:"achievedRatePerSec"`
	P50Ms        float64        `json:"p50Ms"`
	P90Ms        float64        `json:"p90Ms"`
	P99Ms        float64        `json:"p99Ms"`
	MaxMs        float64        `json:"maxMs"`
	InProcessUs  float64        `json:"inProcessEvaluateUs"`
	GoalP99Ms    float64        `json:"goalP99Ms"`
	GoalP99Met   bool           `json:"goalP99Met"`
	Outcomes     map[string]int `json:"outcomes"`
	// The floor is the same load against a handler that only evaluates
	// the pack (no NATS, no recording), measured in the same run; the
	// ratios are Vigil's percentiles over the floor's.
	FloorP50Ms float64 `json:"floorP50Ms"`
	FloorP99Ms float64 `json:"floorP99Ms"`
	FloorMaxMs float64 `json:"floorMaxMs"`
	P50VsFloor float64 `json:"p50VsFloor"`
	P99VsFloor float64 `json:"p99VsFloor"`
	// PeakRSSMiB is this process's peak resident set (VmHWM).
	PeakRSSMiB float64 `json:"peakRssMiB"`
	// Apart is the second process of --apart, nil without it.
	Apart *apartReport `json:"apart,omitempty"`
	// OPA is OPA's server under the same load (--opa), in the same run.
	OPA *opaReport `json:"opa,omitempty"`
	// CPUUsPerDecision is this process's CPU time (load generator and
	// the whole stack with its consumers) over a phase per request
	// answered, for Vigil and for the floor; OtherCPUPct is how busy
	// the rest of the machine was during Vigil's phase (see benchPhase).
	CPUUsPerDecision      float64  `json:"cpuUsPerDecision,omitempty"`
	FloorCPUUsPerDecision float64  `json:"floorCpuUsPerDecision,omitempty"`
	OtherCPUPct           *float64 `json:"otherCpuPct,omitempty"`
	// PriorityGate says whether the fan-out consumers gave way to
	// decisions in flight (pkg/priority); Yielded counts the units of
	// their work that gave way in the Vigil phase.
	PriorityGate bool   `json:"priorityGate"`
	Yielded      uint64 `json:"backgroundYielded"`
	// GCCycles are the garbage collections during the Vigil phase and
	// AllocKiBPerDecision what the process allocated meanwhile per
	// request: each cycle's mark adds a core's worth of demand for tens
	// of ms, which on a small box is when stalls begin.
	GCCycles            uint64  `json:"gcCycles"`
	AllocKiBPerDecision float64 `json:"allocKiBPerDecision"`
	// MinorFaultsPerDecision are the page faults the process took over
	// the Vigil phase (getrusage minflt: memory touched for the first
	// time, or again after the runtime returned it) per request. Each
	// is kernel time on the thread that touched the page; in a
	// Firecracker/PVM guest about 15 µs per 4 KiB page, so a fresh
	// 2 MiB buffer costs ~7 ms of the goroutine that fills it.
	MinorFaultsPerDecision float64 `json:"minorFaultsPerDecision"`
	// WarmupS is how long the same load ran against Vigil, unmeasured,
	// before its phase (--warmup).
	WarmupS float64 `json:"warmupS,omitempty"`
	// WatchedCPUUsPerDecision is --watch-pid's CPU over the Vigil phase
	// per request answered.
	WatchedPID              int      `json:"watchedPid,omitempty"`
	WatchedCPUUsPerDecision *float64 `json:"watchedCpuUsPerDecision,omitempty"`
	// NATSOutMsgsPerDecision is what the embedded NATS server sent its
	// clients over the Vigil phase (varz out_msgs: deliveries to
	// consumers, request replies, publish acks) per request answered:
	// each one the server copies and sends and a client parses.
	NATSOutMsgsPerDecision float64 `json:"natsOutMsgsPerDecision,omitempty"`
	// Timeline is the Vigil phase's latency by scheduled start (--timeline).
	Timeline []timelineBucket `json:"timeline,omitempty"`
}

// benchPolicy is a pack of n rules that each test the tool name and an
// argument, the shape the policy issue's goal is stated for.
func benchPolicy(n int) string {
	var b strings.Builder
	b.WriteString("id: bench\nname: bench\nrules:\n")
	for _, r := range benchRules(n) {
		fmt.Fprintf(&b, "  - id: %s\n    when: action.tool == %q && context.amount > %d\n    outcome: %s\n", r.ID, r.Tool, r.Min, r.Outcome)
	}
	return b.String()
}

// benchBudgets cover every decision of the bench and are never reached,
// so each decision pays for counting (two increments) and reading (one).
var benchBudgets = []map[string]any{
	{"name": "calls", "scope": "tenant", "metric": "actions", "window": "1d", "limit": 1e12, "outcome": "block"},
	{"name": "agent_calls", "scope": "agent", "metric": "tool_calls", "window": "1h", "limit": 1e12, "outcome": "require_approval"},
	{"name": "agent_tokens", "scope": "agent", "metric": "tokens", "window": "1d", "limit": 1e12, "outcome": "warn"},
}

func runBenchDecide(ctx context.Context, args []string, out io.Writer) error {
	return benchDecideWith(ctx, args, out)
}

// benchDecideWith is `vigil bench decide`; binArgs come before `dev` when it
// starts a process (--apart; a test binary's subprocess mode).
func benchDecideWith(ctx context.Context, args []string, out io.Writer, binArgs ...string) error {
	fs := config.New("vigil bench decide", `Measure POST /v1/decisions.evaluate end to end on this machine: an
in-process Vigil (embedded NATS, ClickHouse for projections) with a pack of
--rules rules, driven open-loop at --rate requests per second for
--duration. Latency is measured from each request's scheduled start, so a
stall counts against every request it delays (no coordinated omission).
First the same load runs against a floor: a loopback handler that only
decodes the body, evaluates the same pack and answers; Vigil's p50 and
p99 are reported as ratios of the floor's.`)
	rate := fs.Int("rate", "", 1000, "requests per second")
	duration := fs.Duration("duration", "", 10*time.Second, "how long to drive load")
	nRules := fs.Int("rules", "", 100, "rules in the pack")
	nBudgets := fs.Int("budgets", "", 0, "budgets covering every decision, 0 to 3 (a tenant actions budget, per-agent tool_calls, per-agent tokens), with limits never reached: the cost of counting")
	conns := fs.Int("connections", "", 64, "client connections")
	dsn := fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil_bench", "ClickHouse for the projections")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	natsSec := fs.String("nats", "", string(NATSAuth), "how NATS admits the services: auth (NKeys, as deployed), tls (NKeys over TLS) or open (no auth, to measure its cost)")
	cpuProfile := fs.String("cpuprofile", "", "", "write a CPU profile of the Vigil phase to this file")
	blockProfile := fs.String("blockprofile", "", "", "write a blocking profile of the Vigil phase to this file")
	mutexProfile := fs.String("mutexprofile", "", "", "write a mutex contention profile of the Vigil phase to this file")
	opaBin := fs.String("opa", "", "", "also drive this opa binary's server (scripts/opa.sh builds one) with the pack in Rego, after the floor")
	tracePath := fs.String("trace", "", "", "write an execution trace of the Vigil phase to this file (go tool trace); each request is a region \"decide\"")
	stallTrace := fs.String("stall-trace", "", "", "keep the last seconds of execution trace in a flight recorder during the Vigil phase and write the window around the slowest request to this file")
	stallMin := fs.Duration("stall-min", "", 10*time.Millisecond, "with --stall-trace, snapshot only requests slower than this")
	memProfile := fs.String("memprofile", "", "", "write a heap profile of this process as the Vigil phase ends to this file (inuse_space: what each GC must mark; alloc_space: what makes GCs come), and one as it starts to FILE.base (go tool pprof -base FILE.base FILE: what the phase allocated)")
	watchPID := fs.Int("watch-pid", "", 0, "also report this process's CPU per decision over the Vigil phase (e.g. clickhouse-server on the same box: what the stack's inserts and their merges cost it)")
	timeline := fs.Duration("timeline", "", 0, "print the Vigil phase's latency by scheduled start in buckets of this width (e.g. 100ms), to show when stalls happen and how often")
	warmup := fs.Duration("warmup", "", 0, "drive the same load against Vigil this long, unmeasured, before its phase: the heap, the streams' caches and the sinks' buffers reach their working size first (a short phase otherwise pays their first page faults)")
	gate := fs.Bool("priority-gate", false, "let the consumers that fan decisions out give way to decisions in flight (pkg/priority, off in vigil dev)")
	apartList := fs.String("apart", "", "", "run these services (comma-separated: guardian, risk, ledger, notifier, ingest) in a second `vigil dev` process on the same NATS and ClickHouse, as compose and Kubernetes deploy them, instead of in this one; api and policy, the decision path, stay here")
	apartNice := fs.Int("apart-nice", "", 0, "with --apart, the niceness of that process (0 to 19): the scheduling weight a deployment gives background services")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *apartNice < 0 || *apartNice > 19 {
		return errors.New("--apart-nice must be between 0 and 19")
	}
	apart, err := apartServices(*apartList)
	if err != nil {
		return fmt.Errorf("--apart: %w", err)
	}
	sec, err := ParseNATSSecurity(*natsSec)
	if err != nil {
		return fmt.Errorf("--nats: %w", err)
	}
	if *rate < 1 || *duration <= 0 || *nRules < 1 || *conns < 1 {
		return errors.New("--rate, --duration, --rules and --connections must be positive")
	}
	if *nBudgets < 0 || *nBudgets > len(benchBudgets) {
		return fmt.Errorf("--budgets must be between 0 and %d", len(benchBudgets))
	}
	log, err := daemon.Logger("warn", "text")
	if err != nil {
		return err
	}
	bs, err := startBenchStackApart(ctx, *dsn, "decide", *conns, sec, nil, log, benchApart{services: apart, nice: *apartNice, binArgs: binArgs}, func(c *StackConfig) { c.PriorityGate = *gate })
	if err != nil {
		return err
	}
	defer bs.close()
	apartProc := bs.apart
	client, base, key := bs.client, bs.base, bs.key
	tenant := bs.tenant
	src := benchPolicy(*nRules)
	if err := decidePost(client, base+"/v1/policies", key, "application/yaml", []byte(src), http.StatusCreated); err != nil {
		return fmt.Errorf("create bench policy: %w", err)
	}
	for _, b := range benchBudgets[:*nBudgets] {
		body, _ := json.Marshal(b)
		if err := decidePost(client, base+"/v1/budgets", key, "application/json", body, http.StatusCreated); err != nil {
			return fmt.Errorf("create bench budget: %w", err)
		}
	}

	// The same pack in process, for the engine's own cost.
	comp, err := rules.NewCompiler()
	if err != nil {
		return err
	}
	doc, err := rules.Parse([]byte(src))
	if err != nil {
		return err
	}
	c, err := comp.Compile(doc)
	if err != nil {
		return err
	}
	pack, err := rules.NewPack(tenant, []rules.Versioned{{Version: 1, Compiled: c}}, nil)
	if err != nil {
		return err
	}
	in := rules.Input{Tenant: tenant, Action: rules.Action{Tool: "tool_42"}, Context: map[string]any{"amount": 5000.0}}
	const evals = 200000
	t0 := time.Now()
	for range evals {
		pack.Evaluate(in, rules.OrgPolicy{})
	}
	inProcess := time.Since(t0) / evals

	agents := make([]string, 8)
	for i := range agents {
		agents[i] = fmt.Sprintf("agent-%d", i)
	}
	if err := registerAgentIDs(ctx, bs.st.Store, bs.tenant, "vigil bench decide", agents...); err != nil {
		return err
	}
	bodies := make([][]byte, 256)
	for i := range bodies {
		bodies[i], _ = json.Marshal(map[string]any{"agentId": agents[i%len(agents)], "action": fmt.Sprintf("tool_%d", i%(*nRules)), "context": map[string]any{"amount": (i * 37) % 2000}})
	}
	// Warm up connections and caches.
	for i := range min(200, *rate) {
		_ = decidePost(client, base+"/v1/decisions.evaluate", key, "application/json", bodies[i%len(bodies)], http.StatusOK)
	}

	// The floor: the same load, the same bodies, the same client, against
	// a handler on loopback that only decodes the body, evaluates the
	// same pack and answers: no NATS, no recording, no auth. Vigil's
	// figures divided by the floor's say what the path around the engine
	// costs on this machine at this moment, which absolute figures on a
	// shared box cannot.
	floor, err := startDecideFloor(pack, tenant)
	if err != nil {
		return err
	}
	defer floor.Close()
	for i := range min(200, *rate) {
		_ = decidePost(client, floor.URL+"/v1/decisions.evaluate", key, "application/json", bodies[i%len(bodies)], http.StatusOK)
	}
	cpu0 := readCPU()
	floorRun := decideLoad(client, floor.URL, key, bodies, *rate, *duration, *conns, nil, 0)
	floorCPU := benchPhase{Events: len(floorRun.sorted)}
	floorCPU.addCPU(cpu0, readCPU())
	var opa *opaReport
	if *opaBin != "" {
		if opa, err = benchOPA(ctx, *opaBin, *nRules, pack, tenant, client, bodies, *rate, *duration, *conns, floorRun.outcomes); err != nil {
			return fmt.Errorf("bench decide --opa: %w", err)
		}
	}

	if *warmup > 0 {
		_ = decideLoad(client, base, key, bodies, *rate, *warmup, *conns, nil, 0)
	}
	stopProfiles, err := startProfiles(*cpuProfile, *blockProfile, *mutexProfile)
	if err != nil {
		return err
	}
	if *memProfile != "" {
		// What the phase allocated is this profile's alloc_space less
		// the base's: go tool pprof -base FILE.base FILE.
		if err := writeHeapProfile(*memProfile + ".base"); err != nil {
			return err
		}
	}
	tr, err := startBenchTracer(*tracePath, *stallTrace, *stallMin)
	if err != nil {
		return err
	}
	watch0, watchOK := procCPUTicks(*watchPID)
	apart0, apartOK := apartProc.cpuTicks()
	out0 := natsOutMsgs(bs.st.NATS)
	cpu0 = readCPU()
	gc0 := readGC()
	flt0 := minorFaults()
	yielded0 := bs.st.Gate.Yielded()
	run := decideLoad(client, base, key, bodies, *rate, *duration, *conns, tr, *timeline)
	yielded := bs.st.Gate.Yielded() - yielded0
	vigilCPU := benchPhase{Events: len(run.sorted)}
	vigilCPU.addCPU(cpu0, readCPU())
	gc1 := readGC()
	flt1 := minorFaults()
	watch1, watchOK1 := procCPUTicks(*watchPID)
	apart1, apartOK1 := apartProc.cpuTicks()
	out1 := natsOutMsgs(bs.st.NATS)
	var traced bytes.Buffer
	if err := errors.Join(tr.stop(&traced), stopProfiles()); err != nil {
		return err
	}
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}
	n, errs, firstErr := len(run.sorted), run.errs, run.firstErr
	if floorRun.errs > 0 {
		return fmt.Errorf("bench decide: the floor handler failed %d requests (first: %s)", floorRun.errs, floorRun.firstErr)
	}

	sorted := run.sorted
	rep := decideReport{
		Rules: *nRules, Budgets: *nBudgets, TargetRate: *rate, Requests: n, Errors: errs, FirstError: firstErr,
		AchievedRate: run.achieved,
		P50Ms:        benchMs(benchPercentile(sorted, 0.50)), P90Ms: benchMs(benchPercentile(sorted, 0.90)),
		P99Ms: benchMs(benchPercentile(sorted, 0.99)), MaxMs: benchMs(sorted[len(sorted)-1]),
		InProcessUs: float64(inProcess) / float64(time.Microsecond), GoalP99Ms: 2, Outcomes: run.outcomes,
		FloorP50Ms: benchMs(benchPercentile(floorRun.sorted, 0.50)), FloorP99Ms: benchMs(benchPercentile(floorRun.sorted, 0.99)),
		FloorMaxMs: benchMs(floorRun.sorted[len(floorRun.sorted)-1]),
	}
	rep.P50VsFloor, rep.P99VsFloor = rep.P50Ms/rep.FloorP50Ms, rep.P99Ms/rep.FloorP99Ms
	rep.GoalP99Met = rep.P99Ms <= rep.GoalP99Ms
	rep.PeakRSSMiB = peakRSSMiB()
	rep.PriorityGate, rep.Yielded = *gate, yielded
	rep.GCCycles = gc1.cycles - gc0.cycles
	if *watchPID > 0 && watchOK && watchOK1 {
		us := float64(watch1-watch0) / clockTicks * 1e6 / float64(max(1, n))
		rep.WatchedPID, rep.WatchedCPUUsPerDecision = *watchPID, &us
	}
	if apartProc != nil {
		rep.Apart = &apartReport{Services: apart, PID: apartProc.cmd.Process.Pid}
		rep.Apart.Nice, _ = procNice(rep.Apart.PID)
		if apartOK && apartOK1 {
			rep.Apart.CPUUsPerDecision = float64(apart1-apart0) / clockTicks * 1e6 / float64(max(1, n))
		}
		if rep.Apart.PeakRSSMiB, err = procPeakRSSMiB(rep.Apart.PID); err != nil {
			return err
		}
	}
	rep.AllocKiBPerDecision = float64(gc1.allocBytes-gc0.allocBytes) / 1024 / float64(max(1, n))
	rep.NATSOutMsgsPerDecision = float64(out1-out0) / float64(max(1, n))
	rep.MinorFaultsPerDecision = float64(flt1-min(flt0, flt1)) / float64(max(1, n))
	rep.WarmupS = warmup.Seconds()
	if opa != nil {
		opa.VigilP50VsOPA, opa.VigilP99VsOPA = rep.P50Ms/opa.P50Ms, rep.P99Ms/opa.P99Ms
		rep.OPA = opa
	}
	rep.CPUUsPerDecision, rep.FloorCPUUsPerDecision, rep.OtherCPUPct = vigilCPU.CPUUsPerEvent, floorCPU.CPUUsPerEvent, vigilCPU.OtherCPUPct
	if *timeline > 0 {
		rep.Timeline = run.timeline
	}
	if *asJSON {
		if err := benchJSON(out, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "vigil bench decide: %d-rule pack, %d budgets, %d req/s for %s (%d requests, %d connections)\n", rep.Rules, rep.Budgets, rep.TargetRate, *duration, n, *conns)
		fmt.Fprintf(out, "  achieved        %8.0f req/s\n", rep.AchievedRate)
		fmt.Fprintf(out, "  latency         p50 %.2f ms  p90 %.2f ms  p99 %.2f ms  max %.2f ms\n", rep.P50Ms, rep.P90Ms, rep.P99Ms, rep.MaxMs)
		fmt.Fprintf(out, "  floor           p50 %.2f ms  p99 %.2f ms  max %.2f ms (same load, handler that only evaluates the pack)\n", rep.FloorP50Ms, rep.FloorP99Ms, rep.FloorMaxMs)
		fmt.Fprintf(out, "  vigil / floor   p50 %.1f×  p99 %.1f×\n", rep.P50VsFloor, rep.P99VsFloor)
		if opa != nil {
			fmt.Fprintf(out, "  opa             p50 %.2f ms  p99 %.2f ms  max %.2f ms (same load, the pack in Rego); vigil / opa p50 %.1f×  p99 %.1f×\n", opa.P50Ms, opa.P99Ms, opa.MaxMs, opa.VigilP50VsOPA, opa.VigilP99VsOPA)
		}
		fmt.Fprintf(out, "  in-process      %.2f µs per evaluation (same pack)\n", rep.InProcessUs)
		fmt.Fprintf(out, "  CPU             %.0f µs per decision (floor %.0f; this process, load generator included)\n", rep.CPUUsPerDecision, rep.FloorCPUUsPerDecision)
		if rep.OtherCPUPct != nil {
			fmt.Fprintf(out, "  other CPU       %.0f %% of the machine during Vigil's phase (other processes)\n", *rep.OtherCPUPct)
		}
		if rep.WatchedCPUUsPerDecision != nil {
			fmt.Fprintf(out, "  pid %-11d %.0f µs CPU per decision over Vigil's phase (--watch-pid)\n", rep.WatchedPID, *rep.WatchedCPUUsPerDecision)
		}
		if a := rep.Apart; a != nil {
			fmt.Fprintf(out, "  apart           %s in process %d at nice %d: %.0f µs CPU per decision, peak RSS %.0f MiB\n", strings.Join(a.Services, ","), a.PID, a.Nice, a.CPUUsPerDecision, a.PeakRSSMiB)
		}
		if rep.NATSOutMsgsPerDecision > 0 {
			fmt.Fprintf(out, "  NATS            %.2f messages sent by the server per decision (varz out_msgs)\n", rep.NATSOutMsgsPerDecision)
		}
		fmt.Fprintf(out, "  GC              %d cycles in Vigil's phase, %.1f KiB allocated per decision (whole process)\n", rep.GCCycles, rep.AllocKiBPerDecision)
		fmt.Fprintf(out, "  page faults     %.2f minor faults per decision (whole process)\n", rep.MinorFaultsPerDecision)
		fmt.Fprintf(out, "  peak RSS        %.0f MiB (this process: load generator, floor and the whole stack)\n", rep.PeakRSSMiB)
		fmt.Fprintf(out, "  priority gate   %v (%d background units gave way)\n", rep.PriorityGate, rep.Yielded)
		fmt.Fprintf(out, "  outcomes        %v\n", rep.Outcomes)
		met := "not met"
		if rep.GoalP99Met {
			met = "met"
		}
		fmt.Fprintf(out, "  goal p99 ≤ %.0f ms at %d req/s: %s\n", rep.GoalP99Ms, rep.TargetRate, met)
		if rep.Timeline != nil {
			fmt.Fprintf(out, "  timeline start  %s\n", run.start.Format("15:04:05.000"))
			printTimeline(out, rep.Timeline)
		}
		_, _ = traced.WriteTo(out)
	}
	if errs > 0 {
		return fmt.Errorf("bench decide: %d requests failed (first: %s)", errs, firstErr)
	}
	if !maps.Equal(run.outcomes, floorRun.outcomes) {
		// Same pack, same bodies: a different outcome means the floor
		// measured something else than Vigil.
		return fmt.Errorf("bench decide: the floor's outcomes %v differ from Vigil's %v", floorRun.outcomes, run.outcomes)
	}
	return nil
}

// apartReport is the process that ran some services apart from the
// decision path (--apart): which, at what niceness, and what they cost.
type apartReport struct {
	Services []string `json:"services"`
	// Nice is the niceness the kernel reports for the process.
	Nice             int     `json:"nice"`
	PID              int     `json:"pid"`
	CPUUsPerDecision float64 `json:"cpuUsPerDecision"`
	PeakRSSMiB       float64 `json:"peakRssMiB"`
}

// apartServices reads --apart: the services to run in a second
// process. The decision path, api and policy, cannot go.
func apartServices(list string) ([]string, error) {
	var apart []string
	for _, s := range strings.Split(list, ",") {
		switch s = strings.TrimSpace(s); {
		case s == "" || slices.Contains(apart, s):
		case s == streams.ServiceAPI || s == streams.ServicePolicy:
			return nil, fmt.Errorf("%s is on the decision path this bench measures: it stays in this process", s)
		default:
			apart = append(apart, s)
		}
	}
	_, err := servicesBut(apart)
	return apart, err
}

// decideRun is one open-loop run: latencies sorted, outcomes counted.
type decideRun struct {
	sorted   []time.Duration
	timeline []timelineBucket
	start    time.Time
	outcomes map[string]int
	errs     int
	firstErr string
	achieved float64
}

// decideLoad drives base's /v1/decisions.evaluate open loop at rate for
// duration on conns connections. Each latency counts from the request's
// scheduled start, so a stall counts against every request it delays.
// tr, if not nil, sees every latency as it completes (to snapshot the
// execution trace around the worst) and each request is a trace region.
// With timeline > 0 it samples CPU every timeline from the start.
func decideLoad(client *http.Client, base, key string, bodies [][]byte, rate int, duration time.Duration, conns int, tr *benchTracer, timeline time.Duration) decideRun {
	n := int(duration.Seconds() * float64(rate))
	interval := time.Second / time.Duration(rate)
	lat := make([]time.Duration, n)
	outcomes := make([]string, n)
	var (
		mu  sync.Mutex
		run = decideRun{outcomes: map[string]int{}}
		wg  sync.WaitGroup
	)
	jobs := make(chan int, n)
	start := time.Now()
	run.start = start
	var cpu *cpuTimeline
	if timeline > 0 {
		cpu = startCPUTimeline(start, timeline)
	}
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for i := range jobs {
				scheduled := start.Add(time.Duration(i) * interval)
				if d := time.Until(scheduled); d > 0 {
					time.Sleep(d)
				}
				region := trace.StartRegion(context.Background(), "decide")
				o, err := decideOnce(client, base, key, bodies[i%len(bodies)], &buf)
				region.End()
				lat[i] = time.Since(scheduled)
				tr.observe(scheduled, lat[i])
				outcomes[i] = o
				if err != nil {
					mu.Lock()
					run.errs++
					if run.firstErr == "" {
						run.firstErr = err.Error()
					}
					mu.Unlock()
				}
			}
		}()
	}
	for i := range n {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	run.achieved = float64(n) / time.Since(start).Seconds()
	if timeline > 0 {
		run.timeline = latencyTimeline(lat, interval, timeline)
		cpu.fill(run.timeline)
	}
	slices.Sort(lat)
	run.sorted = lat
	for _, o := range outcomes {
		run.outcomes[o]++
	}
	return run
}

// startDecideFloor serves /v1/decisions.evaluate on loopback with only
// what no implementation can skip: decode the body, evaluate pack, encode
// the answer.
func startDecideFloor(pack *rules.Pack, tenant string) (*decideFloor, error) {
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var b struct {
			AgentID string         `json:"agentId"`
			Action  string         `json:"action"`
			Context map[string]any `json:"context"`
		}
		if err := json.NewDecoder(r.Body).Decode(&b); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d := pack.Evaluate(rules.Input{Tenant: tenant, Action: rules.Action{Kind: "tool_call", Tool: b.Action}, Context: b.Context}, rules.OrgPolicy{})
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"decision": d.Outcome.String(), "reasonCodes": d.ReasonCodes, "matches": d.Matches, "packHash": d.PackHash})
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	return &decideFloor{URL: "http://" + ln.Addr().String(), srv: srv}, nil
}

// decideFloor is the floor's server on loopback.
type decideFloor struct {
	URL string
	srv *http.Server
}

func (f *decideFloor) Close() { _ = f.srv.Close() }

func decideOnce(client *http.Client, base, key string, body []byte, buf *bytes.Buffer) (string, error) {
	req, err := http.NewRequest(http.MethodPost, base+"/v1/decisions.evaluate", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HTTP %d: %s", resp.StatusCode, bytes.TrimSpace(buf.Bytes()))
	}
	var d struct {
		Decision string `json:"decision"`
	}
	_ = json.Unmarshal(buf.Bytes(), &d)
	return d.Decision, nil
}

func decidePost(client *http.Client, url, key, ctype string, body []byte, want int) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+key)
	req.Header.Set("Content-Type", ctype)
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		return fmt.Errorf("HTTP %d: %s", resp.StatusCode, b)
	}
	return nil
}

// natsOutMsgs is how many messages srv has sent its clients (0 without
// an embedded server: a stack on an external NATS).
func natsOutMsgs(srv *server.Server) int64 {
	if srv == nil {
		return 0
	}
	v, err := srv.Varz(nil)
	if err != nil {
		return 0
	}
	return v.OutMsgs
}

// minorFaults is the page faults this process has taken so far that
// needed no I/O (/proc/self/stat minflt, field 10), 0 where /proc does
// not say.
func minorFaults() uint64 {
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	// Fields after the command name, which may hold spaces: state is
	// field 3, minflt 10.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(f) < 8 {
		return 0
	}
	n, _ := strconv.ParseUint(f[7], 10, 64)
	return n
}

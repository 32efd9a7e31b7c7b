package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"runtime"
	"slices"
	"text/tabwriter"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// goalOTLPVsBatch is issue 17's goal: OTLP spans/s ≥ 0.8× batch events/s.
const goalOTLPVsBatch = 0.8

// benchOTLPConfig is what one `vigil bench otlp` run does.
type benchOTLPConfig struct {
	Events      int          `json:"events"`
	Batch       int          `json:"batch"`
	Concurrency int          `json:"concurrency"`
	Rounds      int          `json:"rounds"`
	Gzip        bool         `json:"gzip"`
	Warmup      int          `json:"warmup"`
	NATS        NATSSecurity `json:"nats"`
}

// benchOTLPReport is the result: each round's two phases and the ratio
// of the medians.
type benchOTLPReport struct {
	Machine       benchMachine    `json:"machine"`
	Config        benchOTLPConfig `json:"config"`
	AvgSpanBytes  int             `json:"avgSpanBytes"`
	AvgEventBytes int             `json:"avgEventBytes"`
	Batch         []benchPhase    `json:"batch"`
	OTLP          []benchPhase    `json:"otlp"`
	MedianBatch   float64         `json:"medianBatchEventsPerSec"`
	MedianOTLP    float64         `json:"medianOtlpSpansPerSec"`
	OTLPVsBatch   float64         `json:"otlpVsBatch"`
	RoundRatios   []float64       `json:"roundRatios"`
	Goal          benchGoal       `json:"goal"`
	PeakRSSMiB    float64         `json:"peakRssMiB"`
	Stored        uint64          `json:"stored"`
	Expected      uint64          `json:"expected"`
}

func runBenchOTLP(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil bench otlp", `Measure OTLP trace ingest against batch event ingest in one run: an
in-process Vigil (embedded NATS, no ClickHouse) serving HTTP on loopback.
Each round runs two phases of --events each, alternating: "batch" POSTs
--batch events per request to /v1/events/batch, "otlp" POSTs --batch GenAI
execute_tool spans per request to /v1/traces (OTLP/HTTP protobuf, the
OpenTelemetry exporters' default) carrying the same tool calls. Every event
and span is durably acknowledged by JetStream before it counts. The ratio
compares the medians over the rounds.`)
	var cfg benchOTLPConfig
	fs.IntVar(&cfg.Events, "events", 20000, "events (and spans) per phase")
	fs.IntVar(&cfg.Batch, "batch", 100, "events or spans per request")
	fs.IntVar(&cfg.Concurrency, "concurrency", 8, "concurrent clients in each phase")
	fs.IntVar(&cfg.Rounds, "rounds", 5, "rounds of the two phases (medians are reported)")
	fs.BoolVar(&cfg.Gzip, "gzip", false, "gzip the OTLP bodies (the batch bodies stay plain)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	natsSec := fs.String("nats", "", string(NATSAuth), "how NATS admits the services: auth, tls or open")
	logLevel := fs.String("log-level", "", "warn", "log level of the in-process services")
	cpuProfile := fs.String("cpuprofile", "", "", "write a CPU profile of the last OTLP phase to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), benchUsage)
	}
	ic := ingest.DefaultConfig()
	switch {
	case cfg.Events < 1 || cfg.Rounds < 1 || cfg.Concurrency < 1:
		return errors.New("--events, --rounds and --concurrency must be at least 1")
	case cfg.Batch < 1 || cfg.Batch > ic.MaxBatch:
		return fmt.Errorf("--batch must be 1-%d (ingest's MaxBatch)", ic.MaxBatch)
	}
	var err error
	if cfg.NATS, err = ParseNATSSecurity(*natsSec); err != nil {
		return fmt.Errorf("--nats: %w", err)
	}
	log, err := daemon.Logger(*logLevel, "text")
	if err != nil {
		return err
	}
	rep, err := benchOTLP(ctx, cfg, ic, *cpuProfile, log)
	if err != nil {
		return err
	}
	if *asJSON {
		if err := benchJSON(out, rep); err != nil {
			return err
		}
	} else {
		printBenchOTLPReport(out, rep)
	}
	for _, p := range append(slices.Clone(rep.Batch), rep.OTLP...) {
		if p.Errors > 0 {
			return fmt.Errorf("bench: %s: %d requests failed (first: %s)", p.Name, p.Errors, p.FirstError)
		}
	}
	if rep.Stored != rep.Expected {
		return fmt.Errorf("bench: INGEST holds %d messages, want %d", rep.Stored, rep.Expected)
	}
	return nil
}

func benchOTLP(ctx context.Context, cfg benchOTLPConfig, ic ingest.Config, cpuProfile string, log *slog.Logger) (*benchOTLPReport, error) {
	st, c, done, err := startIngestBench(ctx, cfg.NATS, ic, "", log)
	if err != nil {
		return nil, err
	}
	defer done()
	rep := &benchOTLPReport{
		Machine: benchMachine{GOOS: runtime.GOOS, GOARCH: runtime.GOARCH, NumCPU: runtime.NumCPU(),
			GOMAXPROCS: runtime.GOMAXPROCS(0), GoVersion: runtime.Version()},
		Config: cfg,
	}
	gen := newBenchGen()
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0x6f746c70))
	// Warm up both paths (connections, catalog, the stream's first block).
	cfg.Warmup = min(cfg.Events/10, 1000)
	rep.Config.Warmup = cfg.Warmup
	if cfg.Warmup > 0 {
		for _, run := range []func() (benchPhase, error){
			func() (benchPhase, error) { return c.batch(ctx, gen.events(cfg.Warmup), cfg.Batch, cfg.Concurrency) },
			func() (benchPhase, error) {
				return c.otlp(ctx, otlpBodies(gen.events(cfg.Warmup), cfg.Batch, cfg.Gzip, rng), cfg.Warmup, cfg.Concurrency)
			},
		} {
			ph, err := run()
			if err != nil {
				return nil, err
			}
			if ph.Errors > 0 {
				return nil, fmt.Errorf("bench: warm-up failed: %s", ph.FirstError)
			}
		}
	}
	var spanBytes, eventBytes, spans, events int
	for range cfg.Rounds {
		// Generated before measuring, so neither phase pays for it.
		evs, spanEvs := gen.events(cfg.Events), gen.events(cfg.Events)
		bodies := otlpBodies(spanEvs, cfg.Batch, cfg.Gzip, rng)
		for _, b := range bodies {
			spanBytes += len(b)
		}
		for _, e := range evs {
			eventBytes += len(e.body)
		}
		spans, events = spans+len(spanEvs), events+len(evs)
		for _, ph := range []struct {
			dst *[]benchPhase
			run func() (benchPhase, error)
		}{
			{&rep.Batch, func() (benchPhase, error) { return c.batch(ctx, evs, cfg.Batch, cfg.Concurrency) }},
			{&rep.OTLP, func() (benchPhase, error) {
				if cpuProfile == "" {
					return c.otlp(ctx, bodies, len(spanEvs), cfg.Concurrency)
				}
				stop, err := startProfiles(cpuProfile, "", "")
				if err != nil {
					return benchPhase{}, err
				}
				p, err := c.otlp(ctx, bodies, len(spanEvs), cfg.Concurrency)
				return p, errors.Join(err, stop())
			}},
		} {
			runtime.GC()
			before := readCPU()
			p, err := ph.run()
			if err != nil {
				return nil, err
			}
			p.addCPU(before, readCPU())
			*ph.dst = append(*ph.dst, p)
		}
		last := len(rep.OTLP) - 1
		rep.RoundRatios = append(rep.RoundRatios, rep.OTLP[last].EventsPerSec/rep.Batch[last].EventsPerSec)
	}
	rep.AvgSpanBytes, rep.AvgEventBytes = spanBytes/spans, eventBytes/events
	median := func(ps []benchPhase) float64 {
		v := make([]float64, len(ps))
		for i, p := range ps {
			v[i] = p.EventsPerSec
		}
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	rep.MedianBatch, rep.MedianOTLP = median(rep.Batch), median(rep.OTLP)
	rep.OTLPVsBatch = rep.MedianOTLP / rep.MedianBatch
	rep.Goal = benchGoal{Goal: fmt.Sprintf("OTLP spans/s ≥ %.1f× batch events/s", goalOTLPVsBatch), Actual: rep.OTLPVsBatch, Unit: "×", Met: rep.OTLPVsBatch >= goalOTLPVsBatch}

	rep.Expected = uint64(2*cfg.Warmup + 2*cfg.Rounds*cfg.Events)
	s, err := st.JS.Stream(ctx, streams.Ingest)
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return nil, err
	}
	rep.Stored = info.State.Msgs
	rep.PeakRSSMiB = peakRSSMiB()
	return rep, nil
}

// otlpBodies turns generated events into OTLP export requests of size
// spans each: the same tool calls as GenAI execute_tool spans, one
// resource per agent, the session as gen_ai.conversation.id and each
// session's spans in one trace.
func otlpBodies(evs []benchEvent, size int, zip bool, rng *rand.Rand) [][]byte {
	var out [][]byte
	for lo := 0; lo < len(evs); lo += size {
		byAgent := map[string]*tracev1.ResourceSpans{}
		req := &coltrace.ExportTraceServiceRequest{}
		for _, e := range evs[lo:min(lo+size, len(evs))] {
			rs := byAgent[e.ev.AgentID]
			if rs == nil {
				rs = &tracev1.ResourceSpans{
					Resource: &resourcev1.Resource{Attributes: []*commonv1.KeyValue{
						otlpStr("service.name", "support-bot"), otlpStr("gen_ai.agent.id", e.ev.AgentID), otlpStr("telemetry.sdk.language", "python")}},
					ScopeSpans: []*tracev1.ScopeSpans{{Scope: &commonv1.InstrumentationScope{Name: "opentelemetry.instrumentation.openai_agents", Version: "0.1.0"}}},
				}
				byAgent[e.ev.AgentID] = rs
				req.ResourceSpans = append(req.ResourceSpans, rs)
			}
			var p benchPayload
			if err := json.Unmarshal(e.ev.Payload, &p); err != nil {
				panic(err) // generated by benchGen
			}
			trace := sha256.Sum256([]byte(e.ev.SessionID))
			var sid [8]byte
			for sid == [8]byte{} {
				v := rng.Uint64()
				for k := range 8 {
					sid[k] = byte(v >> (8 * k))
				}
			}
			start := uint64(e.sourceMS) * 1e6
			rs.ScopeSpans[0].Spans = append(rs.ScopeSpans[0].Spans, &tracev1.Span{
				TraceId: trace[:16], SpanId: sid[:], Name: "execute_tool " + p.ToolName, Kind: tracev1.Span_SPAN_KIND_INTERNAL,
				StartTimeUnixNano: start, EndTimeUnixNano: start + uint64(p.DurationMs)*1e6,
				Attributes: []*commonv1.KeyValue{
					otlpStr("gen_ai.operation.name", "execute_tool"), otlpStr("gen_ai.tool.name", p.ToolName),
					otlpStr("gen_ai.tool.call.id", p.ArgumentsHash[7:31]), otlpStr("gen_ai.conversation.id", e.ev.SessionID),
					otlpStr("gen_ai.request.model", p.Model), otlpInt("gen_ai.usage.input_tokens", p.InputTokens),
					otlpInt("gen_ai.usage.output_tokens", p.OutputTokens), otlpStr("url.full", p.Target),
					otlpInt("http.response.status_code", p.ResponseStatus),
				},
				Status: &tracev1.Status{},
			})
		}
		b, err := proto.Marshal(req)
		if err != nil {
			panic(err)
		}
		if zip {
			b = gzipped(b)
		}
		out = append(out, b)
	}
	return out
}

// gzipped is b compressed with gzip.
func gzipped(b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	_, _ = zw.Write(b) // a bytes.Buffer does not fail
	_ = zw.Close()
	return buf.Bytes()
}

func otlpStr(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

func otlpInt(k string, v int) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: int64(v)}}}
}

// otlp sends each body to /v1/traces and requires a 200 whose response
// rejects no span.
func (c *benchClient) otlp(ctx context.Context, bodies [][]byte, spans, conc int) (benchPhase, error) {
	var rec benchRecorder
	gz := len(bodies) > 0 && len(bodies[0]) > 2 && bodies[0][0] == 0x1f && bodies[0][1] == 0x8b
	took, lat := benchWorkers(ctx, len(bodies), conc, func(ctx context.Context, i int, w *benchWorker) error {
		h := []string{"Content-Type", "application/x-protobuf"}
		if gz {
			h = append(h, "Content-Encoding", "gzip")
		}
		body, err := c.send(ctx, "/v1/traces", bodies[i], http.StatusOK, &w.buf, h...)
		if err != nil {
			return err
		}
		var r coltrace.ExportTraceServiceResponse
		if err := proto.Unmarshal(body, &r); err != nil {
			return fmt.Errorf("/v1/traces: %w", err)
		}
		if ps := r.GetPartialSuccess(); ps.GetRejectedSpans() > 0 {
			return fmt.Errorf("/v1/traces: %d spans rejected: %s", ps.GetRejectedSpans(), ps.GetErrorMessage())
		}
		return nil
	}, &rec)
	if err := ctx.Err(); err != nil {
		return benchPhase{}, err
	}
	return newBenchPhase("otlp", spans, len(bodies), conc, took, lat, &rec), nil
}

func printBenchOTLPReport(out io.Writer, r *benchOTLPReport) {
	m := r.Machine
	fmt.Fprintf(out, "vigil bench otlp: %d rounds × (%d batch events + %d OTLP spans), %d per request, %d clients; %d CPUs (GOMAXPROCS %d), %s %s/%s\n",
		r.Config.Rounds, r.Config.Events, r.Config.Events, r.Config.Batch, r.Config.Concurrency, m.NumCPU, m.GOMAXPROCS, m.GoVersion, m.GOOS, m.GOARCH)
	fmt.Fprintf(out, "event ≈ %d B JSON; span ≈ %d B OTLP protobuf (gzip %v); acked by embedded JetStream (file store, NATS %s)\n\n",
		r.AvgEventBytes, r.AvgSpanBytes, r.Config.Gzip, r.Config.NATS)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "round\tphase\trequests\titems\titems/s\tp50 ms\tp99 ms\terrors\tcpu µs/item\tother cpu\t")
	for i := range r.Batch {
		for _, p := range []benchPhase{r.Batch[i], r.OTLP[i]} {
			cpu, other := "-", "-"
			if p.OtherCPUPct != nil {
				cpu, other = fmt.Sprintf("%.1f", p.CPUUsPerEvent), fmt.Sprintf("%.0f%%", *p.OtherCPUPct)
			}
			fmt.Fprintf(tw, "%d\t%s\t%d\t%d\t%.0f\t%.2f\t%.2f\t%d\t%s\t%s\t\n", i+1, p.Name, p.Requests, p.Events, p.EventsPerSec, p.P50Ms, p.P99Ms, p.Errors, cpu, other)
		}
	}
	tw.Flush()
	fmt.Fprintf(out, "\nmedian batch  %.0f events/s\nmedian otlp   %.0f spans/s\notlp/batch    %.2f× (rounds:", r.MedianBatch, r.MedianOTLP, r.OTLPVsBatch)
	for _, x := range r.RoundRatios {
		fmt.Fprintf(out, " %.2f", x)
	}
	met := "met"
	if !r.Goal.Met {
		met = "NOT met"
	}
	fmt.Fprintf(out, ")\nstored        %d of %d in INGEST\npeak RSS      %.0f MiB (this process: stack, clients and generated items)\n\ngoal (informational): %s  %.2f×  %s\n",
		r.Stored, r.Expected, r.PeakRSSMiB, r.Goal.Goal, r.Goal.Actual, met)
}

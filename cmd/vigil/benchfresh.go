package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// freshReport is what `vigil bench freshness` measures.
type freshReport struct {
	TargetRate   int     `json:"targetEventsPerSec"`
	Batch        int     `json:"eventsPerRequest"`
	Events       int     `json:"events"`
	AchievedRate float64 `json:"achievedEventsPerSec"`
	Errors       int     `json:"errors"`
	FirstError   string  `json:"firstError,omitempty"`
	PollMs       float64 `json:"pollIntervalMs"`
	P50Ms        float64 `json:"p50Ms"`
	P90Ms        float64 `json:"p90Ms"`
	P99Ms        float64 `json:"p99Ms"`
	MaxMs        float64 `json:"maxMs"`
	// AfterAck* count from the 202 instead of the scheduled send: the
	// projector's and ClickHouse's share alone.
	AfterAckP50Ms float64 `json:"afterAckP50Ms"`
	AfterAckP99Ms float64 `json:"afterAckP99Ms"`
	GoalP99Ms     float64 `json:"goalP99Ms"`
	GoalP99Met    bool    `json:"goalP99Met"`
	PeakRSSMiB    float64 `json:"peakRssMiB"`
	// TargetPeakRSSMiB is --pid's VmHWM: the Vigil under test alone,
	// when it runs in its own process.
	TargetPeakRSSMiB float64 `json:"targetPeakRssMiB,omitempty"`
	// Queryable and Duplicates are what a count of the tenant's rows in
	// the run's sequence range found once the last event was: every
	// accepted event, once.
	Queryable  uint64 `json:"queryable"`
	Duplicates uint64 `json:"duplicates"`
	// Stages is where the time after the stream stored an event went, from
	// the events projector's own histograms (scraped from /metrics before
	// and after the run): its age when the projector took it in, when its
	// insert began and when ClickHouse took it.
	Stages []freshStage `json:"projectorStages,omitempty"`
}

// freshPoll is one look at the events table: by at, every row up to
// stream sequence seq was queryable.
type freshPoll struct {
	at  time.Time
	seq uint64
}

// runBenchFreshness is `vigil bench freshness`.
func runBenchFreshness(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil bench freshness", `Measure event → queryable on this machine: an in-process Vigil (embedded
NATS, ClickHouse for the events table) receives --rate events per second,
open loop, as batches of rate/100 events every 10 ms, for --duration. A
poller reads the highest stream sequence of the tenant's rows in ClickHouse
every --poll; an event is queryable at the first poll that reaches its
sequence (the projector writes in stream order). Latency runs from the
batch's scheduled send to that poll, so it includes the HTTP request, the
JetStream ack, the projector's linger and ClickHouse's insert, and at most
one poll interval too much.

With --url the load goes to a Vigil already running elsewhere (e.g.
`+"`vigil dev`"+` as its own process) with --api-key of --tenant, and
--clickhouse-dsn must be that Vigil's; --pid names its process, whose peak
resident set (VmHWM) is then reported apart from the load generator's. Give
that Vigil a fresh ClickHouse database and data directory: the watermark is
the highest stream sequence in the tenant's rows.`)
	rate := fs.Int("rate", "", 10000, "events per second")
	duration := fs.Duration("duration", "", 10*time.Second, "how long to drive load")
	conns := fs.Int("connections", "", 16, "client connections")
	poll := fs.Duration("poll", "", 10*time.Millisecond, "how often to look at ClickHouse")
	dsn := fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil_bench", "ClickHouse for the projections")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	target := fs.String("url", "", "", "drive the Vigil at this base URL instead of starting one in process")
	apiKey := fs.String("api-key", "", "", "with --url: an API key of --tenant that may post events")
	tenantFlag := fs.String("tenant", "", "default", "with --url: the key's tenant")
	pid := fs.Int("pid", "", 0, "with --url: the Vigil process whose peak RSS to report")
	cpuProfile := fs.String("cpuprofile", "", "", "write a CPU profile of the load phase to this file")
	blockProfile := fs.String("blockprofile", "", "", "write a blocking profile of the load phase to this file")
	memProfile := fs.String("memprofile", "", "", "write a heap profile of this process as the load phase ends (the backlog's peak) to this file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *rate < 100 || *duration <= 0 || *conns < 1 || *poll <= 0 {
		return errors.New("--rate must be at least 100; --duration, --connections and --poll positive")
	}
	ic := ingest.DefaultConfig()
	perBatch := *rate / 100
	if perBatch > ic.MaxBatch {
		return fmt.Errorf("--rate must be at most %d (100 batches a second of ingest's MaxBatch)", 100*ic.MaxBatch)
	}
	log, err := daemon.Logger("warn", "text")
	if err != nil {
		return err
	}
	var bs *benchStack
	if *target != "" {
		if *apiKey == "" || *tenantFlag == "" {
			return errors.New("--url needs --api-key and --tenant")
		}
		bs = &benchStack{base: strings.TrimSuffix(*target, "/"), key: *apiKey, tenant: *tenantFlag,
			client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conns, MaxConnsPerHost: *conns}, Timeout: 30 * time.Second}}
	} else if bs, err = startBenchStack(ctx, *dsn, "freshness", *conns, NATSAuth, nil, log); err != nil {
		return err
	} else {
		defer bs.close()
	}
	conn, err := chx.Open(ctx, *dsn)
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &benchClient{base: bs.base, key: bs.key, http: bs.client}
	agesBefore, err := scrapeSinkAges(ctx, bs.client, bs.base, streams.EventsProjector)
	if err != nil {
		return err
	}

	// Every batch is built before the clock starts.
	const tick = 10 * time.Millisecond
	nBatches := int(*duration / tick)
	evs := newBenchGen().events(nBatches * perBatch)
	bodies := make([][]byte, nBatches)
	for k := range bodies {
		bodies[k] = batchBody(evs[k*perBatch : (k+1)*perBatch])
	}

	// The poller runs until told to stop, recording when the watermark
	// moved.
	var polls []freshPoll
	pollErr := make(chan error, 1)
	stopPoll := make(chan struct{})
	go func() {
		t := time.NewTicker(*poll)
		defer t.Stop()
		var last uint64
		for {
			var seq uint64
			if err := conn.QueryRow(ctx, "SELECT max(stream_seq) FROM events WHERE tenant_id = ?", bs.tenant).Scan(&seq); err != nil {
				pollErr <- fmt.Errorf("poll ClickHouse: %w", err)
				return
			}
			if seq > last {
				polls = append(polls, freshPoll{at: time.Now(), seq: seq})
				last = seq
			}
			select {
			case <-stopPoll:
				pollErr <- nil
				return
			case <-t.C:
			}
		}
	}()

	// Open loop: batch k is due at start + k·tick, whatever happened to
	// the batches before it.
	seqs := make([][]uint64, nBatches)
	acked := make([]time.Time, nBatches)
	var rec benchRecorder
	jobs := make(chan int, nBatches)
	var wg sync.WaitGroup
	stopProfiles, err := startProfiles(*cpuProfile, *blockProfile, "")
	if err != nil {
		return err
	}
	start := time.Now()
	for range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var buf bytes.Buffer
			for k := range jobs {
				if d := time.Until(start.Add(time.Duration(k) * tick)); d > 0 {
					time.Sleep(d)
				}
				body, err := c.post(ctx, "/v1/events/batch", bodies[k], &buf)
				if err != nil {
					rec.fail(err)
					continue
				}
				acked[k] = time.Now()
				var r ingest.BatchResponse
				if err := json.Unmarshal(body, &r); err != nil {
					rec.fail(err)
					continue
				}
				for _, it := range r.Results {
					if it.Status != ingest.StatusAccepted {
						rec.fail(fmt.Errorf("event %d of batch %d: %s", it.Index, k, it.Status))
						continue
					}
					seqs[k] = append(seqs[k], it.Sequence)
				}
			}
		}()
	}
	for k := range nBatches {
		jobs <- k
	}
	close(jobs)
	wg.Wait()
	sent := time.Since(start)
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}

	var top uint64
	for _, ss := range seqs {
		for _, s := range ss {
			top = max(top, s)
		}
	}
	// Wait for the last accepted event to become queryable.
	deadline := time.Now().Add(2 * time.Minute)
	for {
		time.Sleep(*poll)
		var seq uint64
		if err := conn.QueryRow(ctx, "SELECT max(stream_seq) FROM events WHERE tenant_id = ?", bs.tenant).Scan(&seq); err != nil {
			return fmt.Errorf("poll ClickHouse: %w", err)
		}
		if seq >= top {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench freshness: stream sequence %d not queryable after 2 minutes (at %d)", top, seq)
		}
	}
	close(stopPoll)
	if err := <-pollErr; err != nil {
		return err
	}
	// The wait above may have seen the last sequence before the poller
	// did; one more look records it (a moment late, never early).
	var seq uint64
	if err := conn.QueryRow(ctx, "SELECT max(stream_seq) FROM events WHERE tenant_id = ?", bs.tenant).Scan(&seq); err != nil {
		return fmt.Errorf("poll ClickHouse: %w", err)
	}
	if len(polls) == 0 || seq > polls[len(polls)-1].seq {
		polls = append(polls, freshPoll{at: time.Now(), seq: seq})
	}
	if err := stopProfiles(); err != nil {
		return err
	}
	// The sink observes "written" once its insert call returns, which can
	// be after a query already sees the rows: wait for every accepted
	// event to have passed every stage before reading the histograms.
	var accepted uint64
	for _, ss := range seqs {
		accepted += uint64(len(ss))
	}
	agesAfter, err := scrapeSinkAgesUntil(ctx, bs.client, bs.base, streams.EventsProjector, agesBefore, accepted, 10*time.Second)
	if err != nil {
		return err
	}

	var lat, afterAck []time.Duration
	for k, ss := range seqs {
		due := start.Add(time.Duration(k) * tick)
		for _, s := range ss {
			i := sort.Search(len(polls), func(i int) bool { return polls[i].seq >= s })
			if i == len(polls) {
				return fmt.Errorf("bench freshness: sequence %d never seen by the poller", s)
			}
			lat = append(lat, polls[i].at.Sub(due))
			afterAck = append(afterAck, max(0, polls[i].at.Sub(acked[k])))
		}
	}
	if len(lat) == 0 {
		return fmt.Errorf("bench freshness: no event accepted (first error: %s)", rec.firstErr)
	}
	slices.Sort(lat)
	slices.Sort(afterAck)
	// The watermark stands for every row below it only if nothing was
	// lost or written twice: look for each accepted event's row. (The
	// range may hold more: a request that timed out here may still have
	// been stored.)
	var lowest uint64 = math.MaxUint64
	for _, ss := range seqs {
		for _, s := range ss {
			lowest = min(lowest, s)
		}
	}
	found, dups, err := freshRows(ctx, conn, bs.tenant, lowest, top)
	if err != nil {
		return err
	}
	var queryable uint64
	for _, ss := range seqs {
		for _, s := range ss {
			if found[s] {
				queryable++
			}
		}
	}
	rep := freshReport{
		TargetRate: *rate, Batch: perBatch, Events: len(lat), AchievedRate: float64(nBatches*perBatch) / sent.Seconds(),
		Errors: rec.errors, FirstError: rec.firstErr, PollMs: benchMs(*poll),
		P50Ms: benchMs(benchPercentile(lat, 0.5)), P90Ms: benchMs(benchPercentile(lat, 0.9)),
		P99Ms: benchMs(benchPercentile(lat, 0.99)), MaxMs: benchMs(lat[len(lat)-1]),
		AfterAckP50Ms: benchMs(benchPercentile(afterAck, 0.5)), AfterAckP99Ms: benchMs(benchPercentile(afterAck, 0.99)),
		GoalP99Ms: 1000, PeakRSSMiB: peakRSSMiB(),
		Queryable: queryable, Duplicates: dups, Stages: sinkAgeStagesBetween(agesBefore, agesAfter),
	}
	rep.GoalP99Met = rep.P99Ms <= rep.GoalP99Ms
	if *pid > 0 {
		if rep.TargetPeakRSSMiB, err = procPeakRSSMiB(*pid); err != nil {
			return err
		}
	}
	if *asJSON {
		if err := benchJSON(out, rep); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "vigil bench freshness: %d events/s for %s as %d-event batches every 10 ms (%d connections)\n", rep.TargetRate, *duration, perBatch, *conns)
		fmt.Fprintf(out, "  achieved        %8.0f events/s sent, %d accepted\n", rep.AchievedRate, rep.Events)
		fmt.Fprintf(out, "  queryable       p50 %.0f ms  p90 %.0f ms  p99 %.0f ms  max %.0f ms after the batch was due (poll every %.0f ms)\n", rep.P50Ms, rep.P90Ms, rep.P99Ms, rep.MaxMs, rep.PollMs)
		fmt.Fprintf(out, "  after the 202   p50 %.0f ms  p99 %.0f ms (projector and ClickHouse alone)\n", rep.AfterAckP50Ms, rep.AfterAckP99Ms)
		fmt.Fprintf(out, "  queryable rows  %d of %d accepted, %d written twice\n", rep.Queryable, rep.Events, rep.Duplicates)
		for _, st := range rep.Stages {
			fmt.Fprintf(out, "  age %-11s mean %.0f ms  p50 ≤ %.0f ms  p99 ≤ %.0f ms since stored in INGEST (%d messages, projector's histogram)\n",
				st.Stage, st.MeanMs, st.P50Ms, st.P99Ms, st.Messages)
		}
		if *target == "" {
			fmt.Fprintf(out, "  peak RSS        %.0f MiB (this process: load generator and the whole stack)\n", rep.PeakRSSMiB)
		} else {
			fmt.Fprintf(out, "  peak RSS        %.0f MiB (this process: the load generator alone)\n", rep.PeakRSSMiB)
		}
		if *pid > 0 {
			fmt.Fprintf(out, "  Vigil peak RSS  %.0f MiB (VmHWM of process %d)\n", rep.TargetPeakRSSMiB, *pid)
		}
		met := "not met"
		if rep.GoalP99Met {
			met = "met"
		}
		fmt.Fprintf(out, "  goal p99 ≤ 1 s at %d events/s: %s\n", rep.TargetRate, met)
	}
	if rep.Queryable != uint64(rep.Events) {
		return fmt.Errorf("bench freshness: %d of %d accepted events queryable", rep.Queryable, rep.Events)
	}
	if rec.errors > 0 {
		return fmt.Errorf("bench freshness: %d events or requests failed (first: %s)", rec.errors, rec.firstErr)
	}
	return nil
}

// freshRows is the set of stream sequences in [lo, hi] among tenant's
// rows in the events table, and how many rows repeat a sequence.
func freshRows(ctx context.Context, conn driver.Conn, tenant string, lo, hi uint64) (map[uint64]bool, uint64, error) {
	rows, err := conn.Query(ctx, "SELECT stream_seq FROM events WHERE tenant_id = ? AND stream_seq BETWEEN ? AND ?", tenant, lo, hi)
	if err != nil {
		return nil, 0, fmt.Errorf("read queryable events: %w", err)
	}
	defer rows.Close()
	found := map[uint64]bool{}
	var dups uint64
	for rows.Next() {
		var seq uint64
		if err := rows.Scan(&seq); err != nil {
			return nil, 0, fmt.Errorf("read queryable events: %w", err)
		}
		if found[seq] {
			dups++
		}
		found[seq] = true
	}
	if err := rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("read queryable events: %w", err)
	}
	return found, dups, nil
}

// procPeakRSSMiB is process pid's peak resident set (VmHWM in
// /proc/PID/status) in MiB.
func procPeakRSSMiB(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("peak RSS of process %d: %w", pid, err)
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			if err != nil {
				return 0, fmt.Errorf("peak RSS of process %d: %q: %w", pid, line, err)
			}
			return kb / 1024, nil
		}
	}
	return 0, fmt.Errorf("peak RSS of process %d: no VmHWM in /proc/%d/status", pid, pid)
}

package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/metrics"
	"runtime/trace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// benchTracer records an execution trace of a bench phase so that a
// stall can be explained, not only counted. With a path for the whole
// trace it traces the phase from start to end (`go tool trace FILE`).
// With a path for the stall snapshot it keeps the last seconds of
// execution trace in a flight recorder and, each time a request is
// slower than every one before it (and slower than minStall), snapshots
// the window around it shortly after it completes, so the file written
// last holds the worst stall of the phase and what ran meanwhile.
type benchTracer struct {
	whole    *os.File
	fr       *trace.FlightRecorder
	snapPath string
	minStall time.Duration

	mu       sync.Mutex
	worst    time.Duration
	worstAt  time.Time // when the worst request was scheduled to start
	pending  bool
	snapErr  error
	snapshot bool // a snapshot was written
	snapping sync.WaitGroup
}

// stallTraceAfter is how long after the worst request completes its
// snapshot is taken: long enough for the window to show what ran
// right after the stall (a burst that ends the stall is as telling as
// the one that starts it), short enough to stay within the recorder's
// window.
const stallTraceAfter = 300 * time.Millisecond

// startBenchTracer starts what the non-empty paths ask for: the whole
// phase's execution trace in whole, a snapshot of the worst stall in
// snap. Both may be asked for; the flight recorder is then fed by the
// same tracing. It returns nil (nothing to do) when both are empty.
func startBenchTracer(whole, snap string, minStall time.Duration) (*benchTracer, error) {
	if whole == "" && snap == "" {
		return nil, nil
	}
	t := &benchTracer{snapPath: snap, minStall: minStall}
	if snap != "" {
		// Two seconds of history is several stalls' worth at the
		// intervals the bench shows, and MaxBytes bounds the memory
		// the recorder takes on a busy stack.
		t.fr = trace.NewFlightRecorder(trace.FlightRecorderConfig{MinAge: 2 * time.Second, MaxBytes: 64 << 20})
		if err := t.fr.Start(); err != nil {
			return nil, fmt.Errorf("flight recorder: %w", err)
		}
	}
	if whole != "" {
		f, err := os.Create(whole)
		if err != nil {
			t.stopRecorder()
			return nil, err
		}
		if err := trace.Start(f); err != nil {
			f.Close()
			t.stopRecorder()
			return nil, fmt.Errorf("execution trace: %w", err)
		}
		t.whole = f
	}
	return t, nil
}

func (t *benchTracer) stopRecorder() {
	if t.fr != nil {
		t.fr.Stop()
	}
}

// observe is called with every request's latency (from its scheduled
// start) as it completes. A new worst beyond minStall schedules a
// snapshot; one already pending covers it if it is still to be taken.
func (t *benchTracer) observe(scheduled time.Time, lat time.Duration) {
	if t == nil || t.fr == nil || lat < t.minStall {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if lat <= t.worst {
		return
	}
	t.worst, t.worstAt = lat, scheduled
	if t.pending {
		return
	}
	t.pending = true
	t.snapping.Add(1)
	time.AfterFunc(stallTraceAfter, func() {
		defer t.snapping.Done()
		var buf bytes.Buffer
		_, err := t.fr.WriteTo(&buf)
		t.mu.Lock()
		t.pending = false
		t.mu.Unlock()
		if err == nil {
			err = os.WriteFile(t.snapPath, buf.Bytes(), 0o644)
		}
		t.mu.Lock()
		if err != nil {
			t.snapErr = errors.Join(t.snapErr, err)
		} else {
			t.snapshot = true
		}
		t.mu.Unlock()
	})
}

// stop ends tracing and says what was written.
func (t *benchTracer) stop(out io.Writer) error {
	if t == nil {
		return nil
	}
	t.snapping.Wait()
	var errs []error
	if t.whole != nil {
		trace.Stop()
		errs = append(errs, t.whole.Close())
		fmt.Fprintf(out, "  trace           %s (go tool trace %s)\n", t.whole.Name(), t.whole.Name())
	}
	t.stopRecorder()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.fr != nil {
		if t.snapshot {
			fmt.Fprintf(out, "  worst stall     %.1f ms, scheduled at %s: flight-recorder snapshot in %s\n",
				benchMs(t.worst), t.worstAt.Format("15:04:05.000"), t.snapPath)
		} else {
			fmt.Fprintf(out, "  worst stall     no request slower than %s: no snapshot written\n", t.minStall)
		}
	}
	errs = append(errs, t.snapErr)
	return errors.Join(errs...)
}

// timelineBucket is one slice of a phase by scheduled start.
type timelineBucket struct {
	StartMs int     `json:"startMs"`
	N       int     `json:"n"`
	P50Ms   float64 `json:"p50Ms"`
	P99Ms   float64 `json:"p99Ms"`
	MaxMs   float64 `json:"maxMs"`
	// SelfCores and OtherCores are the CPU this process and the rest of
	// the machine used over the bucket, in cores (sampled from /proc at
	// the bucket's edges, so ±1 clock tick: ±0.1 core at 100 ms).
	SelfCores  *float64 `json:"selfCores,omitempty"`
	OtherCores *float64 `json:"otherCores,omitempty"`
	// RunqueueMs is how long this process's threads were runnable but
	// waiting for a CPU in the kernel over the bucket, summed over
	// threads (/proc/self/task/*/schedstat): CPU taken by other
	// processes (or by more runnable threads than cores), which Go's
	// own execution trace cannot see.
	RunqueueMs *float64 `json:"runqueueMs,omitempty"`
}

// runqueueWait is the time this process's threads have spent runnable
// and waiting for a CPU (the second field of each thread's schedstat),
// summed over threads, or false where /proc does not say. Threads that
// exited take their share with them, so a bucket's figure can only be
// low by what they waited, never high.
func runqueueWait() (time.Duration, bool) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return 0, false
	}
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile("/proc/self/task/" + t.Name() + "/schedstat")
		if err != nil {
			continue // exited meanwhile
		}
		f := strings.Fields(string(b))
		if len(f) < 2 {
			return 0, false
		}
		ns, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return 0, false
		}
		sum += time.Duration(ns)
	}
	return sum, true
}

// taskSample is one sample of the timeline: CPU and run-queue wait.
type taskSample struct {
	cpu    cpuSample
	runq   time.Duration
	runqOK bool
}

func readTaskSample() taskSample {
	s := taskSample{cpu: readCPU()}
	s.runq, s.runqOK = runqueueWait()
	return s
}

// cpuTimeline samples this process's and the machine's CPU every width
// from start until stop, for the timeline's buckets.
type cpuTimeline struct {
	width   time.Duration
	samples []taskSample
	stop    chan struct{}
	done    chan struct{}
}

func startCPUTimeline(start time.Time, width time.Duration) *cpuTimeline {
	c := &cpuTimeline{width: width, stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(c.done)
		c.samples = append(c.samples, readTaskSample())
		for i := 1; ; i++ {
			select {
			case <-c.stop:
				return
			case <-time.After(time.Until(start.Add(time.Duration(i) * width))):
				c.samples = append(c.samples, readTaskSample())
			}
		}
	}()
	return c
}

// fill stops sampling and puts each bucket's CPU in buckets.
func (c *cpuTimeline) fill(buckets []timelineBucket) {
	if c == nil {
		return
	}
	close(c.stop)
	<-c.done
	cores := func(ticks uint64) float64 { return float64(ticks) / clockTicks / c.width.Seconds() }
	for i := range buckets {
		if i+1 >= len(c.samples) {
			break
		}
		if a, b := c.samples[i], c.samples[i+1]; a.runqOK && b.runqOK {
			ms := benchMs(max(0, b.runq-a.runq))
			buckets[i].RunqueueMs = &ms
		}
		a, b := c.samples[i].cpu, c.samples[i+1].cpu
		if !a.ok || !b.ok || b.all <= a.all {
			continue
		}
		self := cores(b.self - a.self)
		other := max(0, cores(b.busy-a.busy)-self)
		buckets[i].SelfCores, buckets[i].OtherCores = &self, &other
	}
}

// latencyTimeline cuts latencies in schedule order (byStart[i] is the
// i-th request's, scheduled at i*interval) into buckets of width, so
// that a stall shows as the buckets it spans and how often it recurs.
func latencyTimeline(byStart []time.Duration, interval, width time.Duration) []timelineBucket {
	per := max(1, int(width/interval))
	var out []timelineBucket
	for i := 0; i < len(byStart); i += per {
		b := slices.Clone(byStart[i:min(i+per, len(byStart))])
		slices.Sort(b)
		out = append(out, timelineBucket{
			StartMs: int((time.Duration(i)*interval + time.Millisecond/2) / time.Millisecond), N: len(b),
			P50Ms: benchMs(benchPercentile(b, 0.5)), P99Ms: benchMs(benchPercentile(b, 0.99)), MaxMs: benchMs(b[len(b)-1]),
		})
	}
	return out
}

// printTimeline prints buckets one per line, with a bar of the max so
// that stalls and their spacing stand out.
func printTimeline(out io.Writer, buckets []timelineBucket) {
	fmt.Fprintf(out, "  timeline        by scheduled start: n, p50, p99, max (ms); CPU of this process and of the rest of the machine (cores); ms its threads waited for a CPU in the kernel\n")
	for _, b := range buckets {
		bar := min(60, int(b.MaxMs/2))
		cpu := ""
		if b.SelfCores != nil {
			cpu = fmt.Sprintf(" %4.1f %4.1f", *b.SelfCores, *b.OtherCores)
		}
		if b.RunqueueMs != nil {
			cpu += fmt.Sprintf(" %6.1f", *b.RunqueueMs)
		}
		fmt.Fprintf(out, "    %6d ms %5d %7.2f %7.2f %7.2f%s %s\n", b.StartMs, b.N, b.P50Ms, b.P99Ms, b.MaxMs, cpu, bytes.Repeat([]byte("#"), bar))
	}
}

// gcSample is what the runtime has allocated and collected so far.
type gcSample struct{ allocBytes, cycles uint64 }

func readGC() gcSample {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/cycles/total:gc-cycles"}}
	metrics.Read(s)
	var g gcSample
	if s[0].Value.Kind() == metrics.KindUint64 {
		g.allocBytes = s[0].Value.Uint64()
	}
	if s[1].Value.Kind() == metrics.KindUint64 {
		g.cycles = s[1].Value.Uint64()
	}
	return g
}

// procCPUTicks is process pid's CPU time so far (user and system, in
// clock ticks), or false where /proc does not say.
func procCPUTicks(pid int) (uint64, bool) {
	return statCPUTicks(fmt.Sprintf("/proc/%d/stat", pid))
}

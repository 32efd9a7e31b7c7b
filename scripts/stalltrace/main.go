// Command stalltrace explains the slow requests of an execution trace
// written by `vigil bench decide --trace FILE` or `--stall-trace FILE`
// (each request is a trace region "decide"). It is its own module, out
// of go.work, so that golang.org/x/exp/trace stays out of Vigil's build:
//
//	cd scripts/stalltrace && GOWORK=off go run . [flags] FILE
//
// Three views:
//
//	(default)       the -n slowest requests: per -bucket ms, which
//	                goroutines held the Ps, how long goroutines waited
//	                for a P (runnable), what the HTTP handlers waited on,
//	                syscalls, and the GC phases in the window.
//	-timeline MS    the whole trace in buckets of MS: the slowest request
//	                starting in each, Ps busy, GC marking, top goroutines.
//	-compare MS     buckets a request slower than -stall overlaps against
//	                the others: GC marking in each, Ps busy (Go's view)
//	                against CPU samples (the kernel's: the trace carries
//	                them when --cpuprofile ran too), and which goroutines
//	                the samples fell in. Ps busy with no more CPU to show
//	                for it means threads the kernel did not run.
//
// Goroutines are named by the outermost frame of a stack they were seen
// with, so a goroutine's name is what it was started to do. "Running"
// in the trace is Go's view: a goroutine whose thread the kernel has
// descheduled still counts as running, and GC assists count to the
// goroutine that allocated.
package main

import (
	"flag"
	"fmt"
	"io"
	"log"
	"os"
	"sort"
	"strings"

	"golang.org/x/exp/trace"
)

var (
	whole     = flag.Float64("timeline", 0, "print a timeline of the whole trace in buckets of this many ms instead")
	samples   = flag.Float64("compare", 0, "compare buckets of this many ms with a stall against the others instead")
	stallMs   = flag.Float64("stall", 20, "with -compare: a request slower than this many ms is a stall")
	onlyServe = flag.Bool("serve", true, "list only the waits of HTTP handlers (false: every goroutine's)")
)

type span struct {
	g          trace.GoID
	start, end trace.Time
}

type gInfo struct {
	id       trace.GoID
	name     string // outermost meaningful frame
	runStart trace.Time
	running  bool
	lastStop string
	// waiting
	waitStart  trace.Time
	waitReason string
	waitStack  string
	syscStart  trace.Time
	insys      bool
	rnStart    trace.Time
}

func frames(st trace.Stack) []trace.StackFrame {
	var fs []trace.StackFrame
	for f := range st.Frames() {
		fs = append(fs, f)
	}
	return fs
}

func short(fn string) string {
	if i := strings.LastIndex(fn, "/"); i >= 0 {
		fn = fn[i+1:]
	}
	return fn
}

// transitionFrames is the stack of a goroutine's state transition, or
// the event's when the transition carries none.
func transitionFrames(ev trace.Event, st trace.StateTransition) []trace.StackFrame {
	if fs := frames(st.Stack); len(fs) > 0 {
		return fs
	}
	return frames(ev.Stack())
}

// learnName names goroutine id by the identity of fs, unless it has a
// name already and is not just being created.
func learnName(names map[trace.GoID]string, id trace.GoID, from trace.GoState, fs []trace.StackFrame) {
	if n := identity(fs); n != "?" && (names[id] == "" || from == trace.GoNotExist) {
		names[id] = n
	}
}

type kv struct {
	k string
	v float64
}

// byValue lists m's entries of at least min, largest first; ties by key,
// so the same trace always prints the same lines.
func byValue(m map[string]float64, min float64) []kv {
	var out []kv
	for k, v := range m {
		if v >= min {
			out = append(out, kv{k, v})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].v != out[j].v {
			return out[i].v > out[j].v
		}
		return out[i].k < out[j].k
	})
	return out
}

// spread hands add the milliseconds of [a, b) that fall in each bucket of
// bucketMs counted from origin.
func spread(a, b, origin trace.Time, bucketMs float64, add func(i int, ms float64)) {
	for t := a; t < b; {
		i := int(float64(t-origin) / 1e6 / bucketMs)
		e := min(b, origin+trace.Time(float64(i+1)*bucketMs*1e6))
		add(i, float64(e-t)/1e6)
		t = e
	}
}

// identity: the outermost frame that is not runtime/goexit.
func identity(fs []trace.StackFrame) string {
	for i := len(fs) - 1; i >= 0; i-- {
		f := fs[i].Func
		if strings.HasPrefix(f, "runtime.goexit") || f == "" {
			continue
		}
		return short(f)
	}
	return "?"
}

func topN(fs []trace.StackFrame, n int) string {
	var parts []string
	for _, f := range fs {
		if len(parts) >= n {
			break
		}
		parts = append(parts, short(f.Func))
	}
	return strings.Join(parts, " < ")
}

func main() {
	worstN := flag.Int("n", 3, "slowest regions to explain")
	before := flag.Float64("before", 5, "ms before the region start to include")
	bucket := flag.Float64("bucket", 5, "ms per utilisation bucket")
	depth := flag.Int("depth", 8, "stack frames to show")
	flag.Parse()
	if flag.NArg() != 1 {
		log.Fatal("usage: stalltrace [flags] TRACE")
	}
	f, err := os.Open(flag.Arg(0))
	if err != nil {
		log.Fatal(err)
	}
	r, err := trace.NewReader(f)
	if err != nil {
		log.Fatal(err)
	}
	var evs []trace.Event
	for {
		ev, err := r.ReadEvent()
		if err == io.EOF {
			break
		}
		if err != nil {
			log.Fatal(err)
		}
		evs = append(evs, ev)
	}
	// regions
	open := map[trace.GoID]trace.Time{}
	var regs []span
	for _, ev := range evs {
		if ev.Kind() == trace.EventRegionBegin && ev.Region().Type == "decide" {
			open[ev.Goroutine()] = ev.Time()
		}
		if ev.Kind() == trace.EventRegionEnd && ev.Region().Type == "decide" {
			if s, ok := open[ev.Goroutine()]; ok {
				regs = append(regs, span{ev.Goroutine(), s, ev.Time()})
				delete(open, ev.Goroutine())
			}
		}
	}
	sort.Slice(regs, func(i, j int) bool { return regs[i].end-regs[i].start > regs[j].end-regs[j].start })
	t0 := evs[0].Time()
	fmt.Printf("trace %.1f ms, %d decide regions\n", float64(evs[len(evs)-1].Time()-t0)/1e6, len(regs))
	if *samples > 0 {
		sampleMode(evs, regs, t0, *samples, *stallMs)
		return
	}
	if *whole > 0 {
		wholeTimeline(evs, regs, t0, *whole)
		return
	}
	// pick distinct worst windows
	var wins []span
	for _, s := range regs {
		if len(wins) >= *worstN {
			break
		}
		dup := false
		for _, w := range wins {
			if s.start < w.end && s.end > w.start {
				dup = true
			}
		}
		if !dup {
			wins = append(wins, s)
		}
	}
	for _, w := range wins {
		ws := w.start - trace.Time(*before*1e6)
		we := w.end
		fmt.Printf("\n=== region on g%d %.2f ms, at %.1f ms .. %.1f ms of the trace\n", w.g, float64(w.end-w.start)/1e6, float64(w.start-t0)/1e6, float64(w.end-t0)/1e6)
		explain(evs, ws, we, t0, *bucket, *depth)
	}
}

func explain(evs []trace.Event, ws, we, t0 trace.Time, bucketMs float64, depth int) {
	gs := map[trace.GoID]*gInfo{}
	names := map[trace.GoID]string{}
	get := func(id trace.GoID) *gInfo {
		g := gs[id]
		if g == nil {
			g = &gInfo{id: id, name: "?"}
			gs[id] = g
		}
		return g
	}
	runBy := map[string]float64{} // identity -> ms running in window
	waits := map[string]float64{} // reason|stack -> ms
	waitN := map[string]int{}
	sysBy := map[string]float64{}
	runnableBy := map[string]float64{}
	nb := int(float64(we-ws)/1e6/bucketMs) + 1
	busy := make([]map[string]float64, nb)
	for i := range busy {
		busy[i] = map[string]float64{}
	}
	addRun := func(g *gInfo, a, b trace.Time) {
		if b <= ws || a >= we {
			return
		}
		a, b = max(a, ws), min(b, we)
		runBy[g.name] += float64(b-a) / 1e6
		spread(a, b, ws, bucketMs, func(i int, ms float64) { busy[i][g.name] += ms })
	}
	var gcs []string
	for _, ev := range evs {
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			g := get(id)
			from, to := st.Goroutine()
			fs := transitionFrames(ev, st)
			learnName(names, id, from, fs)
			if n := names[id]; n != "" {
				g.name = n
			}
			t := ev.Time()
			if from == trace.GoRunning && g.running {
				addRun(g, g.runStart, t)
				g.running = false
				if len(fs) > 0 {
					g.lastStop = topN(fs, depth)
				}
			}
			if from == trace.GoSyscall && g.insys {
				if t > ws && g.syscStart < we {
					sysBy[g.name+" | "+g.waitStack] += float64(min(t, we)-max(g.syscStart, ws)) / 1e6
				}
				g.insys = false
			}
			if from == trace.GoWaiting && g.waitStart != 0 {
				if t > ws && g.waitStart < we && float64(t-g.waitStart) > 1e6 {
					k := g.name + " | " + g.waitReason + " | " + g.waitStack
					waits[k] += float64(min(t, we)-max(g.waitStart, ws)) / 1e6
					waitN[k]++
				}
				g.waitStart = 0
			}
			if from == trace.GoRunnable && g.rnStart != 0 {
				if t > ws && g.rnStart < we {
					runnableBy[g.name] += float64(min(t, we)-max(g.rnStart, ws)) / 1e6
				}
				g.rnStart = 0
			}
			switch to {
			case trace.GoRunnable:
				g.rnStart = t
			case trace.GoRunning:
				g.running, g.runStart = true, t
			case trace.GoWaiting:
				g.waitStart, g.waitReason, g.waitStack = t, st.Reason, topN(fs, depth)
			case trace.GoSyscall:
				g.insys, g.syscStart, g.waitStack = true, t, topN(fs, depth)
				g.running, g.runStart = true, t // a syscall holds its P until it's taken
			}
			if from == trace.GoSyscall && to == trace.GoRunning {
				g.running, g.runStart = true, t
			}
		case trace.EventRangeBegin, trace.EventRangeEnd:
			r := ev.Range()
			if t := ev.Time(); t >= ws && t <= we && !strings.Contains(r.Name, "assist") && !strings.Contains(r.Name, "sweep") {
				kind := "begin"
				if ev.Kind() == trace.EventRangeEnd {
					kind = "end"
				}
				gcs = append(gcs, fmt.Sprintf("%.1f %s %s", float64(t-t0)/1e6, r.Name, kind))
			}
		}
	}
	fmt.Printf("window %.1f ms; running time by goroutine (ms):\n", float64(we-ws)/1e6)
	for _, x := range byValue(runBy, 0.3) {
		fmt.Printf("  %7.2f  %s\n", x.v, x.k)
	}
	fmt.Printf("per %.0f ms bucket: busy P-ms and top goroutines\n", bucketMs)
	for i, b := range busy {
		tot := 0.0
		for _, v := range b {
			tot += v
		}
		var tops []string
		for j, x := range byValue(b, 0.2) {
			if j >= 3 {
				break
			}
			tops = append(tops, fmt.Sprintf("%s %.1f", x.k, x.v))
		}
		fmt.Printf("  %7.1f  %5.1f  %s\n", float64(ws-t0)/1e6+float64(i)*bucketMs, tot, strings.Join(tops, "; "))
	}
	fmt.Printf("runnable (waiting for a P) by goroutine, ms summed:\n")
	for j, x := range byValue(runnableBy, 1) {
		if j >= 10 {
			break
		}
		fmt.Printf("  %7.2f  %s\n", x.v, x.k)
	}
	fmt.Printf("waits > 1 ms overlapping the window (ms in window, count):\n")
	for j, x := range byValue(waits, 2) {
		if *onlyServe && !strings.HasPrefix(x.k, "http.(*conn).serve") {
			continue
		}
		if j >= 25 {
			break
		}
		fmt.Printf("  %7.2f %3d  %s\n", x.v, waitN[x.k], x.k)
	}
	fmt.Printf("syscalls in window (ms):\n")
	for j, x := range byValue(sysBy, 0.5) {
		if j >= 10 {
			break
		}
		fmt.Printf("  %7.2f  %s\n", x.v, x.k)
	}
	fmt.Printf("GC/STW ranges in window: %v\n", gcs)
}

func wholeTimeline(evs []trace.Event, regs []span, t0 trace.Time, bucketMs float64) {
	end := evs[len(evs)-1].Time()
	nb := int(float64(end-t0)/1e6/bucketMs) + 1
	busy := make([]map[string]float64, nb)
	for i := range busy {
		busy[i] = map[string]float64{}
	}
	maxLat := make([]float64, nb)
	for _, r := range regs {
		i := int(float64(r.start-t0) / 1e6 / bucketMs)
		maxLat[i] = max(maxLat[i], float64(r.end-r.start)/1e6)
	}
	gcMark := make([]float64, nb)
	names := map[trace.GoID]string{}
	runStart := map[trace.GoID]trace.Time{}
	add := func(name string, a, b trace.Time) {
		spread(a, b, t0, bucketMs, func(i int, ms float64) { busy[i][name] += ms })
	}
	var markStart trace.Time
	for _, ev := range evs {
		switch ev.Kind() {
		case trace.EventRangeBegin:
			if ev.Range().Name == "GC concurrent mark phase" {
				markStart = ev.Time()
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == "GC concurrent mark phase" && markStart != 0 {
				spread(markStart, ev.Time(), t0, bucketMs, func(i int, ms float64) { gcMark[i] += ms })
				markStart = 0
			}
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, to := st.Goroutine()
			learnName(names, id, from, transitionFrames(ev, st))
			if from == trace.GoRunning || from == trace.GoSyscall {
				if s, ok := runStart[id]; ok {
					n := names[id]
					if n == "" {
						n = "?"
					}
					add(n, s, ev.Time())
					delete(runStart, id)
				}
			}
			if (to == trace.GoRunning || to == trace.GoSyscall) && names[id] != "signal.loop" {
				runStart[id] = ev.Time()
			}
		}
	}
	fmt.Printf("bucket  maxlat  busyP  gcmark  top goroutines (P-ms)\n")
	for i, b := range busy {
		tot := 0.0
		for _, v := range b {
			tot += v
		}
		var tops []string
		for j, x := range byValue(b, 0) {
			if j >= 5 || x.v < 0.5 {
				break
			}
			tops = append(tops, fmt.Sprintf("%s %.1f", strings.TrimPrefix(x.k, "nats%2ego."), x.v))
		}
		fmt.Printf("%6.0f %7.1f %6.1f %6.1f  %s\n", float64(i)*bucketMs, maxLat[i], tot/bucketMs, gcMark[i], strings.Join(tops, "; "))
	}
}

// sampleMode compares the buckets a stall overlaps with the others.
func sampleMode(evs []trace.Event, regs []span, t0 trace.Time, bucketMs float64, stallMs float64) {
	end := evs[len(evs)-1].Time()
	nb := int(float64(end-t0)/1e6/bucketMs) + 1
	stalled := make([]bool, nb)
	for _, r := range regs {
		if float64(r.end-r.start)/1e6 < stallMs {
			continue
		}
		for t := r.start; t < r.end; t += trace.Time(bucketMs * 1e6 / 2) {
			stalled[int(float64(t-t0)/1e6/bucketMs)] = true
		}
	}
	names := map[trace.GoID]string{}
	cat := func(ev trace.Event) string {
		fs := frames(ev.Stack())
		for _, f := range fs {
			switch {
			case strings.Contains(f.Func, "gcBgMarkWorker"):
				return "GC background mark"
			case strings.Contains(f.Func, "gcAssistAlloc"):
				return "GC assist"
			case strings.HasPrefix(f.Func, "runtime.bgsweep"), strings.HasPrefix(f.Func, "runtime.bgscavenge"):
				return "GC sweep/scavenge"
			}
		}
		if n := names[ev.Goroutine()]; n != "" {
			return n
		}
		return identity(fs)
	}
	in, out := map[string]float64{}, map[string]float64{}
	nin, nout := 0.0, 0.0
	busy := make([]float64, nb)
	marking := make([]bool, nb)
	var markStart trace.Time
	gcs := 0
	runStart := map[trace.GoID]trace.Time{}
	addBusy := func(a, b trace.Time) {
		spread(a, b, t0, bucketMs, func(i int, ms float64) { busy[i] += ms })
	}
	for _, ev := range evs {
		switch ev.Kind() {
		case trace.EventStateTransition:
			st := ev.StateTransition()
			if st.Resource.Kind != trace.ResourceGoroutine {
				continue
			}
			id := st.Resource.Goroutine()
			from, _ := st.Goroutine()
			learnName(names, id, from, transitionFrames(ev, st))
			_, to := st.Goroutine()
			if from == trace.GoRunning {
				if s, ok := runStart[id]; ok {
					addBusy(s, ev.Time())
					delete(runStart, id)
				}
			}
			if to == trace.GoRunning {
				runStart[id] = ev.Time()
			}
		case trace.EventRangeBegin:
			if ev.Range().Name == "GC concurrent mark phase" {
				markStart = ev.Time()
			}
		case trace.EventRangeEnd:
			if ev.Range().Name == "GC concurrent mark phase" && markStart != 0 {
				for t := markStart; t < ev.Time(); t += trace.Time(bucketMs * 1e6 / 4) {
					marking[int(float64(t-t0)/1e6/bucketMs)] = true
				}
				marking[int(float64(ev.Time()-t0)/1e6/bucketMs)] = true
				gcs++
				markStart = 0
			}
		case trace.EventStackSample:
			i := int(float64(ev.Time()-t0) / 1e6 / bucketMs)
			c := cat(ev)
			if stalled[i] {
				in[c]++
				nin++
			} else {
				out[c]++
				nout++
			}
		}
	}
	ns := 0
	for _, s := range stalled {
		if s {
			ns++
		}
	}
	fmt.Printf("%d of %d buckets of %.0f ms stalled (a decide region > %.0f ms overlaps)\n", ns, nb, bucketMs, stallMs)
	bs, bc := 0.0, 0.0
	for i, s := range stalled {
		if s {
			bs += busy[i]
		} else {
			bc += busy[i]
		}
	}
	ms, mc := 0, 0
	for i, s := range stalled {
		if marking[i] && s {
			ms++
		} else if marking[i] {
			mc++
		}
	}
	fmt.Printf("%d GC cycles; GC marking in %d of %d stalled buckets (%.0f%%), in %d of %d calm (%.0f%%)\n", gcs, ms, ns, 100*float64(ms)/float64(max(ns, 1)), mc, nb-ns, 100*float64(mc)/float64(max(nb-ns, 1)))
	fmt.Printf("Ps running a goroutine (Go's view):   %.2f in stalled buckets, %.2f in calm\n", bs/float64(max(ns, 1))/bucketMs, bc/float64(max(nb-ns, 1))/bucketMs)
	if nin+nout == 0 {
		fmt.Printf("no CPU samples: trace with --cpuprofile too to compare with the kernel's view\n")
		return
	}
	// The CPU profiler samples at 100 Hz of CPU time: a sample is 10 ms.
	fmt.Printf("CPU samples (the kernel's view): %.2f cores in stalled buckets, %.2f in calm (%.0f and %.0f samples)\n",
		nin*10/float64(max(ns, 1))/bucketMs, nout*10/float64(max(nb-ns, 1))/bucketMs, nin, nout)
	keys := map[string]bool{}
	for k := range in {
		keys[k] = true
	}
	for k := range out {
		keys[k] = true
	}
	type row struct {
		k      string
		pi, po float64
	}
	var rows []row
	for k := range keys {
		rows = append(rows, row{k, 100 * in[k] / max(nin, 1), 100 * out[k] / max(nout, 1)})
	}
	sort.Slice(rows, func(a, b int) bool { return rows[a].pi > rows[b].pi })
	fmt.Printf("%% of samples  stalled   calm   goroutine / category\n")
	for j, r := range rows {
		if j >= 30 {
			break
		}
		fmt.Printf("            %6.1f %6.1f   %s\n", r.pi, r.po, r.k)
	}
}

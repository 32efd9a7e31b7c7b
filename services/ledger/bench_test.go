package ledger

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// BenchmarkAppend measures integration alone: dedupe lookup, tree
// append, tile/leaf/lookup/checkpoint writes to ClickHouse, signing and
// publishing the checkpoint, in batches of 4000 records.
func BenchmarkAppend(b *testing.B) {
	db := chtest.New(b)
	svc := newService(b, db)
	ctx := context.Background()
	batch := benchBatch()
	next := 0
	b.ResetTimer()
	start := time.Now()
	for next < b.N {
		n := min(batch, b.N-next)
		ps := synthetic(b, "bench", next, n)
		if err := svc.appendTenant(ctx, "bench", ps, time.Now()); err != nil {
			b.Fatal(err)
		}
		next += n
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "leaves/s")
}

// BenchmarkSeal measures the whole path from the INGEST stream: records
// already on the stream are consumed, integrated, checkpointed and
// acked. The figure is leaves per second until the checkpoint covers
// them all.
func BenchmarkSeal(b *testing.B) {
	ne := natstest.Start(b)
	db := chtest.New(b)
	ctx := context.Background()
	o := streams.DefaultOptions
	if err := natsx.EnsureStreams(ctx, ne.JS, streams.IngestConfig(o), streams.PolicyConfig(o), streams.ControlConfig(o), streams.GuardianConfig(o)); err != nil {
		b.Fatal(err)
	}
	e := &env{nats: ne, db: db}
	publishBacklog(b, ne.JS, b.N)
	if os.Getenv("LEDGER_BENCH_GENERIC") != "" {
		fastIngest = false
		defer func() { fastIngest = true }()
	}
	b.ResetTimer()
	// LEDGER_BENCH_CPUPROFILE profiles the sealing alone (-test.cpuprofile
	// also covers publishing the backlog, NATS server's storing included).
	stopProfile := startProfile(b, os.Getenv("LEDGER_BENCH_CPUPROFILE"))
	peak := samplePeakHeap()
	start, cpu0 := time.Now(), processCPU()
	r := e.startB(b)
	for {
		cp, err := r.svc.LatestCheckpoint(ctx, "bench")
		if err != nil {
			b.Fatal(err)
		}
		if cp.TreeSize >= uint64(b.N) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopProfile()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "leaves/s")
	// CPU of this process (ledger, NATS server and client; not
	// ClickHouse's) per leaf: comparable across runs on a busy box.
	b.ReportMetric(float64((processCPU()-cpu0).Microseconds())/float64(b.N), "cpu-µs/leaf")
	// What the process (ledger, NATS server and client) held with the
	// whole backlog waiting on the stream: the most the ledger takes in.
	live, objects := peak()
	b.ReportMetric(float64(live)/(1<<20), "peak-live-MiB")
	b.ReportMetric(float64(objects)/(1<<20), "peak-heap-MiB")
	b.StopTimer()
	r.stop()
}

// startProfile starts a CPU profile into path ("" profiles nothing) and
// returns what stops it.
func startProfile(b *testing.B, path string) func() {
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}
}

// samplePeakHeap samples the heap every 5 ms until the returned function
// is called, which returns the largest live heap (as marked by a GC) and
// the largest heap of objects (live and not yet swept) seen.
func samplePeakHeap() func() (live, objects uint64) {
	samples := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	stop, done := make(chan struct{}), make(chan struct{})
	var live, objects uint64
	go func() {
		defer close(done)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			metrics.Read(samples)
			live, objects = max(live, samples[0].Value.Uint64()), max(objects, samples[1].Value.Uint64())
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return func() (uint64, uint64) {
		close(stop)
		<-done
		return live, objects
	}
}

// processCPU is the user and system CPU this process has used.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// publishBacklog puts n bench events on INGEST, waiting for the acks of
// each thousand so the async publisher never stalls.
func publishBacklog(b *testing.B, js jetstream.JetStream, n int) {
	for i := range n {
		data, _ := json.Marshal(benchEvent(i))
		if _, err := js.PublishAsync(streams.EventReceivedSubject("bench", "agent-1"), data); err != nil {
			b.Fatal(err)
		}
		if i%1000 == 999 {
			<-js.PublishAsyncComplete()
		}
	}
	<-js.PublishAsyncComplete()
}

func benchEvent(i int) map[string]any {
	return map[string]any{"tenant": "bench", "event": map[string]any{
		"eventId": fmt.Sprintf("00000000-0000-4000-8000-%012d", i), "agentId": "agent-1", "sessionId": fmt.Sprintf("s-%d", i/50),
		"sourceTimestamp": "2026-01-02T03:04:05Z", "category": "tool_call", "schemaVersion": "1.0",
		"payload": map[string]any{"toolName": "search", "n": i},
	}, "sourceMs": 1767323045000, "receivedMs": 1767323045000 + int64(i), "client": map[string]any{"sdk": "go"}}
}

// startB is env.start for benchmarks.
func (e *env) startB(b *testing.B) *running {
	cfg := DefaultConfig()
	cfg.Seed = testSeed
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("LEDGER_BENCH_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	svc, err := New(cfg, Deps{JS: e.nats.JS, CH: e.db.Conn, Log: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.EnsureStreams(context.Background()); err != nil {
		b.Fatal(err)
	}
	if err := svc.Migrate(context.Background()); err != nil {
		b.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	return &running{svc: svc, stop: func() { cancel(); <-done }}
}

// BenchmarkProof1M measures proofs against a log of one million leaves:
// by index (tiles from memory, and with the tile cache dropped so every
// tile comes from ClickHouse) and by record id (lookup + leaf + proof,
// as GET /v1/lineage/{id}/verify does). It reports p50 and p99.
func BenchmarkProof1M(b *testing.B) {
	const size = 1 << 20
	db := chtest.New(b)
	svc := newService(b, db)
	ctx := context.Background()
	start := time.Now()
	for next := 0; next < size; next += 4000 {
		// Decision records, so that a proof by record id is what
		// GET /v1/lineage/{id}/verify answers for a decision id.
		ps := synthetic(b, "bench", next, min(4000, size-next))
		for i := range ps {
			ps[i].row.kind, ps[i].row.key = "decision", "decision:"+ps[i].row.id
		}
		if err := svc.appendTenant(ctx, "bench", ps, time.Now()); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("built %d leaves in %s (%.0f leaves/s)", size, time.Since(start), size/time.Since(start).Seconds())
	st, _ := svc.state(ctx, "bench")
	measure := func(b *testing.B, op func(i uint64)) {
		lat := make([]time.Duration, 0, b.N)
		b.ResetTimer()
		for range b.N {
			i := rand.Uint64N(st.size)
			t0 := time.Now()
			op(i)
			lat = append(lat, time.Since(t0))
		}
		b.StopTimer()
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds())/1000, "p99-ms")
	}
	// Sub-benchmarks that drop the tile cache run after those that need
	// it warm (the build left every tile of the log in memory).
	b.Run("index/warm", func(b *testing.B) {
		measure(b, func(i uint64) {
			if _, _, err := svc.InclusionProof(ctx, "bench", i); err != nil {
				b.Fatal(err)
			}
		})
	})
	lineage := func(b *testing.B, i uint64) {
		l, err := svc.Lineage(ctx, "bench", fmt.Sprint(i))
		if err != nil || l.LedgerIndex == nil || *l.LedgerIndex != i {
			b.Fatalf("lineage of %d: %+v %v", i, l, err)
		}
	}
	b.Run("record-id", func(b *testing.B) {
		// GET /v1/lineage/{id}/verify for a decision id this process
		// sealed: id index and tiles in memory.
		measure(b, func(i uint64) { lineage(b, i) })
	})
	// The same with the tiles cached without their upper nodes (every
	// node recomputed from its tile's hashes, as before they were kept).
	uppers := func(on bool) {
		tileUppers = on
		svc.tileMu.Lock()
		defer svc.tileMu.Unlock()
		for k, t := range svc.tiles {
			svc.tiles[k] = withUpper(t[:min(len(t), fullTileLen)], nil)
		}
	}
	b.Run("record-id/no-upper-nodes", func(b *testing.B) {
		uppers(false)
		defer uppers(true)
		measure(b, func(i uint64) { lineage(b, i) })
	})
	b.Run("record-id/again", func(b *testing.B) {
		measure(b, func(i uint64) { lineage(b, i) })
	})
	b.Run("record-id/lookup", func(b *testing.B) {
		// The path every proof by id took before the id index: the
		// ClickHouse lookup, the leaf row, the proof (tiles warm).
		measure(b, func(i uint64) {
			key := "decision:" + fmt.Sprint(i)
			found, rows, err := svc.store.lookup(ctx, "bench", st.size, []string{key})
			if err != nil || len(found[key]) != 1 {
				b.Fatalf("lookup %d: %v", i, err)
			}
			if _, err := svc.prove(ctx, "bench", st, found[key], rows); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("index/cold", func(b *testing.B) {
		measure(b, func(i uint64) {
			svc.tileMu.Lock()
			clear(svc.tiles)
			svc.tileMu.Unlock()
			if _, _, err := svc.InclusionProof(ctx, "bench", i); err != nil {
				b.Fatal(err)
			}
		})
	})
	b.Run("record-id/restarted", func(b *testing.B) {
		// The same after a restart: nothing in memory (id index and
		// tiles dropped before each proof), so the ClickHouse lookup
		// (lookup row and leaf row in one query) and a tile read.
		measure(b, func(i uint64) {
			svc.ids.reset()
			svc.tileMu.Lock()
			clear(svc.tiles)
			svc.tileMu.Unlock()
			lineage(b, i)
		})
	})
	b.Run("consistency", func(b *testing.B) {
		measure(b, func(i uint64) {
			if _, err := svc.ConsistencyProof(ctx, "bench", i+1, 0); err != nil {
				b.Fatal(err)
			}
		})
	})
}

// BenchmarkCheckpointLatency measures how long after an event is
// published a checkpoint covering it appears on the LEDGER stream, with
// events arriving at a steady 5,000/s.
func BenchmarkCheckpointLatency(b *testing.B) {
	ne := natstest.Start(b)
	db := chtest.New(b)
	ctx := context.Background()
	o := streams.DefaultOptions
	if err := natsx.EnsureStreams(ctx, ne.JS, streams.IngestConfig(o), streams.PolicyConfig(o), streams.ControlConfig(o), streams.GuardianConfig(o)); err != nil {
		b.Fatal(err)
	}
	e := &env{nats: ne, db: db}
	r := e.startB(b)
	defer r.stop()
	sent := make([]time.Time, b.N)
	covered := make([]time.Duration, b.N)
	var mu sync.Mutex
	next := 0
	done := make(chan struct{})
	sub, err := ne.Conn.Subscribe(streams.CheckpointSubject("bench"), func(m *nats.Msg) {
		var c CheckpointMsg
		if json.Unmarshal(m.Data, &c) != nil {
			return
		}
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		for next < b.N && uint64(next) < c.TreeSize && !sent[next].IsZero() {
			covered[next] = now.Sub(sent[next])
			next++
		}
		if next == b.N {
			select {
			case <-done:
			default:
				close(done)
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	const rate = 5000
	b.ResetTimer()
	t0 := time.Now()
	for i := range b.N {
		if d := time.Until(t0.Add(time.Duration(i) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
		data, _ := json.Marshal(benchEvent(i))
		mu.Lock()
		sent[i] = time.Now()
		mu.Unlock()
		if _, err := ne.JS.Publish(ctx, streams.EventReceivedSubject("bench", "agent-1"), data); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		mu.Lock()
		defer mu.Unlock()
		b.Fatalf("only %d of %d events covered", next, b.N)
	}
	b.StopTimer()
	slices.Sort(covered)
	b.ReportMetric(float64(covered[len(covered)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(covered[len(covered)*99/100].Microseconds())/1000, "p99-ms")
}

// benchBatch is the batch size of BenchmarkAppend (LEDGER_BENCH_BATCH).
func benchBatch() int {
	var n int
	if _, err := fmt.Sscan(os.Getenv("LEDGER_BENCH_BATCH"), &n); err != nil || n <= 0 {
		return 4000
	}
	return n
}

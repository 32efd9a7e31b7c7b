package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
)

// notifyReport is what `vigil bench notify` measures.
type notifyReport struct {
	Channels        int     `json:"channels"`
	Decisions       int     `json:"decisions"`
	TargetRate      int     `json:"targetRatePerSec"`
	Expected        int     `json:"expectedDeliveries"`
	Delivered       int     `json:"delivered"`
	DeliveriesPerS  float64 `json:"deliveriesPerSec"`
	FirstP50Ms      float64 `json:"firstAttemptP50Ms"`
	FirstP99Ms      float64 `json:"firstAttemptP99Ms"`
	AllP50Ms        float64 `json:"allChannelsP50Ms"`
	AllP99Ms        float64 `json:"allChannelsP99Ms"`
	GoalFirstP99Ms  float64 `json:"goalFirstAttemptP99Ms"`
	GoalFirstP99Met bool    `json:"goalFirstAttemptP99Met"`
	// PeakRSSMiB is this process's peak resident set (VmHWM).
	PeakRSSMiB float64 `json:"peakRssMiB"`
}

const notifyPolicy = "id: bench-notify\nname: bench notify\nrules:\n  - id: stop\n    when: action.tool == \"bench_block\"\n    outcome: block\n    reasonCodes: [BENCH]\n"

// runBenchNotify measures signal fan-out end to end: block decisions at
// --rate, each a verdict.block signal delivered as a signed webhook to
// --channels channels that all point at one loopback receiver. Latency
// runs from sending the decision request (the signal is born while it is
// answered) to the delivery's arrival: an upper bound of signal → attempt.
func runBenchNotify(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil bench notify", `Measure notification fan-out end to end: an in-process Vigil with
--channels webhook channels on a loopback receiver; block decisions at
--rate per second for --duration; every decision is a verdict.block signal
that must reach every channel.`)
	channels := fs.Int("channels", "", 10, "webhook channels, all subscribed to verdict.block")
	rate := fs.Int("rate", "", 50, "block decisions per second")
	duration := fs.Duration("duration", "", 5*time.Second, "how long to drive decisions")
	dsn := fs.String("clickhouse-dsn", "VIGIL_CLICKHOUSE_DSN", "clickhouse://127.0.0.1:9000/vigil_bench", "ClickHouse for the projections")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *channels < 1 || *rate < 1 || *duration <= 0 {
		return errors.New("--channels, --rate and --duration must be positive")
	}
	log, err := daemon.Logger("warn", "text")
	if err != nil {
		return err
	}

	var (
		mu      sync.Mutex
		arrived = map[string][]time.Time{} // agent id → arrival per delivery
	)
	recv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var sig struct {
			AgentID string `json:"agentId"`
		}
		body, _ := io.ReadAll(r.Body)
		now := time.Now()
		if json.Unmarshal(body, &sig) == nil && sig.AgentID != "" {
			mu.Lock()
			arrived[sig.AgentID] = append(arrived[sig.AgentID], now)
			mu.Unlock()
		}
		w.WriteHeader(http.StatusNoContent)
	})}
	rln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	go func() { _ = recv.Serve(rln) }()
	defer recv.Close()

	// The receiver is on loopback: the notifier may deliver there.
	loopback := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	bs, err := startBenchStack(ctx, *dsn, "notify", 16, NATSAuth, loopback, log)
	if err != nil {
		return err
	}
	defer bs.close()
	if err := decidePost(bs.client, bs.base+"/v1/policies", bs.key, "application/yaml", []byte(notifyPolicy), http.StatusCreated); err != nil {
		return fmt.Errorf("create bench policy: %w", err)
	}
	for i := range *channels {
		body, _ := json.Marshal(map[string]any{"name": fmt.Sprintf("bench-%d", i), "url": "http://" + rln.Addr().String() + fmt.Sprintf("/hook/%d", i), "signals": []string{"verdict.block"}})
		if err := decidePost(bs.client, bs.base+"/v1/notification-channels", bs.key, "application/json", body, http.StatusCreated); err != nil {
			return fmt.Errorf("create channel: %w", err)
		}
	}

	n := int(duration.Seconds() * float64(*rate))
	// One registered agent per decision, within the tenant's agent cap.
	agents := make([]string, min(n, agent.DefaultMaxPerTenant/2))
	for i := range agents {
		agents[i] = fmt.Sprintf("bench-%d", i)
	}
	if err := registerAgentIDs(ctx, bs.st.Store, bs.tenant, "vigil bench notify", agents...); err != nil {
		return err
	}
	sent := make([]time.Time, n)
	interval := time.Second / time.Duration(*rate)
	start := time.Now()
	var wg sync.WaitGroup
	errc := make(chan error, n)
	for i := range n {
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{"agentId": agents[i%len(agents)], "action": "bench_block"})
			sent[i] = time.Now()
			if err := decidePost(bs.client, bs.base+"/v1/decisions.evaluate", bs.key, "application/json", body, http.StatusOK); err != nil {
				errc <- err
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		return fmt.Errorf("decision: %w", err)
	}
	expected := n * *channels
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		got := 0
		for _, ts := range arrived {
			got += len(ts)
		}
		mu.Unlock()
		if got >= expected {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("only %d of %d deliveries arrived", got, expected)
		}
		time.Sleep(20 * time.Millisecond)
	}

	mu.Lock()
	defer mu.Unlock()
	var first, all []time.Duration
	var last time.Time
	delivered := 0
	for i := range n {
		ts := arrived[fmt.Sprintf("bench-%d", i)]
		if len(ts) == 0 {
			continue
		}
		delivered += len(ts)
		lo, hi := slices.MinFunc(ts, time.Time.Compare), slices.MaxFunc(ts, time.Time.Compare)
		first, all = append(first, lo.Sub(sent[i])), append(all, hi.Sub(sent[i]))
		if hi.After(last) {
			last = hi
		}
	}
	slices.Sort(first)
	slices.Sort(all)
	rep := notifyReport{
		Channels: *channels, Decisions: n, TargetRate: *rate, Expected: expected, Delivered: delivered,
		DeliveriesPerS: float64(delivered) / last.Sub(start).Seconds(),
		FirstP50Ms:     benchMs(benchPercentile(first, 0.5)), FirstP99Ms: benchMs(benchPercentile(first, 0.99)),
		AllP50Ms: benchMs(benchPercentile(all, 0.5)), AllP99Ms: benchMs(benchPercentile(all, 0.99)),
		GoalFirstP99Ms: 250, PeakRSSMiB: peakRSSMiB(),
	}
	rep.GoalFirstP99Met = rep.FirstP99Ms <= rep.GoalFirstP99Ms
	if *asJSON {
		return benchJSON(out, rep)
	}
	fmt.Fprintf(out, "vigil bench notify: %d block decisions at %d/s, each to %d webhook channels on loopback\n", n, *rate, *channels)
	fmt.Fprintf(out, "  delivered        %d of %d (%.0f deliveries/s)\n", rep.Delivered, rep.Expected, rep.DeliveriesPerS)
	fmt.Fprintf(out, "  first attempt    p50 %.1f ms  p99 %.1f ms after the decision was requested\n", rep.FirstP50Ms, rep.FirstP99Ms)
	fmt.Fprintf(out, "  all channels     p50 %.1f ms  p99 %.1f ms\n", rep.AllP50Ms, rep.AllP99Ms)
	met := "not met"
	if rep.GoalFirstP99Met {
		met = "met"
	}
	fmt.Fprintf(out, "  peak RSS         %.0f MiB (this process: receiver, load generator and the whole stack)\n", rep.PeakRSSMiB)
	fmt.Fprintf(out, "  goal first-attempt p99 ≤ 250 ms: %s\n", met)
	return nil
}

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// BenchmarkStreamReplicas measures what replication costs the two write
// paths: ingest (POST /v1/events, acked once INGEST stored the event)
// and decisions (POST /v1/decisions.evaluate, answered once POLICY
// stored the record). Three all-in-one stacks run side by side on this
// machine: R1 streams on one node (what `vigil dev` runs), R1 streams on
// a three-node cluster, and R3 streams on a three-node cluster. Rounds
// alternate between them so that load from elsewhere on the machine hits
// all three alike; each reports its median rate over the rounds and the
// ratio to the single node.
//
//	go test -run '^$' -bench BenchmarkStreamReplicas -benchtime 1x ./cmd/vigil
func BenchmarkStreamReplicas(b *testing.B) {
	const rounds, events, decisions, conc = 5, 1500, 600, 4
	type side struct {
		name   string
		client benchClient
		gen    *benchGen
		ev, de []float64
		errors int
	}
	ctx := context.Background()
	start := func(name string, cluster *natstest.Cluster, replicas int) *side {
		so := streams.DefaultOptions
		so.Replicas = replicas
		o := stacktest.Options{DSN: chtest.New(b).DSN, API: unlimited, Streams: so, Log: testLogger(b)}
		if cluster != nil {
			o.NATSURL, o.NATSCredsDir = cluster.URL(0), cluster.CredsDir
		}
		srv := stacktest.Start(b, o)
		s := &side{name: name, gen: newBenchGen(),
			client: benchClient{base: srv.URL, key: srv.BootstrapKey, http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: conc}}}}
		if err := registerAgentIDs(ctx, srv.Store, tenant.Default, "bench", s.gen.agents...); err != nil {
			b.Fatal(err)
		}
		return s
	}
	sides := []*side{
		start("R1-one-node", nil, 1),
		start("R1-cluster", natstest.StartCluster(b, 3), 1),
		start("R3-cluster", natstest.StartCluster(b, 3), 3),
	}
	rate := func(n int, took time.Duration) float64 { return float64(n) / took.Seconds() }
	for range b.N {
		for r := range rounds + 1 {
			for _, s := range sides {
				evs := s.gen.events(events)
				var rec benchRecorder
				took, _ := benchWorkers(ctx, len(evs), conc, func(ctx context.Context, i int, w *benchWorker) error {
					_, err := s.client.post(ctx, "/v1/events", evs[i].body, &w.buf)
					return err
				}, &rec)
				evErrs := rec.errors
				bodies := make([][]byte, decisions)
				for i := range bodies {
					bodies[i], _ = json.Marshal(map[string]any{"agentId": s.gen.agents[i%len(s.gen.agents)], "action": benchTools[i%len(benchTools)],
						"sessionId": fmt.Sprintf("bench-%d", i%32)})
				}
				dtook, _ := benchWorkers(ctx, len(bodies), conc, func(ctx context.Context, i int, w *benchWorker) error {
					_, err := decideOnce(s.client.http, s.client.base, s.client.key, bodies[i], &w.buf)
					return err
				}, &rec)
				// On a loaded machine a decision may miss its 2 s deadline
				// (503): rates count acknowledged writes only, and the
				// failures are reported; most failing means something broke.
				if rec.errors > (events+decisions)/2 {
					b.Fatalf("%s: %d requests failed (first: %s)", s.name, rec.errors, rec.firstErr)
				}
				s.errors += rec.errors
				if r == 0 {
					continue // warm-up: connections, packs, first batches
				}
				s.ev, s.de = append(s.ev, rate(events-evErrs, took)), append(s.de, rate(decisions-(rec.errors-evErrs), dtook))
			}
		}
	}
	median := func(xs []float64) float64 {
		ys := slices.Clone(xs)
		slices.Sort(ys)
		return ys[len(ys)/2]
	}
	base := sides[0]
	for _, s := range sides {
		ev, de := median(s.ev), median(s.de)
		b.ReportMetric(ev, s.name+"-events/s")
		b.ReportMetric(de, s.name+"-decisions/s")
		if s != base {
			b.ReportMetric(ev/median(base.ev), s.name+"-events-ratio")
			b.ReportMetric(de/median(base.de), s.name+"-decisions-ratio")
		}
		b.Logf("%-12s events/s median %.0f %v; decisions/s median %.0f %v; %d requests failed", s.name, ev, round0(s.ev), de, round0(s.de), s.errors)
	}
}

func round0(xs []float64) []int {
	out := make([]int, len(xs))
	for i, x := range xs {
		out[i] = int(x + 0.5)
	}
	return out
}

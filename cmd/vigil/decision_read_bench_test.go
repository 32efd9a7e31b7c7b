package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// readBenchStack is a quiet all-in-one stack for benchmarks, its decisions
// projector holding batches for linger.
func readBenchStack(b *testing.B, linger time.Duration) (st *Stack, base, key string) {
	b.Helper()
	db := chtest.New(b)
	pc := policysvc.DefaultConfig()
	pc.SigningSeed, pc.ProjectorLinger = testSigningSeed, linger
	ac := api.DefaultConfig()
	unlimited(&ac)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := StartStack(ctx, StackConfig{DataDir: b.TempDir(), NATSHost: "127.0.0.1", NATSPort: -1,
		ClickHouseDSN: db.DSN, ClickHouseWait: 20 * time.Second, Ingest: ingest.DefaultConfig(), API: ac,
		Policy: pc, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	b.Cleanup(func() { stop(); <-served; st.Close() })
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	_, key, err = st.Store.CreateKey(cctx, "bench", auth.RoleOwner, "bench", "decision read benchmark")
	if err != nil {
		b.Fatal(err)
	}
	registerAgents(b, st.Store, "bench", "bench-bot")
	return st, "http://" + ln.Addr().String(), key
}

func benchDecide(b *testing.B, base, key string) string {
	b.Helper()
	r, err := send(base, req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: key, body: `{"agentId":"bench-bot","action":"lookup"}`})
	if err != nil || r.status != http.StatusOK {
		b.Fatalf("evaluate: %v %s", err, r)
	}
	var d struct {
		DecisionID string `json:"decisionId"`
	}
	if err := json.Unmarshal(r.body, &d); err != nil {
		b.Fatal(err)
	}
	return d.DecisionID
}

func benchRead(b *testing.B, base, key, id string) {
	r, err := send(base, req{method: http.MethodGet, path: "/v1/decisions/" + id, key: key})
	if err != nil || r.status != http.StatusOK {
		b.Fatalf("read %s: %v %s", id, err, r)
	}
}

// BenchmarkDecisionRead measures GET /v1/decisions/:id over HTTP: from the
// ClickHouse projection, and — read-your-writes — from POLICY while the
// projection has not caught up: the tenant's newest decision (one
// last-by-subject get), and one with 1,000 newer unprojected decisions
// (a headers-only walk of them, then a get by sequence).
func BenchmarkDecisionRead(b *testing.B) {
	b.Run("projection", func(b *testing.B) {
		st, base, key := readBenchStack(b, 50*time.Millisecond)
		id := benchDecide(b, base, key)
		testkit.Eventually(b, "decision projected", func() (bool, string) {
			var n uint64
			err := st.CH.QueryRow(context.Background(), "SELECT count() FROM decisions WHERE decision_id = ?", id).Scan(&n)
			return err == nil && n > 0, fmt.Sprint(n, err)
		})
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			benchRead(b, base, key, id)
		}
	})
	b.Run("stream-newest", func(b *testing.B) {
		_, base, key := readBenchStack(b, time.Hour)
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			id := benchDecide(b, base, key)
			b.StartTimer()
			benchRead(b, base, key, id)
		}
	})
	for _, newer := range []int{100, 1000} {
		b.Run(fmt.Sprintf("stream-%d-newer", newer), func(b *testing.B) {
			_, base, key := readBenchStack(b, time.Hour)
			id := benchDecide(b, base, key)
			for range newer {
				benchDecide(b, base, key)
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				benchRead(b, base, key, id)
			}
		})
	}
}

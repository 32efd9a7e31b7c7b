package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// BenchmarkSessionDetailToken measures GET /v1/sessions/:id over HTTP on
// an all-in-one stack (ingest projector at its default 200 ms linger),
// reporting p50 and p99:
//
//   - none: no token;
//   - passed: a token of a write the events projector has already acked,
//     the api's cached floor behind it (so one consumer-info read);
//   - fresh: a write, then at once the read with its token (what a
//     client's create-then-read costs: the wait for the projector's
//     batch dominates; the write is outside the timer).
func BenchmarkSessionDetailToken(b *testing.B) {
	st, base, key := readBenchStack(b, 50*time.Millisecond)
	post := func(session string) string {
		r, err := send(base, req{method: http.MethodPost, path: "/v1/events", key: key, body: ev("bench-bot", session, time.Now())})
		if err != nil || r.status != http.StatusAccepted {
			b.Fatalf("post event: %v %s", err, r)
		}
		return r.header.Get(consistency.Header)
	}
	// projected waits until the events projector has acked tok's event
	// (read from the server, not through the api's cached floor).
	projected := func(tok string) {
		t, err := consistency.Parse(tok)
		if err != nil || t[streams.Ingest] == 0 {
			b.Fatalf("token %q: %v", tok, err)
		}
		testkit.Eventually(b, "event projected", func() (bool, string) {
			cons, err := st.JS.Consumer(context.Background(), streams.Ingest, streams.EventsProjector)
			if err != nil {
				return false, err.Error()
			}
			return cons.CachedInfo().AckFloor.Stream >= t[streams.Ingest], fmt.Sprint(cons.CachedInfo().AckFloor)
		})
	}
	read := func(session, tok string) time.Duration {
		h := map[string]string{}
		if tok != "" {
			h[consistency.Header] = tok
		}
		start := time.Now()
		r, err := send(base, req{method: http.MethodGet, path: "/v1/sessions/" + session, key: key, header: h})
		took := time.Since(start)
		if err != nil || r.status != http.StatusOK {
			b.Fatalf("read %s: %v %s", session, err, r)
		}
		return took
	}
	report := func(b *testing.B, lat []time.Duration) {
		slices.Sort(lat)
		b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
		b.ReportMetric(float64(lat[min(len(lat)-1, len(lat)*99/100)].Microseconds()), "p99-µs")
	}
	projected(post("bench-none"))
	b.Run("none", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			lat = append(lat, read("bench-none", ""))
		}
		report(b, lat)
	})
	b.Run("passed", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			session := fmt.Sprintf("bench-passed-%d-%d", b.N, i)
			tok := post(session)
			projected(tok)
			b.StartTimer()
			lat = append(lat, read(session, tok))
		}
		report(b, lat)
	})
	b.Run("fresh", func(b *testing.B) {
		lat := make([]time.Duration, 0, b.N)
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			tok := post("bench-fresh")
			b.StartTimer()
			lat = append(lat, read("bench-fresh", tok))
		}
		report(b, lat)
	})
}

package main

// Failure tests: the projector stopped or killed mid-stream and restarted
// on the same data, and ClickHouse cut off under load. In every case each
// event that got a 2xx must end up in ClickHouse exactly once.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/services/ingest"
)

// proxiedClickHouse puts a proxy between the stack and the test's
// database and returns the DSN that goes through it.
func proxiedClickHouse(t *testing.T) (*chtest.DB, *tcpProxy, string) {
	return stacktest.ProxiedClickHouse(t)
}

// ackBook records which events were acknowledged, per session.
type ackBook struct {
	mu       sync.Mutex
	ids      map[string]string // event id → session
	requests int
	problems []string
	// retried counts items sent again after a "failed" result.
	retried     int
	lastFailure string
}

func newLedger() *ackBook { return &ackBook{ids: map[string]string{}} }

func (l *ackBook) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.ids)
}

func (l *ackBook) batches() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.requests
}

func (l *ackBook) problem(format string, args ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.problems) < 20 {
		l.problems = append(l.problems, fmt.Sprintf(format, args...))
	}
}

func (l *ackBook) check(t *testing.T) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, p := range l.problems {
		t.Error(p)
	}
	if l.retried > 0 {
		t.Logf("%d items were retried after JetStream did not ack in time (%s)", l.retried, l.lastFailure)
	}
}

// perSession is how many acknowledged events each session holds.
func (l *ackBook) perSession() map[string]uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := map[string]uint64{}
	for _, s := range l.ids {
		out[s]++
	}
	return out
}

func (l *ackBook) sortedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.ids))
	for id := range l.ids {
		out = append(out, id)
	}
	sort.Strings(out)
	return out
}

// postBatch sends n fresh events (spread over sessions) in one batch
// request and records what was acknowledged. Ingest needs only JetStream,
// never ClickHouse, so every response must be a 202 (or a 503 when nothing
// could be stored) and no item may be rejected. Items reported "failed"
// (JetStream did not ack in time, which happens on an overloaded machine)
// are retried as the Kaplaix docs tell clients to; a retry that comes back
// "duplicate" means an earlier attempt was stored after all. Safe from any
// goroutine.
func (l *ackBook) postBatch(s *testStack, key string, n, seq int) {
	pending := make([]map[string]any, n)
	for i := range pending {
		sess := fmt.Sprintf("load-%02d", (seq*n+i)%12)
		pending[i] = ev("load-agent", sess, baseTime.Add(time.Duration(seq*n+i)*time.Millisecond))
	}
	l.mu.Lock()
	l.requests++
	l.mu.Unlock()
	for attempt := 1; len(pending) > 0; attempt++ {
		if attempt > 5 {
			l.problem("batch %d: %d events still not acknowledged after %d attempts", seq, len(pending), attempt-1)
			return
		}
		if attempt > 1 {
			l.mu.Lock()
			l.retried += len(pending)
			l.mu.Unlock()
			time.Sleep(500 * time.Millisecond)
		}
		r, err := s.try(req{method: http.MethodPost, path: "/v1/events/batch", key: key, body: map[string]any{"events": pending}})
		if err != nil {
			l.problem("batch %d attempt %d: %v", seq, attempt, err)
			return
		}
		var br batchResponse
		if r.status != http.StatusAccepted && r.status != http.StatusServiceUnavailable {
			l.problem("batch %d attempt %d: %s", seq, attempt, r)
			return
		}
		if err := json.Unmarshal(r.body, &br); err != nil || len(br.Results) != len(pending) {
			l.problem("batch %d attempt %d: %d results for %d events (%v): %s", seq, attempt, len(br.Results), len(pending), err, r)
			return
		}
		var again []map[string]any
		l.mu.Lock()
		for i, res := range br.Results {
			switch {
			case res.Status == "accepted", res.Status == "duplicate" && attempt > 1:
				l.ids[res.EventID] = pending[i]["sessionId"].(string)
			case res.Status == "failed":
				again = append(again, pending[i])
				if l.lastFailure == "" && res.Error != nil {
					l.lastFailure = res.Error.Message
				}
			default:
				l.mu.Unlock()
				l.problem("batch %d attempt %d: item %d is %s: %+v", seq, attempt, i, res.Status, res.Error)
				l.mu.Lock()
			}
		}
		l.mu.Unlock()
		pending = again
	}
}

// projected counts the tenant's distinct events in ClickHouse.
func projected(t *testing.T, db *chtest.DB) uint64 {
	return chCount(t, db, "SELECT count(DISTINCT event_id) FROM events WHERE tenant_id = 'default'")
}

// assertExactlyOnce waits until every acknowledged event is in ClickHouse,
// then checks that each is there exactly once and nothing else is, and
// that the session API agrees.
func assertExactlyOnce(t *testing.T, s *testStack, key string, db *chtest.DB, l *ackBook) {
	t.Helper()
	want := uint64(l.count())
	eventually(t, recovery, func() (bool, string) {
		n := projected(t, db)
		return n == want, fmt.Sprintf("%d of %d acknowledged events in ClickHouse", n, want)
	})
	if n := chCount(t, db, "SELECT count() FROM events FINAL WHERE tenant_id = 'default'"); n != want {
		t.Errorf("count() FINAL = %d, want %d", n, want)
	}
	raw := chCount(t, db, "SELECT count() FROM events WHERE tenant_id = 'default'")
	t.Logf("%d events acknowledged; %d rows before merging (redelivered: %d)", want, raw, raw-want)

	// The very same ids.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rows, err := db.Conn.Query(ctx, "SELECT DISTINCT event_id FROM events WHERE tenant_id = 'default' ORDER BY event_id")
	if err != nil {
		t.Fatal(err)
	}
	var stored []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		stored = append(stored, id)
	}
	rows.Close()
	if ids := l.sortedIDs(); !slices.Equal(stored, ids) {
		t.Errorf("stored ids differ from acknowledged ids (%d stored, %d acknowledged)", len(stored), len(ids))
	}

	// And the API's view: every session with its exact count.
	wantSessions := l.perSession()
	eventually(t, catchUp, func() (bool, string) {
		got := map[string]uint64{}
		for _, ss := range s.allSessions(key, "/v1/sessions?agentId=load-agent", 100) {
			got[ss.SessionID] = ss.EventCount
		}
		return fmt.Sprint(got) == fmt.Sprint(wantSessions), fmt.Sprintf("sessions %v, want %v", got, wantSessions)
	})
}

func TestProjectorRestart(t *testing.T) {
	const (
		total = 3000
		batch = 250
	)
	cases := []struct {
		name string
		// stop takes the first stack down after the first half of the
		// load was acknowledged; it posts the second half itself.
		stop func(t *testing.T, s *testStack, p *tcpProxy, post func())
		// midStream reports whether the stop is certain to have cut
		// projection short (not timing dependent).
		midStream bool
	}{
		{
			name: "graceful stop while projecting",
			stop: func(t *testing.T, s *testStack, p *tcpProxy, post func()) {
				post()
				s.Stop()
			},
		},
		{
			// The final flush cannot reach ClickHouse: the buffered
			// batch is left unacked and must be redelivered.
			name: "stop while ClickHouse is unreachable",
			stop: func(t *testing.T, s *testStack, p *tcpProxy, post func()) {
				p.Stop()
				post()
				s.Stop()
				if err := p.Start(); err != nil {
					t.Fatal(err)
				}
			},
			midStream: true,
		},
		{
			// The broker vanishes under the projector: rows may be
			// written whose acks never arrive, so they are delivered
			// again after the restart and must not be counted twice.
			name: "NATS killed while projecting",
			stop: func(t *testing.T, s *testStack, p *tcpProxy, post func()) {
				post()
				s.st.NATS.Shutdown()
				s.st.NATS.WaitForShutdown()
				s.Stop()
			},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			db, proxy, dsn := proxiedClickHouse(t)
			dataDir := t.TempDir()
			// Small projector batches, so that 3,000 events take many
			// flushes and a stop lands in the middle of them.
			slow := func(ic *ingest.Config) { ic.ProjectorBatch = 50; ic.ProjectorLinger = 20 * time.Millisecond }
			s1 := startStack(t, stacktest.Options{DataDir: dataDir, DSN: dsn, Ingest: slow, API: unlimited})
			key := s1.st.BootstrapKey
			l := newLedger()
			seq := 0
			post := func(s *testStack, n int) {
				for range n / batch {
					l.postBatch(s, key, batch, seq)
					seq++
				}
			}
			start := time.Now()
			post(s1, total/2)
			c.stop(t, s1, proxy, func() { post(s1, total/2) })
			l.check(t)
			if l.count() != total {
				t.Fatalf("%d of %d events acknowledged", l.count(), total)
			}
			atStop := projected(t, db)
			t.Logf("%d of %d events projected when the first stack stopped (after %s)", atStop, total, time.Since(start).Round(time.Millisecond))
			if c.midStream && atStop >= total {
				t.Fatalf("projection was not cut short (%d of %d)", atStop, total)
			}

			// Same data directory, new ports.
			s2 := startStack(t, stacktest.Options{DataDir: dataDir, DSN: dsn, Ingest: slow, API: unlimited})
			if s2.st.BootstrapKey != "" {
				t.Errorf("restart created another bootstrap key")
			}
			expect(t, s2.get(key, "/v1/sessions?limit=1"), http.StatusOK, "the first stack's key after restart")
			post(s2, 2*batch)
			l.check(t)
			assertExactlyOnce(t, s2, key, db, l)
			t.Logf("caught up %s after the load began", time.Since(start).Round(time.Millisecond))
		})
	}
}

func TestClickHouseOutageUnderLoad(t *testing.T) {
	db, proxy, dsn := proxiedClickHouse(t)
	s := startStack(t, stacktest.Options{DSN: dsn, API: unlimited})
	key := s.st.BootstrapKey
	l := newLedger()

	stop := make(chan struct{})
	loaderDone := make(chan struct{})
	go func() {
		defer close(loaderDone)
		for seq := 0; ; seq++ {
			select {
			case <-stop:
				return
			default:
			}
			l.postBatch(s, key, 50, seq)
		}
	}()
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		<-loaderDone
	})
	t.Cleanup(stopLoad)
	waitBatches := func(n int) {
		t.Helper()
		from := l.batches()
		eventually(t, recovery, func() (bool, string) {
			return l.batches() >= from+n, fmt.Sprintf("%d batches posted, want %d", l.batches()-from, n)
		})
	}

	// Under load and projecting.
	waitBatches(10)
	eventually(t, catchUp, func() (bool, string) {
		n := projected(t, db)
		return n > 0, "nothing projected yet"
	})

	// Cut ClickHouse off for a few seconds while the load goes on.
	proxy.Stop()
	outage := time.Now()
	eventually(t, catchUp, func() (bool, string) {
		r := s.get("", "/readyz")
		return r.status == http.StatusServiceUnavailable, "readyz during the outage: " + r.String()
	})
	eventually(t, catchUp, func() (bool, string) {
		r := s.get(key, "/v1/sessions")
		if r.status != http.StatusServiceUnavailable {
			return false, "reads during the outage: " + r.String()
		}
		checkEnvelope(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "internal_error", []pair{{"", "unavailable"}})
		return r.header.Get("Retry-After") != "", "no Retry-After on 503"
	})
	during := l.count()
	waitBatches(10)
	if d := 3*time.Second - time.Since(outage); d > 0 {
		time.Sleep(d)
	}
	acceptedInOutage := l.count() - during
	if acceptedInOutage == 0 {
		t.Fatal("no events were acknowledged while ClickHouse was down")
	}
	if err := proxy.Start(); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d events acknowledged during a %s outage", acceptedInOutage, time.Since(outage).Round(100*time.Millisecond))

	// Back up: the load goes on a little, then stops.
	waitBatches(10)
	stopLoad()
	l.check(t)
	t.Logf("%d events acknowledged in %d batches", l.count(), l.batches())
	eventually(t, recovery, func() (bool, string) {
		r := s.get("", "/readyz")
		return r.status == http.StatusOK, "readyz after the outage: " + r.String()
	})
	assertExactlyOnce(t, s, key, db, l)
}

package ratelimit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

func fixed(l Limits) LimitsSource { return func(string) Limits { return l } }

func newTestLimiter(nc *nats.Conn, id string, l Limits, c *clock) *Limiter {
	lim := New(nc, id, fixed(l), slog.New(slog.NewTextHandler(io.Discard, nil)))
	lim.now = c.now
	return lim
}

func TestAllow(t *testing.T) {
	tenant10 := Limits{Ingest: Rate{PerSecond: 10, Burst: 10}}
	perKey5 := Limits{Ingest: Rate{PerSecond: 100, Burst: 100}, IngestPerKey: Rate{PerSecond: 5, Burst: 5}}
	type step struct {
		advance  time.Duration
		key      string
		n        int
		wantWait time.Duration // 0: admitted
	}
	cases := []struct {
		name   string
		limits Limits
		steps  []step
	}{
		{"burst then refused", tenant10, []step{{0, "a", 10, 0}, {0, "a", 1, 100 * time.Millisecond}}},
		{"refill admits again", tenant10, []step{{0, "a", 10, 0}, {200 * time.Millisecond, "a", 2, 0}, {0, "a", 1, 100 * time.Millisecond}}},
		{"refill caps at burst", tenant10, []step{{time.Hour, "a", 10, 0}, {0, "a", 1, 100 * time.Millisecond}}},
		{"tenant bucket shared by keys", tenant10, []step{{0, "a", 6, 0}, {0, "b", 4, 0}, {0, "c", 1, 100 * time.Millisecond}}},
		{"per-key bucket", perKey5, []step{{0, "a", 5, 0}, {0, "a", 1, 200 * time.Millisecond}, {0, "b", 5, 0}}},
		{"cost above burst is capped", tenant10, []step{{0, "a", 1000, 0}, {0, "a", 1, 100 * time.Millisecond}}},
		{"wait covers the whole cost", tenant10, []step{{0, "a", 10, 0}, {0, "a", 5, 500 * time.Millisecond}}},
		{"refused requests spend nothing", tenant10, []step{{0, "a", 10, 0}, {0, "a", 5, 500 * time.Millisecond}, {100 * time.Millisecond, "a", 1, 0}}},
		{"unlimited", Limits{}, []step{{0, "a", 1 << 20, 0}, {0, "a", 1 << 20, 0}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &clock{t: time.Unix(1_700_000_000, 0)}
			l := newTestLimiter(nil, "i1", tc.limits, c)
			for i, s := range tc.steps {
				c.advance(s.advance)
				got := l.Allow(Ingest, "acme", s.key, s.n)
				if d := got - s.wantWait; d < -time.Millisecond || d > time.Millisecond {
					t.Fatalf("step %d: Allow(%s, %d) wait = %v, want %v", i, s.key, s.n, got, s.wantWait)
				}
			}
		})
	}
}

func TestClassesAndTenantsAreSeparate(t *testing.T) {
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	l := newTestLimiter(nil, "i1", Limits{Ingest: Rate{PerSecond: 1, Burst: 1}, Decisions: Rate{PerSecond: 1, Burst: 1}}, c)
	for _, tc := range []struct {
		class  Class
		tenant string
	}{{Ingest, "acme"}, {Decisions, "acme"}, {Ingest, "globex"}} {
		if w := l.Allow(tc.class, tc.tenant, "k", 1); w != 0 {
			t.Errorf("%s/%s: first request refused (%v)", tc.class, tc.tenant, w)
		}
		if w := l.Allow(tc.class, tc.tenant, "k", 1); w == 0 {
			t.Errorf("%s/%s: second request admitted", tc.class, tc.tenant)
		}
	}
}

func TestLimitsValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		l    Limits
		ok   bool
	}{
		{"defaults", DefaultLimits, true},
		{"unlimited", Limits{}, true},
		{"negative rate", Limits{Ingest: Rate{PerSecond: -1, Burst: 1}}, false},
		{"negative burst", Limits{DecisionsPerKey: Rate{PerSecond: 1, Burst: -1}}, false},
		{"rate without burst", Limits{Decisions: Rate{PerSecond: 1}}, false},
		{"absurd rate", Limits{IngestPerKey: Rate{PerSecond: 1e9, Burst: 1}}, false},
	} {
		if err := tc.l.Validate(); (err == nil) != tc.ok {
			t.Errorf("%s: Validate = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
}

// TestSharedAcrossInstances runs two limiters on a real NATS server: what
// one instance admits is charged to the other, so together they admit the
// tenant's burst once, not twice.
func TestSharedAcrossInstances(t *testing.T) {
	env := natstest.Start(t)
	// The second instance connects as the api service: gossip is within
	// its permissions.
	nc2, _ := env.ConnectAs(t, streams.ServiceAPI)
	limits := Limits{Decisions: Rate{PerSecond: 0.001, Burst: 20}}
	c := &clock{t: time.Unix(1_700_000_000, 0)}
	a, b := newTestLimiter(env.Conn, "a", limits, c), newTestLimiter(nc2, "b", limits, c)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, l := range []*Limiter{a, b} {
		go func() { _ = l.Run(ctx) }()
	}
	// Wait until b hears a: probes on another tenant, so that reports
	// published before b's subscription was live cost acme nothing.
	// Each check first looks for any earlier probe at b, then sends
	// another.
	var probes []string
	testkit.Eventually(t, "b hears from a", func() bool {
		for _, p := range probes {
			if b.Tokens(Decisions, p, "") < 20 {
				return true
			}
		}
		probe := "probe-" + strconv.Itoa(len(probes))
		if a.Allow(Decisions, probe, "probe", 1) != 0 {
			t.Fatal("probe refused")
		}
		a.Flush()
		probes = append(probes, probe)
		return false
	})
	admitted := 0 // what either instance admits for acme
	for range 15 {
		if a.Allow(Decisions, "acme", "ka", 1) == 0 {
			admitted++
		}
	}
	a.Flush()
	testkit.Eventually(t, "b hears what a spent", func() (bool, string) {
		held := b.Tokens(Decisions, "acme", "")
		return held <= 20-float64(admitted)+0.5, fmt.Sprintf("b holds %v tokens; a spent %d of 20", held, admitted)
	})
	for range 20 {
		if b.Allow(Decisions, "acme", "kb", 1) == 0 {
			admitted++
		}
	}
	if admitted != 20 {
		t.Errorf("two instances admitted %d requests; the shared burst is 20", admitted)
	}
}

func TestLimitsWithinBounds(t *testing.T) {
	ceiling := Limits{Ingest: Rate{100, 200}, IngestPerKey: Rate{50, 100}, Decisions: Rate{10, 20}}
	for _, tc := range []struct {
		name    string
		l       Limits
		fields  []string
		clamped Limits
	}{
		{"empty removes every limit: refused, and clamps to the ceiling", Limits{},
			[]string{"ingest.perSecond", "ingestPerKey.perSecond", "decisions.perSecond"}, ceiling},
		{"lower is fine", Limits{Ingest: Rate{1, 2}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}, DecisionsPerKey: Rate{3, 3}},
			nil, Limits{Ingest: Rate{1, 2}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}, DecisionsPerKey: Rate{3, 3}}},
		{"higher rate", Limits{Ingest: Rate{101, 2}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}},
			[]string{"ingest"}, Limits{Ingest: Rate{100, 2}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}}},
		{"higher burst", Limits{Ingest: Rate{1, 201}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}},
			[]string{"ingest"}, Limits{Ingest: Rate{1, 200}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}}},
		{"unbounded in the deployment stays unbounded", Limits{Ingest: Rate{1, 1}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}, DecisionsPerKey: Rate{1e6, 1e6}},
			nil, Limits{Ingest: Rate{1, 1}, IngestPerKey: Rate{1, 1}, Decisions: Rate{5, 5}, DecisionsPerKey: Rate{1e6, 1e6}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, v := range tc.l.Beyond(ceiling) {
				fields = append(fields, v.Field)
			}
			if !slices.Equal(fields, tc.fields) {
				t.Errorf("Beyond = %v, want %v", fields, tc.fields)
			}
			if got := tc.l.Clamp(ceiling); got != tc.clamped {
				t.Errorf("Clamp = %+v, want %+v", got, tc.clamped)
			}
		})
	}
}

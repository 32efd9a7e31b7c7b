package baseline

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
)

func cfg() Config {
	c := DefaultConfig()
	c.Warmup, c.BurstCount, c.SpikeMin, c.SpikeHistory = 3, 3, 5, 2
	return c
}

const hour = int64(3_600_000)

func run(t *testing.T, a *Agent, obs []Observation) []string {
	t.Helper()
	var out []string
	for _, o := range obs {
		for _, an := range a.Observe(o, cfg()) {
			if an.Signature == "" || an.Severity == "" || an.Summary == "" || an.Evidence == nil {
				t.Fatalf("anomaly without its explanation: %+v", an)
			}
			out = append(out, fmt.Sprintf("%s@%s:%s", o.ID, an.Type, an.Value))
		}
	}
	return out
}

func normal(id string, at int64) Observation {
	return Observation{ID: id, AtMS: at, Kind: "tool_call", Tool: "search", Destination: "api.search.com", Publisher: "acme"}
}

func TestObserve(t *testing.T) {
	cases := []struct {
		name string
		obs  []Observation
		want []string
	}{
		{"nothing is new during the warm-up", []Observation{
			normal("1", 0), {ID: "2", AtMS: 1, Kind: "http", Tool: "fetch", Destination: "x.com", Publisher: "p"}, normal("3", 2),
		}, nil},
		{"novelty after the warm-up, each value once", []Observation{
			normal("1", 0), normal("2", 1), normal("3", 2),
			{ID: "4", AtMS: 3, Kind: "http", Tool: "fetch", Destination: "x.com", Publisher: "p"},
			{ID: "5", AtMS: 4, Kind: "http", Tool: "fetch", Destination: "x.com", Publisher: "p"},
		}, []string{"4@new_kind:http", "4@new_tool:fetch", "4@new_destination:x.com", "4@new_publisher:p"}},
		{"a declared value is not novel but an undeclared one is flagged at once", []Observation{
			{ID: "1", AtMS: 0, Tool: "search", Declared: true, DeclaredTools: []string{"search", "mail"}},
			{ID: "2", AtMS: 1, Tool: "shell", Declared: true, DeclaredTools: []string{"search", "mail"}},
			{ID: "3", AtMS: 2, Tool: "shell", Declared: true, DeclaredTools: []string{"search", "mail"}},
			{ID: "4", AtMS: 3, Tool: "mail", Declared: true, DeclaredTools: []string{"search", "mail"}},
		}, []string{"2@undeclared_tool:shell"}},
		{"an error burst within the window, once", []Observation{
			{ID: "1", AtMS: 0, Error: true}, {ID: "2", AtMS: 10_000, Error: true}, {ID: "3", AtMS: 20_000, Error: true},
			{ID: "4", AtMS: 30_000, Error: true},
		}, []string{"3@error_burst:"}},
		{"errors spread wider than the window are no burst", []Observation{
			{ID: "1", AtMS: 0, Error: true}, {ID: "2", AtMS: 40_000, Error: true}, {ID: "3", AtMS: 80_000, Error: true},
		}, nil},
		{"a block burst", []Observation{
			{ID: "1", AtMS: 0, Blocked: true}, {ID: "2", AtMS: 1, Blocked: true}, {ID: "3", AtMS: 2, Blocked: true},
		}, []string{"3@block_burst:"}},
	}
	// A rate spike: two quiet hours of 2, then a third hour reaching
	// max(SpikeMin 5, 3 × median 2 = 6) = 6.
	var spike []Observation
	for h := int64(0); h < 2; h++ {
		spike = append(spike, normal(fmt.Sprint("h", h, "a"), h*hour), normal(fmt.Sprint("h", h, "b"), h*hour+1))
	}
	for i := int64(0); i < 8; i++ {
		spike = append(spike, normal(fmt.Sprint("s", i), 2*hour+i))
	}
	cases = append(cases, struct {
		name string
		obs  []Observation
		want []string
	}{"a rate spike against the agent's own hours, once per hour", spike, []string{"s5@rate_spike:"}})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := run(t, New("t", "a"), c.obs)
			if strings.Join(got, ",") != strings.Join(c.want, ",") {
				t.Fatalf("got %v\nwant %v", got, c.want)
			}
		})
	}
}

func TestResetAndDeterminism(t *testing.T) {
	obs := []Observation{normal("1", 0), normal("2", 1), normal("3", 2), {ID: "4", AtMS: 3, Tool: "new"}}
	a, b := New("t", "a"), New("t", "a")
	ra, rb := run(t, a, obs), run(t, b, obs)
	if !reflect.DeepEqual(ra, rb) || !reflect.DeepEqual(a, b) {
		t.Fatal("the same observations gave different baselines")
	}
	a.Reset("r1")
	if a.Observations != 0 || len(a.Tools) != 0 || a.ResetCount != 1 {
		t.Fatalf("reset left %+v", a)
	}
	// After a reset the warm-up starts again: nothing is new.
	if got := run(t, a, []Observation{{ID: "5", AtMS: 4, Tool: "other"}}); got != nil {
		t.Fatalf("flagged during the new warm-up: %v", got)
	}
	if Signature("t", "a", NewTool, "x") != Signature("t", "a", NewTool, "x") || Signature("t", "a", NewTool, "x") == Signature("u", "a", NewTool, "x") {
		t.Fatal("signatures must be stable and tenant-scoped")
	}
	if err := cfg().Validate(); err != nil {
		t.Fatal(err)
	}
	bad := cfg()
	bad.SpikeFactor = 1
	if bad.Validate() == nil {
		t.Fatal("SpikeFactor 1 accepted")
	}
}

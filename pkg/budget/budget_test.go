package budget

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

func TestTokensFromPayload(t *testing.T) {
	tests := []struct {
		name string
		p    map[string]any
		want Tokens
	}{
		{"nothing", map[string]any{"toolName": "x"}, Tokens{}},
		{"otel flat", map[string]any{"gen_ai.usage.input_tokens": 120.0, "gen_ai.usage.output_tokens": 30.0, "gen_ai.request.model": "gpt-4o"}, Tokens{120, 30, "gpt-4o"}},
		{"otel nested", map[string]any{"gen_ai": map[string]any{"usage": map[string]any{"input_tokens": 5.0, "output_tokens": 7.0}, "response": map[string]any{"model": "claude-sonnet-4"}}}, Tokens{5, 7, "claude-sonnet-4"}},
		{"otel under attributes", map[string]any{"attributes": map[string]any{"gen_ai.usage.input_tokens": "40", "gen_ai.usage.output_tokens": 2.0}}, Tokens{40, 2, ""}},
		{"provider usage object", map[string]any{"model": "gpt-4o-mini", "usage": map[string]any{"prompt_tokens": 11.0, "completion_tokens": 4.0}}, Tokens{11, 4, "gpt-4o-mini"}},
		{"camel case", map[string]any{"inputTokens": 3.0, "outputTokens": 9.0}, Tokens{3, 9, ""}},
		{"negative and junk ignored", map[string]any{"inputTokens": -3.0, "outputTokens": "many"}, Tokens{}},
		{"response model before request model", map[string]any{"gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06", "inputTokens": 1.0}, Tokens{1, 0, "gpt-4o-2024-08-06"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := TokensFromPayload(tt.p); got != tt.want {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestPrices(t *testing.T) {
	p := Prices{"gpt-4o": {2.5, 10}, "gpt-4o-mini": {0.15, 0.6}, "big": {15, 75}}
	tests := []struct {
		name string
		p    Prices
		t    Tokens
		want int64
	}{
		{"exact", p, Tokens{1_000_000, 0, "gpt-4o"}, 2_500_000},
		{"longest prefix", p, Tokens{1_000_000, 1_000_000, "gpt-4o-mini-2024-07-18"}, 750_000},
		{"dated version", p, Tokens{0, 1000, "gpt-4o-2024-08-06"}, 10_000},
		{"unknown model priced as the most expensive", p, Tokens{1000, 1000, "mystery"}, 90_000},
		{"unknown model with a default entry", Prices{"default": {1, 1}, "gpt-4o": {2.5, 10}}, Tokens{1000, 0, "mystery"}, 1000},
		{"a fraction of a micro-dollar rounds up", p, Tokens{1, 0, "gpt-4o-mini"}, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.MicroUSD(tt.t); got != tt.want {
				t.Fatalf("MicroUSD = %d, want %d", got, tt.want)
			}
		})
	}
	if err := DefaultPrices().Validate(); err != nil {
		t.Fatalf("default prices: %v", err)
	}
	for _, bad := range []Prices{{}, {"x": {-1, 0}}} {
		if bad.Validate() == nil {
			t.Errorf("%v validated", bad)
		}
	}
}

// TestCounters: increments from two connections add up on one counter;
// an increment repeated with its message id is not counted twice;
// counters survive a restart of the server on the same store.
func TestCounters(t *testing.T) {
	dir := t.TempDir()
	env := natstest.StartIn(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// Two policy replicas count, the api lists: each as its own NATS
	// user, so the streams' access table is checked too.
	_, js1 := env.ConnectAs(t, streams.ServicePolicy)
	_, js2 := env.ConnectAs(t, streams.ServicePolicy)
	_, jsAPI := env.ConnectAs(t, streams.ServiceAPI)
	if err := natsx.EnsureStreams(ctx, js1, streams.BudgetsConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	a, b, api := NewCounters(js1), NewCounters(js2), NewCounters(jsAPI)
	subj := streams.BudgetUsageSubject("acme", "bud_1", 1700000000, "agent.with dots")
	other := streams.BudgetUsageSubject("acme", "bud_1", 1700000000, "a2")
	steps := []struct {
		c     *Counters
		subj  string
		units int64
		id    string
		total int64
		dup   bool
	}{
		{a, subj, 1, "d1", 1, false},
		{b, subj, 5, "d2", 6, false},
		{b, subj, 1, "d1", 6, true}, // redelivered: not counted
		{a, other, 2, "d3", 2, false},
		{a, subj, 1, "d4", 7, false},
	}
	for i, s := range steps {
		scope := "agent.with dots"
		if s.subj == other {
			scope = "a2"
		}
		total, dup, err := s.c.Add(ctx, s.subj, s.units, s.id, scope)
		if err != nil || total != s.total || dup != s.dup {
			t.Fatalf("step %d: Add = %d %v %v, want %d %v", i, total, dup, err, s.total, s.dup)
		}
	}
	if n, err := b.Get(ctx, streams.BudgetUsageSubject("acme", "bud_1", 1700000060, "a2")); err != nil || n != 0 {
		t.Fatalf("a counter never added to: %d %v", n, err)
	}
	list, n, err := api.List(ctx, streams.BudgetWindowFilter("acme", "bud_1", 1700000000), 10)
	if err != nil || n != 2 || len(list) != 2 || list[0] != (Scoped{"agent.with dots", 7}) || list[1] != (Scoped{"a2", 2}) {
		t.Fatalf("List = %+v %d %v", list, n, err)
	}
	if list, n, err := api.List(ctx, streams.BudgetWindowFilter("acme", "bud_1", 1700000000), 1); err != nil || n != 2 || len(list) != 1 || list[0].Units != 7 {
		t.Fatalf("List at most 1 = %+v %d %v", list, n, err)
	}
	if list, n, err := api.List(ctx, streams.BudgetWindowFilter("globex", "bud_1", 1700000000), 10); err != nil || n != 0 || len(list) != 0 {
		t.Fatalf("another tenant's window: %+v %d %v", list, n, err)
	}

	env.Server.Shutdown()
	env.Server.WaitForShutdown()
	env = natstest.StartIn(t, dir)
	_, js3 := env.ConnectAs(t, streams.ServicePolicy)
	c := NewCounters(js3)
	if n, err := c.Get(ctx, subj); err != nil || n != 7 {
		t.Fatalf("after a restart: %d %v, want 7", n, err)
	}
}

func TestLoadPrices(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p, err := LoadPrices(write("ok.json", `{"house-model": {"input": 1, "output": 2}, "default": {"input": 5, "output": 5}}`))
	if err != nil || p.For("house-model-v2") != (Price{1, 2}) || p.For("other") != (Price{5, 5}) {
		t.Fatalf("LoadPrices = %v, %v", p, err)
	}
	for name, body := range map[string]string{"empty.json": `{}`, "negative.json": `{"m": {"input": -1}}`, "junk.json": `{"m": "cheap"}`} {
		if _, err := LoadPrices(write(name, body)); err == nil {
			t.Errorf("%s loaded", name)
		}
	}
	if _, err := LoadPrices(filepath.Join(dir, "missing.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

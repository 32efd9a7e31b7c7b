package policy

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// spendRules reads budgets from CEL: a rule may act before the budget's
// own outcome does.
const spendRules = `
id: spend
name: Spend
rules:
  - id: near-cap
    when: budget.daily_calls.used > budget.daily_calls.limit * 0.8
    outcome: warn
    reasonCodes: [NEAR_CAP]
    onError: skip
  - id: pricey-tokens
    when: action.tool == "llm" && budget.tokens.used >= 900
    outcome: require_approval
    reasonCodes: [TOKENS_HIGH]
`

func TestEvaluateBudgets(t *testing.T) {
	p := mustPack(t, spendRules)
	calls := func(used float64, exceeded bool, o Outcome) BudgetState {
		return BudgetState{ID: "bud_1", Name: "daily_calls", Metric: MetricToolCalls, Window: "1d", Used: used, Limit: 10, Outcome: o, Exceeded: exceeded}
	}
	tokens := func(used float64, exceeded, unavailable bool) BudgetState {
		return BudgetState{ID: "bud_2", Name: "tokens", Metric: MetricTokens, Window: "1h", Used: used, Limit: 1000, Outcome: Block, Exceeded: exceeded, Unavailable: unavailable}
	}
	in := func(tool string, bs ...BudgetState) Input {
		return Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: tool}, Budgets: bs}
	}
	tests := []struct {
		name    string
		in      Input
		want    Outcome
		reasons []string
		errs    int
	}{
		// A rule reading a budget the decision has none of errors; onError: skip turns it off.
		{"no budgets", in("lookup"), Allow, []string{ReasonDefaultAllow}, 1},
		{"under every budget", in("lookup", calls(3, false, Block), tokens(10, false, false)), Allow, []string{ReasonDefaultAllow}, 0},
		{"a rule reads used before the cap", in("lookup", calls(9, false, Block)), Warn, []string{"NEAR_CAP"}, 0},
		{"exceeded block budget", in("lookup", calls(11, true, Block)), Block, []string{ReasonBudgetExceeded, "NEAR_CAP"}, 0},
		{"exceeded warn budget", in("lookup", calls(11, true, Warn)), Warn, []string{ReasonBudgetExceeded, "NEAR_CAP"}, 0},
		{"exceeded approval budget", in("lookup", calls(11, true, RequireApproval)), RequireApproval, []string{ReasonBudgetExceeded, "NEAR_CAP"}, 0},
		{"strictest of a budget and a rule", in("llm", calls(11, true, Warn), tokens(950, false, false)), RequireApproval, []string{"TOKENS_HIGH", ReasonBudgetExceeded, "NEAR_CAP"}, 0},
		{"unavailable usage is exceeded and the rule reading it fails closed", in("llm", tokens(0, true, true)), Block,
			[]string{ReasonBudgetExceeded, ReasonBudgetUnavailable, "TOKENS_HIGH", ReasonEvaluationError}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := p.Evaluate(tt.in, OrgPolicy{})
			if d.Outcome != tt.want || !slices.Equal(d.ReasonCodes, tt.reasons) || len(d.Errors) != tt.errs {
				t.Fatalf("got %s %v errors %v, want %s %v with %d errors", d.Outcome, d.ReasonCodes, d.Errors, tt.want, tt.reasons, tt.errs)
			}
			for _, b := range tt.in.Budgets {
				if !b.Exceeded {
					continue
				}
				i := slices.IndexFunc(d.Matches, func(m Match) bool { return m.RuleID == "budget."+b.Name })
				if i < 0 || d.Matches[i].Outcome != b.Outcome || !strings.Contains(d.Matches[i].Message, b.Name) {
					t.Fatalf("no match explains budget %s: %+v", b.Name, d.Matches)
				}
			}
		})
	}
}

func TestBudgetScopeAndCounts(t *testing.T) {
	tests := []struct {
		name           string
		b              Budget
		agent, session string
		action         Action
		key            string
		covers, counts bool
	}{
		{"tenant", Budget{Scope: BudgetTenant, Metric: MetricActions, Active: true}, "a", "", Action{Tool: "x"}, "", true, true},
		{"deleted covers nothing", Budget{Scope: BudgetTenant, Metric: MetricActions}, "a", "", Action{}, "", false, true},
		{"one agent", Budget{Scope: BudgetAgent, AgentID: "a", Metric: MetricActions, Active: true}, "a", "s", Action{}, "a", true, true},
		{"one agent leaves others", Budget{Scope: BudgetAgent, AgentID: "a", Metric: MetricActions, Active: true}, "b", "", Action{}, "b", false, true},
		{"each agent", Budget{Scope: BudgetAgent, Metric: MetricActions, Active: true}, "b", "", Action{}, "b", true, true},
		{"each session", Budget{Scope: BudgetSession, Metric: MetricActions, Active: true}, "b", "s1", Action{}, "s1", true, true},
		{"session budget leaves sessionless decisions", Budget{Scope: BudgetSession, Metric: MetricActions, Active: true}, "b", "", Action{}, "", false, true},
		{"sessions of one agent", Budget{Scope: BudgetSession, AgentID: "a", Metric: MetricActions, Active: true}, "b", "s1", Action{}, "", false, true},
		{"tool calls count tool calls", Budget{Scope: BudgetTenant, Metric: MetricToolCalls, Active: true}, "a", "", Action{Kind: "tool_call"}, "", true, true},
		{"tool calls leave http", Budget{Scope: BudgetTenant, Metric: MetricToolCalls, Active: true}, "a", "", Action{Kind: "http"}, "", true, false},
		{"a tool budget caps its tool", Budget{Scope: BudgetTenant, Metric: MetricActions, Tool: "refund", Active: true}, "a", "", Action{Tool: "refund"}, "", true, true},
		{"a tool budget leaves other tools", Budget{Scope: BudgetTenant, Metric: MetricTokens, Tool: "refund", Active: true}, "a", "", Action{Tool: "lookup"}, "", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, covers := tt.b.ScopeKey(tt.agent, tt.session)
			if covers != tt.covers || (covers && key != tt.key) {
				t.Fatalf("ScopeKey = %q %v, want %q %v", key, covers, tt.key, tt.covers)
			}
			if got := tt.b.Counts(tt.action); got != tt.counts {
				t.Fatalf("Counts = %v, want %v", got, tt.counts)
			}
		})
	}
}

func TestBudgetWindowsAndUnits(t *testing.T) {
	at := time.Date(2026, 12, 4, 21, 37, 42, 0, time.UTC)
	tests := []struct {
		window string
		start  time.Time
	}{
		{"1m", time.Date(2026, 12, 4, 21, 37, 0, 0, time.UTC)},
		{"1h", time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)},
		{"1d", time.Date(2026, 12, 4, 0, 0, 0, 0, time.UTC)},
	}
	for _, tt := range tests {
		if got := (Budget{Window: tt.window}).WindowStart(at); got != tt.start.Unix() {
			t.Errorf("%s window of %s starts %s, want %s", tt.window, at, time.Unix(got, 0).UTC(), tt.start)
		}
	}
	cost := Budget{Metric: MetricCostUSD, Limit: 1.25}
	if cost.LimitUnits() != 1_250_000 || cost.Value(2_500_000) != 2.5 {
		t.Errorf("cost units: limit %d, value %v", cost.LimitUnits(), cost.Value(2_500_000))
	}
	if n := (Budget{Metric: MetricTokens, Limit: 500}).LimitUnits(); n != 500 {
		t.Errorf("token limit units %d", n)
	}
}

func TestBudgetRequestValidate(t *testing.T) {
	lim := func(v float64) *float64 { return &v }
	ok := BudgetRequest{Name: "daily", Scope: BudgetTenant, Metric: MetricActions, Window: "1d", Limit: lim(100), Outcome: "block"}
	with := func(f func(*BudgetRequest)) BudgetRequest { r := ok; f(&r); return r }
	tests := []struct {
		name      string
		r         BudgetRequest
		want      Outcome
		wantPaths []string
	}{
		{"tenant block", ok, Block, nil},
		{"agent warn", with(func(r *BudgetRequest) { r.Scope, r.AgentID, r.Outcome = BudgetAgent, "a1", "warn" }), Warn, nil},
		{"session approval", with(func(r *BudgetRequest) { r.Scope, r.Outcome = BudgetSession, "require_approval" }), RequireApproval, nil},
		{"cost in cents", with(func(r *BudgetRequest) { r.Metric, r.Limit = MetricCostUSD, lim(0.05) }), Block, nil},
		{"name missing", with(func(r *BudgetRequest) { r.Name = "" }), 0, []string{"name"}},
		{"name not an identifier", with(func(r *BudgetRequest) { r.Name = "daily-cap" }), 0, []string{"name"}},
		{"scope unknown", with(func(r *BudgetRequest) { r.Scope = "fleet" }), 0, []string{"scope"}},
		{"tenant naming an agent", with(func(r *BudgetRequest) { r.AgentID = "a1" }), 0, []string{"agentId"}},
		{"metric unknown", with(func(r *BudgetRequest) { r.Metric = "requests" }), 0, []string{"metric"}},
		{"window unknown", with(func(r *BudgetRequest) { r.Window = "1w" }), 0, []string{"window"}},
		{"window missing", with(func(r *BudgetRequest) { r.Window = "" }), 0, []string{"window"}},
		{"limit missing", with(func(r *BudgetRequest) { r.Limit = nil }), 0, []string{"limit"}},
		{"limit zero", with(func(r *BudgetRequest) { r.Limit = lim(0) }), 0, []string{"limit"}},
		{"limit negative", with(func(r *BudgetRequest) { r.Limit = lim(-5) }), 0, []string{"limit"}},
		{"limit fractional actions", with(func(r *BudgetRequest) { r.Limit = lim(2.5) }), 0, []string{"limit"}},
		{"limit huge", with(func(r *BudgetRequest) { r.Limit = lim(1e13) }), 0, []string{"limit"}},
		{"allow is no outcome for a cap", with(func(r *BudgetRequest) { r.Outcome = "allow" }), 0, []string{"outcome"}},
		{"outcome missing", with(func(r *BudgetRequest) { r.Outcome = "" }), 0, []string{"outcome"}},
		{"everything wrong", BudgetRequest{}, 0, []string{"name", "scope", "metric", "window", "limit", "outcome"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.r.Validate()
			if len(tt.wantPaths) == 0 {
				if err != nil || o != tt.want {
					t.Fatalf("Validate = %s, %v; want %s", o, err, tt.want)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Kind != apperr.KindValidation {
				t.Fatalf("err = %v, want a validation error", err)
			}
			var got []string
			for _, d := range ae.Details {
				got = append(got, d.Path)
			}
			if !slices.Equal(got, tt.wantPaths) {
				t.Fatalf("paths %v, want %v", got, tt.wantPaths)
			}
		})
	}
}

// budgetBench is BenchmarkEvaluate100Rules' decision with three budgets
// covering it (the last one exceeded), plus extra policy source.
func budgetBench(b *testing.B, extra string) {
	p := mustPack(b, hundredRules()+extra)
	var bs []BudgetState
	for i := range 3 {
		bs = append(bs, BudgetState{ID: fmt.Sprintf("bud_%d", i), Name: fmt.Sprintf("b%d", i), Metric: MetricActions, Window: "1h",
			Used: float64(10 * i), Limit: 15, Outcome: Block, Exceeded: i == 2})
	}
	in := Input{Tenant: "acme", Action: Action{Kind: "tool_call", Tool: "tool_42", Arguments: map[string]any{"amount": 5000.0}}, Context: map[string]any{}, Budgets: bs}
	if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != Block || d.ReasonCodes[0] != ReasonBudgetExceeded {
		b.Fatalf("got %s %v", d.Outcome, d.ReasonCodes)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in, OrgPolicy{})
	}
}

// BenchmarkEvaluate100RulesBudgets is the engine's share of budgets: the
// built-in check of three budgets, one exceeded. Reading and counting
// usage is the policy service's (see docs/benchmarks.md).
func BenchmarkEvaluate100RulesBudgets(b *testing.B) { budgetBench(b, "") }

// BenchmarkEvaluate100RulesBudgetRule adds a rule that reads
// budget.<name>.used on every decision (a rule pinned to no tool).
func BenchmarkEvaluate100RulesBudgetRule(b *testing.B) {
	budgetBench(b, "  - id: near-cap\n    when: budget.b0.used > budget.b0.limit * 0.8\n    outcome: warn\n")
}

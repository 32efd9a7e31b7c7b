package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/event"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// testClock is the time the stack counts budgets at: tests move it to
// cross window boundaries instead of waiting for them.
type testClock struct{ ns atomic.Int64 }

func newTestClock(at time.Time) *testClock {
	c := &testClock{}
	c.ns.Store(at.UnixNano())
	return c
}

func (c *testClock) Now() time.Time          { return time.Unix(0, c.ns.Load()).UTC() }
func (c *testClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

// budgetStart is where every budget test's clock starts: ten seconds into
// an hour, so a minute's or an hour's advance crosses exactly one window.
var budgetStart = time.Date(2026, 12, 4, 10, 0, 10, 0, time.UTC)

// budgetView is a budget as the API answers it.
type budgetView struct {
	ID        string  `json:"id"`
	Name      string  `json:"name"`
	Scope     string  `json:"scope"`
	AgentID   string  `json:"agentId"`
	Metric    string  `json:"metric"`
	Tool      string  `json:"tool"`
	Window    string  `json:"window"`
	Limit     float64 `json:"limit"`
	Outcome   string  `json:"outcome"`
	Active    bool    `json:"active"`
	CreatedBy string  `json:"createdBy"`
	DeletedBy string  `json:"deletedBy"`
	Usage     *struct {
		WindowStart time.Time `json:"windowStart"`
		WindowEnd   time.Time `json:"windowEnd"`
		Used        float64   `json:"used"`
		Exhausted   bool      `json:"exhausted"`
		ScopeCount  int       `json:"scopeCount"`
		Scopes      []struct {
			Scope     string  `json:"scope"`
			Used      float64 `json:"used"`
			Exhausted bool    `json:"exhausted"`
		} `json:"scopes"`
	} `json:"usage"`
}

// scopeUsed is the use the view lists for scope (0 when not listed).
func (v budgetView) scopeUsed(scope string) float64 {
	if v.Usage == nil {
		return -1
	}
	for _, s := range v.Usage.Scopes {
		if s.Scope == scope {
			return s.Used
		}
	}
	return 0
}

// createBudget posts a budget and returns it with its CONTROL sequence.
func (c polClient) createBudget(body map[string]any) (budgetView, uint64) {
	c.t.Helper()
	r := c.post("/v1/budgets", body).want(c.t, http.StatusCreated, "create budget")
	var b budgetView
	r.decode(c.t, &b)
	if !strings.HasPrefix(b.ID, "bud_") || !b.Active || b.CreatedBy == "" || b.Usage == nil {
		c.t.Fatalf("created budget %s", r)
	}
	seq, err := strconv.ParseUint(r.Header.Get("Vigil-Control-Seq"), 10, 64)
	if err != nil || seq == 0 {
		c.t.Fatalf("created budget without a CONTROL sequence: %q", r.Header.Get("Vigil-Control-Seq"))
	}
	return b, seq
}

func (c polClient) budget(id string) budgetView {
	c.t.Helper()
	var b budgetView
	c.get("/v1/budgets/"+id).want(c.t, http.StatusOK, "get budget").decode(c.t, &b)
	return b
}

// waitUsed waits until the budget's listed use for scope is want: events
// are counted by the policy service as it judges them, asynchronously.
func (c polClient) waitUsed(id, scope string, want float64) {
	c.t.Helper()
	polEventually(c.t, polWait, fmt.Sprintf("budget %s used %v by %q", id, want, scope), func() (bool, string) {
		b := c.budget(id)
		return b.scopeUsed(scope) == want, fmt.Sprintf("%+v", b.Usage)
	})
}

// overBudget reports whether d was decided by budget name with outcome.
func overBudget(d polKLA, outcome, name string) bool {
	return d.Decision == outcome && slices.Contains(d.ReasonCodes, rules.ReasonBudgetExceeded) &&
		slices.ContainsFunc(d.Matches, func(m polMatch) bool { return m.RuleID == "budget."+name })
}

// askTool is a decision request of agent (in session, when set) for tool.
func askTool(agent, session, tool string) map[string]any {
	b := map[string]any{"agentId": agent, "action": map[string]any{"kind": "tool_call", "tool": tool}}
	if session != "" {
		b["sessionId"] = session
	}
	return b
}

// tokenEvent is an LLM call event reporting GenAI token usage the OTel
// way (gen_ai.* attributes in the payload).
func tokenEvent(agent, session, model string, in, out int) map[string]any {
	return map[string]any{
		"eventId": newUUID(), "agentId": agent, "sessionId": session, "sourceTimestamp": time.Now().UTC().Format(time.RFC3339Nano),
		"category": "llm_call", "schemaVersion": "1.0",
		"payload": map[string]any{"gen_ai.request.model": model, "gen_ai.usage.input_tokens": in, "gen_ai.usage.output_tokens": out},
	}
}

// budgetStack is a stack whose budgets count on clock, plus a second
// policy replica (its own NATS connection, catalog and service, judging
// events and answering decisions too).
type budgetStack struct {
	*testStack
	clock   *testClock
	replica policyReplica
}

func startBudgetStack(t *testing.T, dsn, dir string, clock *testClock) budgetStack {
	t.Helper()
	s := startStack(t, stacktest.Options{DSN: dsn, DataDir: dir,
		API:    func(c *api.Config) { unlimited(c); c.Clock = clock.Now },
		Policy: func(c *policysvc.Config) { c.Clock = clock.Now }})
	r := startPolicyReplica(t, s.st, dir, func(c *policysvc.Config) { c.Clock = clock.Now })
	return budgetStack{testStack: s, clock: clock, replica: r}
}

// seen waits until the second replica's catalog has applied CONTROL up
// to seq (the stack's catalog, shared with its api, has by the 201).
// Ingested events carry no CONTROL sequence: an event judged in the
// milliseconds before a replica learns of a new budget is not counted
// against it (docs/policies.md#budgets), so tests that post events
// right after creating a budget wait for both replicas first.
func (s budgetStack) seen(t *testing.T, seq uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.replica.cat.WaitFor(ctx, seq); err != nil {
		t.Fatalf("replica catalog at CONTROL %d: %v", seq, err)
	}
}

// decideOn asks one policy replica directly, the way its NATS responder
// does, after it has seen CONTROL up to seq.
func decideOn(t *testing.T, svc *policysvc.Service, seq uint64, tenant, agent, session string, a rules.Action) rules.DecisionRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rec, err := svc.Decide(ctx, rules.EvaluateRequest{Tenant: tenant, AgentID: agent, SessionID: session, Source: rules.SourceDecision,
		Action: a, ControlSeq: seq, Principal: rules.Principal{KeyID: "e2e", Role: "agent"}})
	if err != nil {
		t.Fatalf("Decide: %v", err)
	}
	return rec
}

func budgetState(rec rules.DecisionRecord, name string) (rules.BudgetState, bool) {
	i := slices.IndexFunc(rec.Input.Budgets, func(b rules.BudgetState) bool { return b.Name == name })
	if i < 0 {
		return rules.BudgetState{}, false
	}
	return rec.Input.Budgets[i], true
}

// TestBudgetsAcrossReplicasAndRestart: one agent's actions budget is
// counted by two policy replicas and the HTTP door together, each seeing
// the others' counts; the action past the limit is refused on whichever
// answers; the count survives a restart of the stack; the next window
// starts from zero.
func TestBudgetsAcrossReplicasAndRestart(t *testing.T) {
	db := chtest.New(t)
	dir := t.TempDir()
	clock := newTestClock(budgetStart)
	s := startBudgetStack(t, db.DSN, dir, clock)
	owner := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleOwner)}
	agentKey := s.key("acme", auth.RoleAgent, "a1", "a2")
	s.register("acme", "a1", "a2")
	agent := polClient{t: t, base: s.base, key: agentKey}
	b, seq := owner.createBudget(map[string]any{"name": "calls", "scope": "agent", "agentId": "a1", "metric": "actions", "window": "1h", "limit": 6, "outcome": "block"})

	lookup := rules.Action{Kind: "tool_call", Tool: "lookup"}
	for i := range 9 {
		var outcome string
		var codes []string
		switch i % 3 {
		case 0, 1: // each replica in turn
			svc := s.st.Policy
			if i%3 == 1 {
				svc = s.replica.svc
			}
			rec := decideOn(t, svc, seq, "acme", "a1", "", lookup)
			st, ok := budgetState(rec, "calls")
			if !ok || st.Used != float64(i+1) || st.Limit != 6 {
				t.Fatalf("decision %d: budget state %+v, want used %d of 6", i+1, rec.Input.Budgets, i+1)
			}
			outcome, codes = rec.Decision.Outcome.String(), rec.Decision.ReasonCodes
		default: // through the HTTP door, answered by either replica
			d := agent.evaluate(askTool("a1", "", "lookup"))
			outcome, codes = d.Decision, d.ReasonCodes
		}
		want := "allow"
		if i >= 6 {
			want = "block"
		}
		if outcome != want || (want == "block") != slices.Contains(codes, rules.ReasonBudgetExceeded) {
			t.Fatalf("decision %d: %s %v, want %s", i+1, outcome, codes, want)
		}
	}
	if d := agent.evaluate(askTool("a2", "", "lookup")); d.Decision != "allow" {
		t.Fatalf("a2 is outside a1's budget: %s", d)
	}
	got := owner.budget(b.ID)
	if got.Usage.Used != 9 || !got.Usage.Exhausted || got.scopeUsed("a1") != 9 || len(got.Usage.Scopes) != 1 || got.Usage.ScopeCount != 1 ||
		!got.Usage.WindowStart.Equal(budgetStart.Truncate(time.Hour)) || !got.Usage.WindowEnd.Equal(budgetStart.Truncate(time.Hour).Add(time.Hour)) {
		t.Fatalf("after nine decisions: %+v", got.Usage)
	}

	// Restart: the count is on JetStream, not in a process.
	s.replica.stop()
	s.Stop()
	s = startBudgetStack(t, db.DSN, dir, clock)
	agent = polClient{t: t, base: s.base, key: agentKey}
	owner.base = s.base
	if d := agent.evaluate(askTool("a1", "", "lookup")); !overBudget(d, "block", "calls") {
		t.Fatalf("first decision after a restart: %s", d)
	}
	if rec := decideOn(t, s.replica.svc, 0, "acme", "a1", "", lookup); rec.Decision.Outcome != rules.Block {
		t.Fatalf("the new replica after a restart: %s %v", rec.Decision.Outcome, rec.Decision.ReasonCodes)
	}
	if got := owner.budget(b.ID); got.scopeUsed("a1") != 11 {
		t.Fatalf("after the restart: %+v, want 11 used", got.Usage)
	}

	// The next hour is a new window.
	clock.Advance(time.Hour)
	if d := agent.evaluate(askTool("a1", "", "lookup")); d.Decision != "allow" {
		t.Fatalf("in the next window: %s", d)
	}
	if got := owner.budget(b.ID); got.scopeUsed("a1") != 1 || got.Usage.Exhausted {
		t.Fatalf("the next window: %+v", got.Usage)
	}
}

// TestBudgetConcurrentReplicas: decisions racing on two replicas for
// the last units of a budget: exactly limit of them pass, whatever the
// interleaving, since each takes its unit from the counter's atomic
// increment rather than from a read.
func TestBudgetConcurrentReplicas(t *testing.T) {
	db := chtest.New(t)
	s := startBudgetStack(t, db.DSN, t.TempDir(), newTestClock(budgetStart))
	owner := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleOwner)}
	const limit, asks = 20, 48
	_, seq := owner.createBudget(map[string]any{"name": "burst", "scope": "tenant", "metric": "tool_calls", "window": "1h", "limit": limit, "outcome": "block"})
	s.seen(t, seq)
	type result struct {
		outcome rules.Outcome
		used    float64
		err     error
	}
	results := make(chan result, asks)
	start := make(chan struct{})
	for i := range asks {
		svc := s.st.Policy
		if i%2 == 1 {
			svc = s.replica.svc
		}
		go func() {
			<-start
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			rec, err := svc.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: fmt.Sprintf("a%d", i%4), Source: rules.SourceDecision,
				Action: rules.Action{Kind: "tool_call", Tool: "lookup"}})
			st, _ := budgetState(rec, "burst")
			results <- result{rec.Decision.Outcome, st.Used, err}
		}()
	}
	close(start)
	allowed, blocked := 0, 0
	seenUsed := map[float64]bool{}
	for range asks {
		r := <-results
		if r.err != nil {
			t.Fatalf("Decide: %v", r.err)
		}
		if seenUsed[r.used] {
			t.Fatalf("two decisions saw the same total %v", r.used)
		}
		seenUsed[r.used] = true
		switch r.outcome {
		case rules.Allow:
			allowed++
			if r.used > limit {
				t.Fatalf("allowed at %v of %d", r.used, limit)
			}
		case rules.Block:
			blocked++
		default:
			t.Fatalf("outcome %s", r.outcome)
		}
	}
	if allowed != limit || blocked != asks-limit {
		t.Fatalf("%d allowed and %d blocked, want %d and %d", allowed, blocked, limit, asks-limit)
	}
}

// TestBudgetEventRedeliveredCountsOnce: an ingested event's tokens are
// counted once however often it is judged: again on the same replica,
// on another replica (a redelivery after a crash), or re-sent to ingest.
func TestBudgetEventRedeliveredCountsOnce(t *testing.T) {
	db := chtest.New(t)
	clock := newTestClock(budgetStart)
	s := startBudgetStack(t, db.DSN, t.TempDir(), clock)
	owner := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleOwner)}
	agent := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleAgent, "a1")}
	s.register("acme", "a1")
	b, seq := owner.createBudget(map[string]any{"name": "tokens", "scope": "tenant", "metric": "tokens", "window": "1d", "limit": 1000, "outcome": "block"})
	s.seen(t, seq)

	ev := tokenEvent("a1", "s1", "gpt-4o", 300, 100)
	agent.post("/v1/events", ev).want(t, http.StatusAccepted, "event")
	owner.waitUsed(b.ID, "", 400)
	// Ingest dedupes a re-sent eventId.
	agent.post("/v1/events", ev).want(t, http.StatusAccepted, "same event again")

	// The consumer's redelivery: the same record judged again, by either
	// replica.
	payload, _ := json.Marshal(ev["payload"])
	rec := event.Record{Tenant: "acme", Event: event.Event{EventID: ev["eventId"].(string), AgentID: "a1", SessionID: "s1", Category: "llm_call", SchemaVersion: "1.0", Payload: payload}}
	for i, svc := range []*policysvc.Service{s.replica.svc, s.st.Policy, s.replica.svc} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		d, err := svc.Decide(ctx, policysvc.EventRequest(rec))
		cancel()
		if err != nil {
			t.Fatalf("redelivery %d: %v", i, err)
		}
		if st, ok := budgetState(d, "tokens"); !ok || st.Used != 400 || st.Exceeded {
			t.Fatalf("redelivery %d counted again: %+v", i, d.Input.Budgets)
		}
	}
	// A second, distinct event does count.
	agent.post("/v1/events", tokenEvent("a1", "s1", "gpt-4o", 500, 200)).want(t, http.StatusAccepted, "second event")
	owner.waitUsed(b.ID, "", 1100)
	if d := agent.evaluate(askTool("a1", "s1", "lookup")); !overBudget(d, "block", "tokens") {
		t.Fatalf("over 1000 tokens: %s", d)
	}
	if got := owner.budget(b.ID); got.Usage.Used != 1100 {
		t.Fatalf("asks add no tokens: %+v", got.Usage)
	}
}

// TestBudgetMetricsWindowsOutcomes: each metric, window, scope and
// outcome, one tenant per case so that tenant budgets stay apart.
func TestBudgetMetricsWindowsOutcomes(t *testing.T) {
	db := chtest.New(t)
	clock := newTestClock(budgetStart)
	s := startBudgetStack(t, db.DSN, t.TempDir(), clock)
	type tenantClients struct{ owner, agent polClient }
	clients := func(t *testing.T, tenant string) tenantClients {
		s.register(tenant, "a1", "a2", "a3")
		return tenantClients{
			owner: polClient{t: t, base: s.base, key: s.key(tenant, auth.RoleOwner)},
			agent: polClient{t: t, base: s.base, key: s.key(tenant, auth.RoleAgent, "a1", "a2", "a3")},
		}
	}
	want := func(t *testing.T, c polClient, body map[string]any, outcome, budget string) {
		t.Helper()
		d := c.evaluate(body)
		if budget == "" {
			if d.Decision != outcome || slices.Contains(d.ReasonCodes, rules.ReasonBudgetExceeded) {
				t.Fatalf("%v: %s, want %s without a budget", body, d, outcome)
			}
			return
		}
		if !overBudget(d, outcome, budget) {
			t.Fatalf("%v: %s, want %s by budget %s", body, d, outcome, budget)
		}
	}

	t.Run("actions, tenant, 1m, block, read by a rule", func(t *testing.T) {
		c := clients(t, "t-actions")
		// A rule may act on a budget before its cap does.
		c.owner.createPolicy("id: near\nname: Near the cap\nrules:\n  - id: near-cap\n    when: budget.calls.used >= 2\n    outcome: warn\n    reasonCodes: [NEAR_CAP]\n    onError: skip\n")
		b, _ := c.owner.createBudget(map[string]any{"name": "calls", "scope": "tenant", "metric": "actions", "window": "1m", "limit": 3, "outcome": "block"})
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
		if d := c.agent.evaluate(askTool("a2", "", "lookup")); d.Decision != "warn" || !slices.Contains(d.ReasonCodes, "NEAR_CAP") {
			t.Fatalf("the rule reading budget.calls.used: %s", d)
		}
		want(t, c.agent, map[string]any{"agentId": "a1", "action": map[string]any{"kind": "http", "tool": "fetch", "target": "https://example.com"}}, "warn", "")
		want(t, c.agent, askTool("a2", "", "lookup"), "block", "calls")
		if got := c.owner.budget(b.ID); got.Usage.Used != 4 || !got.Usage.Exhausted {
			t.Fatalf("usage %+v", got.Usage)
		}
		clock.Advance(time.Minute)
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
	})

	t.Run("tool_calls, each agent, 1h, require_approval", func(t *testing.T) {
		c := clients(t, "t-toolcalls")
		b, _ := c.owner.createBudget(map[string]any{"name": "calls", "scope": "agent", "metric": "tool_calls", "window": "1h", "limit": 1, "outcome": "require_approval"})
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
		// Not a tool call: neither counted nor held.
		want(t, c.agent, map[string]any{"agentId": "a1", "action": map[string]any{"kind": "http", "target": "https://example.com"}}, "allow", "")
		want(t, c.agent, askTool("a1", "", "lookup"), "require_approval", "calls")
		want(t, c.agent, askTool("a2", "", "lookup"), "allow", "") // its own count
		// Each agent's count is listed, the largest first.
		if got := c.owner.budget(b.ID); got.Usage.ScopeCount != 2 || len(got.Usage.Scopes) != 2 || got.Usage.Scopes[0].Scope != "a1" ||
			got.Usage.Scopes[0].Used != 2 || !got.Usage.Scopes[0].Exhausted || got.scopeUsed("a2") != 1 || got.Usage.Used != 2 {
			t.Fatalf("per-agent usage %+v", got.Usage)
		}
		clock.Advance(time.Minute)
		want(t, c.agent, askTool("a1", "", "lookup"), "require_approval", "calls")
		clock.Advance(time.Hour)
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
	})

	t.Run("actions of one tool, one agent, 1h, block", func(t *testing.T) {
		c := clients(t, "t-tool")
		c.owner.createBudget(map[string]any{"name": "refunds", "scope": "agent", "agentId": "a1", "metric": "actions", "tool": "refund", "window": "1h", "limit": 1, "outcome": "block"})
		want(t, c.agent, askTool("a1", "", "refund"), "allow", "")
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
		want(t, c.agent, askTool("a1", "", "refund"), "block", "refunds")
		want(t, c.agent, askTool("a2", "", "refund"), "allow", "")
	})

	t.Run("tokens, each session, 1d, warn", func(t *testing.T) {
		c := clients(t, "t-tokens")
		b, seq := c.owner.createBudget(map[string]any{"name": "tokens", "scope": "session", "metric": "tokens", "window": "1d", "limit": 100, "outcome": "warn"})
		s.seen(t, seq)
		c.agent.post("/v1/events", tokenEvent("a1", "s1", "gpt-4o-mini", 40, 20)).want(t, http.StatusAccepted, "event")
		c.owner.waitUsed(b.ID, "s1", 60)
		want(t, c.agent, askTool("a1", "s1", "lookup"), "allow", "")
		c.agent.post("/v1/events", tokenEvent("a2", "s1", "gpt-4o-mini", 30, 20)).want(t, http.StatusAccepted, "event")
		c.owner.waitUsed(b.ID, "s1", 110)
		want(t, c.agent, askTool("a1", "s1", "lookup"), "warn", "tokens")
		want(t, c.agent, askTool("a1", "s2", "lookup"), "allow", "")
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "") // no session: outside
		clock.Advance(24 * time.Hour)
		want(t, c.agent, askTool("a1", "s1", "lookup"), "allow", "")
	})

	t.Run("cost_usd, one agent, 1d, block, priced per model", func(t *testing.T) {
		c := clients(t, "t-cost")
		b, seq := c.owner.createBudget(map[string]any{"name": "spend", "scope": "agent", "agentId": "a3", "metric": "cost_usd", "window": "1d", "limit": 0.01, "outcome": "block"})
		s.seen(t, seq)
		// gpt-4o: $2.50 in + $10 out per Mtok: 1000 + 500 tokens = $0.0075.
		c.agent.post("/v1/events", tokenEvent("a3", "s1", "gpt-4o-2024-08-06", 1000, 500)).want(t, http.StatusAccepted, "event")
		c.owner.waitUsed(b.ID, "a3", 0.0075)
		want(t, c.agent, askTool("a3", "", "lookup"), "allow", "")
		// A model the table does not name is priced like the dearest
		// ("default": $15 / $75): 100 + 100 tokens = $0.009.
		c.agent.post("/v1/events", tokenEvent("a3", "s1", "mystery-model", 100, 100)).want(t, http.StatusAccepted, "event")
		c.owner.waitUsed(b.ID, "a3", 0.0165)
		want(t, c.agent, askTool("a3", "", "lookup"), "block", "spend")
		want(t, c.agent, askTool("a1", "", "lookup"), "allow", "")
	})
}

// TestBudgetFailsClosed: with the usage store gone, a decision in a
// budget's scope gets the budget's outcome (BUDGET_EXCEEDED with
// BUDGET_UNAVAILABLE), never the allow an unknown count would give;
// decisions outside every budget are unaffected; the listing is a 503.
func TestBudgetFailsClosed(t *testing.T) {
	db := chtest.New(t)
	s := startBudgetStack(t, db.DSN, t.TempDir(), newTestClock(budgetStart))
	owner := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleOwner)}
	agent := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleAgent, "a1", "a2")}
	s.register("acme", "a1", "a2")
	owner.createBudget(map[string]any{"name": "calls", "scope": "agent", "agentId": "a1", "metric": "actions", "window": "1d", "limit": 100, "outcome": "require_approval"})
	owner.createBudget(map[string]any{"name": "tokens", "scope": "agent", "agentId": "a1", "metric": "tokens", "window": "1d", "limit": 100, "outcome": "warn"})
	if d := agent.evaluate(askTool("a1", "", "lookup")); d.Decision != "allow" {
		t.Fatalf("under budget: %s", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.st.JS.DeleteStream(ctx, streams.Budgets); err != nil {
		t.Fatal(err)
	}
	d := agent.evaluate(askTool("a1", "", "lookup"))
	if !overBudget(d, "require_approval", "calls") || !overBudget(d, "require_approval", "tokens") || !slices.Contains(d.ReasonCodes, rules.ReasonBudgetUnavailable) {
		t.Fatalf("with the usage store down: %s %+v", d, d.Matches)
	}
	if d := agent.evaluate(askTool("a2", "", "lookup")); d.Decision != "allow" {
		t.Fatalf("outside every budget: %s", d)
	}
	polError(t, owner.get("/v1/budgets"), http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "internal_error", "list without the usage store")
}

// TestBudgetErrors: every bad request gets the envelope naming the field;
// names are unique among active budgets; a deletion happens once, is in
// the audit log, and frees the name; another tenant neither sees nor
// deletes a budget, nor is held by it.
func TestBudgetErrors(t *testing.T) {
	db := chtest.New(t)
	s := startBudgetStack(t, db.DSN, t.TempDir(), newTestClock(budgetStart))
	owner := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleOwner)}
	valid := func(kv ...any) map[string]any {
		b := map[string]any{"name": "calls", "scope": "tenant", "metric": "actions", "window": "1h", "limit": 1, "outcome": "block"}
		for i := 0; i+1 < len(kv); i += 2 {
			if kv[i+1] == nil {
				delete(b, kv[i].(string))
			} else {
				b[kv[i].(string)] = kv[i+1]
			}
		}
		return b
	}
	tests := []struct {
		name string
		body any
		path string
	}{
		{"name missing", valid("name", nil), "name"},
		{"name not an identifier", valid("name", "daily-calls"), "name"},
		{"scope unknown", valid("scope", "fleet"), "scope"},
		{"tenant scope naming an agent", valid("agentId", "a1"), "agentId"},
		{"metric unknown", valid("metric", "requests"), "metric"},
		{"window unknown", valid("window", "1w"), "window"},
		{"limit missing", valid("limit", nil), "limit"},
		{"limit zero", valid("limit", 0), "limit"},
		{"limit fractional", valid("limit", 1.5), "limit"},
		{"outcome allow", valid("outcome", "allow"), "outcome"},
		{"limit a string", valid("limit", "ten"), ""},
		{"unknown field", valid("period", "1h"), ""},
		{"not JSON", "{", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := owner
			c.t = t
			e := polError(t, c.post("/v1/budgets", tt.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", tt.name)
			if tt.path != "" && (len(e.Error.Details) == 0 || e.Error.Details[0].Path != tt.path) {
				t.Fatalf("details %+v, want path %s", e.Error.Details, tt.path)
			}
		})
	}
	polError(t, owner.get("/v1/budgets?all=maybe"), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "all=maybe")
	polError(t, owner.get("/v1/budgets/bud_nope"), http.StatusNotFound, "NOT_FOUND", "not_found", "get unknown")
	polError(t, owner.do(http.MethodDelete, "/v1/budgets/bud_nope", nil), http.StatusNotFound, "NOT_FOUND", "not_found", "delete unknown")

	b, _ := owner.createBudget(valid())
	polError(t, owner.post("/v1/budgets", valid("limit", 5)), http.StatusConflict, "CONFLICT", "conflict", "same name twice")

	// Another tenant: not seen, not deletable, not held.
	other := polClient{t: t, base: s.base, key: s.key("globex", auth.RoleAdmin)}
	polError(t, other.get("/v1/budgets/"+b.ID), http.StatusNotFound, "NOT_FOUND", "not_found", "get another tenant's budget")
	polError(t, other.do(http.MethodDelete, "/v1/budgets/"+b.ID, nil), http.StatusNotFound, "NOT_FOUND", "not_found", "delete another tenant's budget")
	var page struct {
		Data []budgetView `json:"data"`
	}
	other.get("/v1/budgets?all=true").want(t, http.StatusOK, "other tenant list").decode(t, &page)
	if len(page.Data) != 0 {
		t.Fatalf("another tenant sees %+v", page.Data)
	}
	globexAgent := polClient{t: t, base: s.base, key: s.key("globex", auth.RoleAgent, "g1")}
	s.register("globex", "g1")
	for range 3 {
		if d := globexAgent.evaluate(askTool("g1", "", "lookup")); d.Decision != "allow" {
			t.Fatalf("acme's budget reached globex: %s", d)
		}
	}
	// globex's own budget of the same name is its own.
	other.createBudget(valid())

	var ended budgetView
	owner.do(http.MethodDelete, "/v1/budgets/"+b.ID, nil).want(t, http.StatusOK, "delete").decode(t, &ended)
	if ended.Active || ended.DeletedBy == "" {
		t.Fatalf("deleted budget %+v", ended)
	}
	polError(t, owner.do(http.MethodDelete, "/v1/budgets/"+b.ID, nil), http.StatusConflict, "CONFLICT", "conflict", "delete twice")
	if got := owner.budget(b.ID); got.Active || got.Usage != nil {
		t.Fatalf("a deleted budget reads %+v", got)
	}
	owner.get("/v1/budgets").want(t, http.StatusOK, "list").decode(t, &page)
	if len(page.Data) != 0 {
		t.Fatalf("active budgets after delete: %+v", page.Data)
	}
	// The name is free again, for a new budget with a new id.
	again, _ := owner.createBudget(valid("limit", 2))
	if again.ID == b.ID {
		t.Fatal("a re-created budget reused the id")
	}
	owner.get("/v1/budgets?all=true").want(t, http.StatusOK, "list all").decode(t, &page)
	if len(page.Data) != 2 || page.Data[0].ID != again.ID || page.Data[1].ID != b.ID {
		t.Fatalf("all budgets %+v", page.Data)
	}

	// Each creation and deletion is on CONTROL, hence in the audit log
	// (a budget's subject is its name).
	polEventually(t, polWait, "budget changes in the audit log", func() (bool, string) {
		r := owner.get("/v1/audit?entityType=budget&entityId=calls")
		if r.Status != http.StatusOK {
			return false, r.String()
		}
		var audit struct {
			Data []struct{ Action, Actor string } `json:"data"`
		}
		r.decode(t, &audit)
		var got []string
		for _, e := range audit.Data {
			if !strings.HasPrefix(e.Actor, "key:") {
				return false, r.String()
			}
			got = append(got, e.Action)
		}
		return slices.Equal(got, []string{"created", "deleted", "created"}), r.String()
	})
}

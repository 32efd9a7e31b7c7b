package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
)

type fixture struct {
	env   *natstest.Env
	store *control.Store
	cat   *control.Catalog
	svc   *Service
}

func start(t testing.TB) *fixture {
	t.Helper()
	ctx := context.Background()
	env := natstest.Start(t)
	if err := natsx.EnsureStreams(ctx, env.JS, streams.ControlConfig(streams.DefaultOptions), streams.IngestConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	svc := newService(t, env)
	return &fixture{env: env, store: control.NewStore(env.JS), cat: svc.deps.Catalog, svc: svc}
}

// newService starts a policy service, with its own catalog, on env: the
// fixture's, or another replica of it.
func newService(t testing.TB, env *natstest.Env) *Service {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	cat := control.NewCatalog(env.JS, log)
	runCtx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if err := cat.Run(runCtx); err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.SigningSeed = make([]byte, 32)
	cfg.RedactionKey, cfg.Judge.SealSecret = make([]byte, 32), make([]byte, 32)
	cfg.EvaluateEvents = false
	svc, err := New(cfg, Deps{NC: env.Conn, JS: env.JS, Catalog: cat, Log: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureStreams(runCtx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	return svc
}

func (f *fixture) putPolicy(t testing.TB, tenant, src string) {
	t.Helper()
	doc, err := rules.Parse([]byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cur, err := f.store.Policy(ctx, tenant, doc.ID)
	expect := cur.Version
	if err != nil {
		expect = 0
	}
	seq, err := f.store.PutPolicy(ctx, rules.Record{ID: doc.ID, Tenant: tenant, Doc: doc, Status: rules.StatusActive}, expect)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cat.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

const limitPolicy = `
id: limits
name: limits
rules:
  - id: big
    when: action.tool == "refund" && context.amount > 1000
    outcome: block
    reasonCodes: [BIG_REFUND]
`

func TestDecideRecordsBeforeReturning(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", limitPolicy)
	ctx := context.Background()
	rec, err := f.svc.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: "s1", Action: rules.Action{Tool: "refund"}, Context: map[string]any{"amount": 5000}, Source: rules.SourceDecision})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Decision.Outcome != rules.Block || !slices.Equal(rec.Decision.ReasonCodes, []string{"BIG_REFUND"}) {
		t.Fatalf("decision %+v", rec.Decision)
	}
	st, err := f.env.JS.Stream(ctx, streams.Policy)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, streams.DecisionSubject("acme", "a1", rules.Block.String()))
	if err != nil {
		t.Fatalf("decision not recorded: %v", err)
	}
	var stored rules.DecisionRecord
	if err := json.Unmarshal(msg.Data, &stored); err != nil || stored.ID != rec.ID || stored.Decision.PackHash != rec.Decision.PackHash {
		t.Fatalf("stored %+v (err %v), returned %s", stored, err, rec.ID)
	}
	if err := rules.VerifyPack(f.svc.signer.PublicKey(), "acme", rec.Decision.PackHash, rec.PackSignature); err != nil {
		t.Fatalf("pack signature: %v", err)
	}
}

func TestPolicyChangeRecompilesPack(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", limitPolicy)
	ctx := context.Background()
	req := rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", Action: rules.Action{Tool: "refund"}, Context: map[string]any{"amount": 500}, Source: rules.SourceDecision}
	first, err := f.svc.Decide(ctx, req)
	if err != nil || first.Decision.Outcome != rules.Allow {
		t.Fatalf("first: %v %v", first.Decision.Outcome, err)
	}
	f.putPolicy(t, "acme", `
id: limits
name: limits
rules:
  - id: big
    when: action.tool == "refund" && context.amount > 100
    outcome: block
`)
	second, err := f.svc.Decide(ctx, req)
	if err != nil || second.Decision.Outcome != rules.Block {
		t.Fatalf("after edit: %v %v", second.Decision.Outcome, err)
	}
	if first.Decision.PackHash == second.Decision.PackHash {
		t.Fatal("pack hash unchanged after a policy edit")
	}
	// Another tenant is unaffected.
	other, err := f.svc.Decide(ctx, rules.EvaluateRequest{Tenant: "other", AgentID: "a1", Action: rules.Action{Tool: "refund"}, Context: map[string]any{"amount": 5000}, Source: rules.SourceDecision})
	if err != nil || other.Decision.Outcome != rules.Allow {
		t.Fatalf("other tenant: %v %v", other.Decision.Outcome, err)
	}
}

func TestSessionCountsFeedRules(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", `
id: s
name: s
rules:
  - id: rm
    when: action.tool == "rm"
    outcome: block
  - id: third-strike
    when: session.blocks >= 2
    outcome: block
    reasonCodes: [REPEATED_BLOCKS]
`)
	ctx := context.Background()
	var last rules.DecisionRecord
	for _, tool := range []string{"rm", "rm", "ls"} {
		var err error
		last, err = f.svc.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a", SessionID: "s1", Action: rules.Action{Tool: tool}, Source: rules.SourceDecision})
		if err != nil {
			t.Fatal(err)
		}
	}
	if last.Decision.Outcome != rules.Block || !slices.Contains(last.Decision.ReasonCodes, "REPEATED_BLOCKS") {
		t.Fatalf("third action: %+v", last.Decision)
	}
}

func TestRPC(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", limitPolicy)
	srv, err := f.svc.serveRPC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	tests := []struct {
		name    string
		body    string
		errCode string
		want    rules.Outcome
	}{
		{"decides", `{"tenant":"acme","agentId":"a","action":{"tool":"refund"},"context":{"amount":2000},"source":"decision"}`, "", rules.Block},
		{"bad json", `{`, string(rpc.CodeInvalid), 0},
		{"bad tenant", `{"tenant":"Not Valid","agentId":"a","action":{"tool":"x"}}`, string(rpc.CodeInvalid), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			msg, err := f.env.Conn.Request(streams.EvaluateRPC, []byte(tt.body), 5*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if code := msg.Header.Get(micro.ErrorCodeHeader); code != tt.errCode {
				t.Fatalf("error code %q, want %q (%s)", code, tt.errCode, msg.Header.Get(micro.ErrorHeader))
			}
			if tt.errCode != "" {
				return
			}
			var rec rules.DecisionRecord
			if err := json.Unmarshal(msg.Data, &rec); err != nil || rec.Decision.Outcome != tt.want {
				t.Fatalf("reply %s (%v)", msg.Data, err)
			}
		})
	}
}

// A caller that gives up tells its client "no decision was made"; the
// policy service must then not record one. The request waits for CONTROL
// state that does not exist yet (read-your-writes), the caller's deadline
// passes, and only then does that state arrive: the handler, had it kept
// going, would now record the decision.
func TestRPCRecordsNothingAfterTheCallerGaveUp(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", limitPolicy)
	srv, err := f.svc.StartRPC()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	ctx := context.Background()
	control, err := f.env.JS.Stream(ctx, streams.Control)
	if err != nil {
		t.Fatal(err)
	}
	info, err := control.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req := rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", Action: rules.Action{Tool: "refund"}, Context: map[string]any{"amount": 5000},
		Source: rules.SourceDecision, ControlSeq: info.State.LastSeq + 1}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_, err = rules.EvaluateEndpoint.Call(short, f.env.Conn, req)
	cancel()
	if apperr.KindOf(err) != apperr.KindUnavailable || !strings.Contains(err.Error(), "no decision was made") {
		t.Fatalf("Call = %v, want unavailable: no decision was made", err)
	}
	f.putPolicy(t, "acme", limitPolicy) // the awaited CONTROL state arrives

	// A second request is handled after the first has returned (one
	// subscription delivers in order), so once it is answered the first
	// has recorded whatever it was going to.
	req.ControlSeq = 0
	long, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if _, err := rules.EvaluateEndpoint.Call(long, f.env.Conn, req); err != nil {
		t.Fatal(err)
	}
	policy, err := f.env.JS.Stream(ctx, streams.Policy)
	if err != nil {
		t.Fatal(err)
	}
	pinfo, err := policy.Info(ctx, jetstream.WithSubjectFilter("policy.v1."+streams.DecisionRecorded+".acme.a1.>"))
	if err != nil {
		t.Fatal(err)
	}
	n := uint64(0)
	for _, c := range pinfo.State.Subjects {
		n += c
	}
	if n != 1 {
		t.Fatalf("%d decisions recorded, want 1: the one its caller waited for", n)
	}
}

func TestNoRespondersWithoutService(t *testing.T) {
	f := start(t)
	_, err := f.env.Conn.Request(streams.EvaluateRPC, []byte(`{}`), time.Second)
	if err != nats.ErrNoResponders {
		t.Fatalf("got %v, want no responders", err)
	}
}

func BenchmarkDecide(b *testing.B) {
	f := start(b)
	f.putPolicy(b, "acme", limitPolicy)
	ctx := context.Background()
	req := rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", Action: rules.Action{Tool: "refund"}, Context: map[string]any{"amount": 5000}, Source: rules.SourceDecision}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.svc.Decide(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// putBudget stores an active budget on CONTROL and waits for the catalog.
func (f *fixture) putBudget(t testing.TB, b rules.Budget) {
	t.Helper()
	b.ID, b.Active, b.Op, b.CreatedAt = rules.NewBudgetID(), true, rules.BudgetCreated, time.Now().UTC()
	ctx := context.Background()
	seq, err := f.store.PutBudget(ctx, b, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cat.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkDecideBudgets is BenchmarkDecide with budgets covering every
// decision: one actions budget (one counter increment per decision), and
// three (two increments and one read, made concurrently). The limits are
// never reached, so every iteration counts.
func BenchmarkDecideBudgets(b *testing.B) {
	budgets := []rules.Budget{
		{Tenant: "acme", Name: "calls", Scope: rules.BudgetTenant, Metric: rules.MetricActions, Window: "1d", Limit: 1e12, Outcome: rules.Block},
		{Tenant: "acme", Name: "agent_calls", Scope: rules.BudgetAgent, Metric: rules.MetricToolCalls, Window: "1h", Limit: 1e12, Outcome: rules.RequireApproval},
		{Tenant: "acme", Name: "tokens", Scope: rules.BudgetAgent, AgentID: "a1", Metric: rules.MetricTokens, Window: "1d", Limit: 1e12, Outcome: rules.Warn},
	}
	for _, n := range []int{1, 3} {
		b.Run(fmt.Sprintf("budgets=%d", n), func(b *testing.B) {
			f := start(b)
			f.putPolicy(b, "acme", limitPolicy)
			for _, bu := range budgets[:n] {
				f.putBudget(b, bu)
			}
			ctx := context.Background()
			req := rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", Action: rules.Action{Kind: "tool_call", Tool: "refund"}, Context: map[string]any{"amount": 5000}, Source: rules.SourceDecision}
			rec, err := f.svc.Decide(ctx, req)
			if err != nil || len(rec.Input.Budgets) != n {
				b.Fatalf("Decide: %v, budgets %+v", err, rec.Input.Budgets)
			}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := f.svc.Decide(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

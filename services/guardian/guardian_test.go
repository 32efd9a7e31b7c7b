package guardian

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
)

type running struct {
	svc    *Service
	board  *approval.Board
	cancel context.CancelFunc
	done   chan error
}

// run starts a guardian (and its board) on env until stop is called.
func run(t *testing.T, env *natstest.Env) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log := slog.New(slog.DiscardHandler)
	board := approval.NewBoard(env.JS, log)
	cfg := DefaultConfig()
	cfg.SweepEvery = 50 * time.Millisecond
	svc, err := New(cfg, Deps{NC: env.Conn, JS: env.JS, Board: board, Log: log, Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if err := board.Run(ctx); err != nil {
		t.Fatal(err)
	}
	r := &running{svc: svc, board: board, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(r.stop)
	return r
}

func (r *running) stop() {
	if r.cancel == nil {
		return
	}
	r.cancel()
	<-r.done
	r.cancel = nil
}

func publishDecision(t *testing.T, env *natstest.Env, tenant, id string, outcome policy.Outcome, timeout time.Duration) {
	t.Helper()
	publishRecord(t, env, tenant, id, policy.Decision{Outcome: outcome, ReasonCodes: []string{"X"}, ApprovalTimeout: timeout})
}

// publishRecord records a decision asked for by key:asker, for tool
// refund with arguments {"to":"acct-1"}.
func publishRecord(t *testing.T, env *natstest.Env, tenant, id string, d policy.Decision) {
	t.Helper()
	publishRecordAs(t, env, tenant, id, policy.Principal{KeyID: "asker", Actor: "key:asker"}, d)
}

func publishRecordAs(t *testing.T, env *natstest.Env, tenant, id string, who policy.Principal, d policy.Decision) {
	t.Helper()
	ctx := context.Background()
	if err := natsx.EnsureStreams(ctx, env.JS, streams.PolicyConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	rec := policy.DecisionRecord{
		ID: id, Tenant: tenant, AgentID: "a1", Source: policy.SourceDecision, At: time.Now().UTC(),
		Input: policy.Input{Principal: who,
			Action: policy.Action{Tool: "refund", Arguments: map[string]any{"to": "acct-1"}}, Context: map[string]any{"amount": 5000}},
		Decision: d,
	}
	data, _ := json.Marshal(rec)
	m := nats.NewMsg(streams.DecisionSubject(tenant, "a1", d.Outcome.String()))
	m.Data = data
	if _, err := env.JS.PublishMsg(ctx, m); err != nil {
		t.Fatal(err)
	}
}

func TestIntakeOnlyRequireApproval(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_allow", policy.Allow, 0)
	publishDecision(t, env, "acme", "dec_hold", policy.RequireApproval, 0)
	publishDecision(t, env, "acme", "dec_hold", policy.RequireApproval, 0) // redelivered decision
	testkit.Eventually(t, "pending action", func() bool { _, ok := r.board.ByDecision("acme", "dec_hold"); return ok })
	a, _ := r.board.ByDecision("acme", "dec_hold")
	if a.ID != "pa_hold" || a.Status != approval.Pending || a.ArgsDigest == "" || a.ExpiresAt.Sub(a.CreatedAt) != approval.DefaultTimeout {
		t.Fatalf("pending action %+v", a)
	}
	if _, ok := r.board.ByDecision("acme", "dec_allow"); ok {
		t.Fatal("an allow decision became a pending action")
	}
	if n := len(r.board.Pending()); n != 1 {
		t.Fatalf("%d pending actions, want 1", n)
	}
	// The sweep acts only on what is overdue: nothing before the action
	// expires, the action once it has.
	if due := r.board.Due(a.ExpiresAt.Add(-time.Second)); len(due) != 0 {
		t.Fatalf("due before expiry: %+v", due)
	}
	if due := r.board.Due(a.ExpiresAt); len(due) != 1 || due[0].ID != a.ID {
		t.Fatalf("due at expiry: %+v, want %s", due, a.ID)
	}
}

// An intake durable created before the outcome was in the decision
// subject is updated in place to filter on it: decisions recorded before
// (five-token subjects, no outcome header) are still read, and of those
// recorded since, in either form (with the outcome, then with the shard
// after it), the server delivers only require_approval.
func TestIntakeFiltersOnOutcomeAndReadsOlderDecisions(t *testing.T) {
	env := natstest.Start(t)
	ctx := context.Background()
	if err := natsx.EnsureStreams(ctx, env.JS, streams.PolicyConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	// The durable as the previous release created it.
	if _, err := env.JS.CreateOrUpdateConsumer(ctx, streams.Policy, jetstream.ConsumerConfig{
		Durable: Intake, FilterSubject: streams.AllDecisions, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 1000,
	}); err != nil {
		t.Fatal(err)
	}
	legacy := func(id string, o policy.Outcome) {
		t.Helper()
		data, _ := json.Marshal(policy.DecisionRecord{ID: id, Tenant: "acme", AgentID: "a1", Source: policy.SourceDecision, At: time.Now().UTC(),
			Input:    policy.Input{Principal: policy.Principal{KeyID: "asker", Actor: "key:asker"}, Action: policy.Action{Tool: "refund"}},
			Decision: policy.Decision{Outcome: o, ReasonCodes: []string{"X"}}})
		subj := "policy.v1." + streams.DecisionRecorded + ".acme.a1"
		if strings.HasPrefix(id, "dec_prev") {
			subj += "." + o.String() // the form before the shard
		}
		if _, err := env.JS.Publish(ctx, subj, data); err != nil {
			t.Fatal(err)
		}
	}
	legacy("dec_oldallow", policy.Allow)
	legacy("dec_oldhold", policy.RequireApproval)
	legacy("dec_prevallow", policy.Allow)
	legacy("dec_prevhold", policy.RequireApproval)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_allow", policy.Allow, 0)
	publishDecision(t, env, "acme", "dec_warn", policy.Warn, 0)
	publishDecision(t, env, "acme", "dec_block", policy.Block, 0)
	publishDecision(t, env, "acme", "dec_hold", policy.RequireApproval, 0)
	testkit.Eventually(t, "the three pending actions", func() bool {
		_, old := r.board.ByDecision("acme", "dec_oldhold")
		_, prev := r.board.ByDecision("acme", "dec_prevhold")
		_, cur := r.board.ByDecision("acme", "dec_hold")
		return old && prev && cur
	})
	if n := len(r.board.Pending()); n != 3 {
		t.Fatalf("%d pending actions, want 3", n)
	}
	testkit.Eventually(t, "intake caught up", func() (bool, string) {
		cons, err := env.JS.Consumer(ctx, streams.Policy, Intake)
		if err != nil {
			return false, err.Error()
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false, err.Error()
		}
		// Both five-token decisions, the require_approval one before the
		// shard and the one since; the allow, warn and block in the two
		// later forms were never delivered.
		return info.NumPending == 0 && info.NumAckPending == 0 && info.Delivered.Consumer == 4 && len(info.Config.FilterSubjects) == 3,
			fmt.Sprintf("pending %d, ack pending %d, delivered %d, filters %v", info.NumPending, info.NumAckPending, info.Delivered.Consumer, info.Config.FilterSubjects)
	})
}

func TestConcurrentDecideExactlyOnce(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_race", policy.RequireApproval, 0)
	testkit.Eventually(t, "pending action", func() bool { _, ok := r.board.ByDecision("acme", "dec_race"); return ok })
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		wins      int
		conflicts int
	)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			decision := []string{"approve", "reject"}[i%2]
			_, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_race", Decision: decision, By: "u"})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				wins++
			case apperr.Is(err, apperr.KindConflict):
				conflicts++
			default:
				t.Errorf("unexpected error: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins != 1 || conflicts != 7 {
		t.Fatalf("wins=%d conflicts=%d, want exactly one winner", wins, conflicts)
	}
}

func TestDecideErrors(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_e", policy.RequireApproval, 0)
	testkit.Eventually(t, "pending action", func() bool { _, ok := r.board.ByDecision("acme", "dec_e"); return ok })
	tests := []struct {
		name string
		req  approval.DecideRequest
		kind apperr.Kind
	}{
		{"unknown id", approval.DecideRequest{Tenant: "acme", ID: "pa_nope", Decision: "approve"}, apperr.KindNotFound},
		{"other tenant", approval.DecideRequest{Tenant: "other", ID: "pa_e", Decision: "approve"}, apperr.KindNotFound},
		{"bad decision", approval.DecideRequest{Tenant: "acme", ID: "pa_e", Decision: "maybe"}, apperr.KindValidation},
		{"reroute without group", approval.DecideRequest{Tenant: "acme", ID: "pa_e", Decision: "reroute"}, apperr.KindValidation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := r.svc.Decide(context.Background(), tt.req); !apperr.Is(err, tt.kind) {
				t.Fatalf("got %v", err)
			}
		})
	}
	a, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_e", Decision: "reroute", ReviewerGroup: "finance"})
	if err != nil || a.ReviewerGroup != "finance" || a.Status != approval.Pending {
		t.Fatalf("reroute: %+v %v", a, err)
	}
	if _, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_e", Decision: "reject", By: "u"}); err != nil {
		t.Fatalf("reject after reroute: %v", err)
	}
}

func TestExpiryAppliedAfterRestart(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_late", policy.RequireApproval, 400*time.Millisecond)
	var pending approval.Action
	testkit.Eventually(t, "pending action", func() (ok bool) { pending, ok = r.board.ByDecision("acme", "dec_late"); return ok })
	r.stop()
	// The action's own deadline passes while the guardian is down.
	testkit.Eventually(t, "the expiry deadline to pass", func() bool { return time.Now().After(pending.ExpiresAt) })
	r2 := run(t, env)
	testkit.Eventually(t, "expiry", func() bool {
		a, ok := r2.board.ByDecision("acme", "dec_late")
		return ok && a.Status == approval.Expired
	})
	a, _ := r2.board.ByDecision("acme", "dec_late")
	if a.Outcome() != approval.Rejected {
		t.Fatalf("expired outcome %s, want rejected", a.Outcome())
	}
	if _, err := r2.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: a.ID, Decision: "approve"}); !apperr.Is(err, apperr.KindConflict) {
		t.Fatalf("decide after expiry: %v", err)
	}
}

func TestBoardWaitWakesOnDecision(t *testing.T) {
	env := natstest.Start(t)
	r := run(t, env)
	publishDecision(t, env, "acme", "dec_w", policy.RequireApproval, 0)
	testkit.Eventually(t, "pending action", func() bool { _, ok := r.board.ByDecision("acme", "dec_w"); return ok })
	got := make(chan approval.Action, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		a, _ := r.board.Wait(ctx, "acme", "dec_w")
		got <- a
	}()
	if _, err := r.svc.Decide(context.Background(), approval.DecideRequest{Tenant: "acme", ID: "pa_w", Decision: "approve", By: "u"}); err != nil {
		t.Fatal(err)
	}
	if a := <-got; a.Status != approval.Approved || a.DecidedBy != "u" {
		t.Fatalf("waiter saw %+v", a)
	}
}

package policy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// dataFlowPolicy: reading untrusted content labels the session; once it
// is labelled, sending anywhere undeclared needs a person.
const dataFlowPolicy = `
id: dataflow
name: data flow
labels:
  - id: untrusted-reads
    source: untrusted_content
  - id: crm-reads
    when: action.tool == "crm_lookup"
    add: [pii]
rules:
  - id: exfil
    when: '"untrusted_content" in session.labels && action.host != "" && !(action.host in agent.destinations)'
    outcome: require_approval
    reasonCodes: [DATA_FLOW_UNTRUSTED_EGRESS]
  - id: no-shell
    when: action.tool == "shell"
    outcome: block
`

// replica starts another policy service instance, with its own catalog,
// on the fixture's NATS: a second replica, or the first one restarted.
func (f *fixture) replica(t testing.TB) *Service {
	t.Helper()
	return newService(t, f.env)
}

// declare stores a manifest for agent a1 of tenant: web_fetch reads
// untrusted content; mail.acme.internal is the one declared destination.
func (f *fixture) declare(t testing.TB, tenant string) {
	t.Helper()
	ctx := context.Background()
	d := agent.Declaration{Tools: []string{"web_fetch", "crm_lookup", "summarize", "http_post", "shell"},
		Destinations: []string{"mail.acme.internal"}, Sources: map[string][]string{"web_fetch": {"untrusted_content"}}}
	a := agent.Agent{AgentID: "a1", Name: "a1", Status: "active", Tools: d.Tools, Declaration: &d}
	seq, err := f.store.PutAgent(ctx, agent.Change{Op: agent.OpDeclared, Tenant: tenant, Agent: a, At: time.Now()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.cat.WaitFor(ctx, seq); err != nil {
		t.Fatal(err)
	}
}

var (
	readWeb   = rules.Action{Kind: "tool_call", Tool: "web_fetch"}
	harmless  = rules.Action{Kind: "tool_call", Tool: "summarize"}
	sendOut   = rules.Action{Kind: "http", Tool: "http_post", Target: "https://drop.evil.test/upload"}
	sendInner = rules.Action{Kind: "http", Tool: "http_post", Target: "https://mail.acme.internal/send"}
)

func decide(t testing.TB, svc *Service, tenant, session string, a rules.Action) rules.DecisionRecord {
	t.Helper()
	rec, err := svc.Decide(context.Background(), rules.EvaluateRequest{Tenant: tenant, AgentID: "a1", SessionID: session, Action: a, Source: rules.SourceDecision,
		ControlSeq: 0})
	if err != nil {
		t.Fatalf("decide %s in %s/%s: %v", a.Tool, tenant, session, err)
	}
	return rec
}

// waitCatalog makes svc's catalog catch up with every CONTROL write so far.
func waitCatalog(t testing.TB, f *fixture, svc *Service) {
	t.Helper()
	info, err := f.env.JS.Stream(context.Background(), "CONTROL")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.deps.Catalog.WaitFor(context.Background(), info.CachedInfo().State.LastSeq); err != nil {
		t.Fatal(err)
	}
}

// TestDataFlowRuleAcrossReplicasAndRestart: read untrusted content on one
// replica, do something harmless on the other, then send to an undeclared
// destination: the third action needs approval and its explanation names
// the first record — on either replica, and on a replica started after.
func TestDataFlowRuleAcrossReplicasAndRestart(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", dataFlowPolicy)
	f.putPolicy(t, "globex", dataFlowPolicy)
	f.declare(t, "acme")
	f.declare(t, "globex")
	a, b := f.svc, f.replica(t)
	waitCatalog(t, f, b)

	first := decide(t, a, "acme", "s1", readWeb)
	if first.Decision.Outcome != rules.Allow || len(first.Decision.Labels) != 1 || first.Decision.Labels[0].Name != "untrusted_content" {
		t.Fatalf("read: %+v", first.Decision)
	}
	if second := decide(t, b, "acme", "s1", harmless); second.Decision.Outcome != rules.Allow || len(second.Decision.Labels) != 0 {
		t.Fatalf("harmless: %+v", second.Decision)
	}
	check := func(name string, svc *Service) {
		t.Helper()
		third := decide(t, svc, "acme", "s1", sendOut)
		d := third.Decision
		if d.Outcome != rules.RequireApproval || d.ReasonCodes[0] != "DATA_FLOW_UNTRUSTED_EGRESS" {
			t.Fatalf("%s: send after the read: %+v", name, d)
		}
		i := slices.IndexFunc(d.Matches, func(m rules.Match) bool { return m.RuleID == "exfil" })
		if i < 0 || len(d.Matches[i].Labels) != 1 || d.Matches[i].Labels[0].DecisionID != first.ID || !strings.Contains(d.Matches[i].Message, first.ID) {
			t.Fatalf("%s: the explanation does not name the read %s: %+v", name, first.ID, d.Matches)
		}
		// The recorded input carries the labels the decision saw.
		if !third.Input.Session.HasLabel("untrusted_content") {
			t.Fatalf("%s: recorded session %+v", name, third.Input.Session)
		}
	}
	check("other replica", b)
	check("same replica", a)

	// Declared destinations stay allowed; other sessions and tenants are
	// untouched by s1's labels.
	if d := decide(t, b, "acme", "s1", sendInner).Decision; d.Outcome != rules.Allow {
		t.Fatalf("declared destination: %+v", d)
	}
	for _, tc := range []struct{ tenant, session string }{{"acme", "s2"}, {"globex", "s1"}} {
		if d := decide(t, b, tc.tenant, tc.session, sendOut).Decision; d.Outcome != rules.Warn || slices.Contains(d.ReasonCodes, "DATA_FLOW_UNTRUSTED_EGRESS") {
			t.Fatalf("%s/%s sees another session's labels: %+v", tc.tenant, tc.session, d)
		}
	}

	// A replica started afterwards (a restart: nothing in memory) sees them.
	c := f.replica(t)
	waitCatalog(t, f, c)
	check("restarted replica", c)
}

// TestDataFlowRaceAcrossReplicas: an agent that reads on one replica and
// sends on the other the moment the read is answered, many sessions at
// once, is caught every time; and two labels added at the same moment on
// two replicas are both kept (compare-and-set, no lost update).
func TestDataFlowRaceAcrossReplicas(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", dataFlowPolicy)
	f.declare(t, "acme")
	a, b := f.svc, f.replica(t)
	waitCatalog(t, f, b)
	replicas := []*Service{a, b}

	const sessions = 16
	var wg sync.WaitGroup
	errs := make(chan error, 2*sessions)
	for i := range sessions {
		wg.Go(func() {
			session := fmt.Sprintf("race-%d", i)
			read, send := replicas[i%2], replicas[(i+1)%2]
			ctx := context.Background()
			// Read and CRM lookup at once, on different replicas.
			var inner sync.WaitGroup
			inner.Go(func() {
				if _, err := send.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: session, Action: rules.Action{Tool: "crm_lookup"}, Source: rules.SourceDecision}); err != nil {
					errs <- err
				}
			})
			if _, err := read.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: session, Action: readWeb, Source: rules.SourceDecision}); err != nil {
				errs <- err
				return
			}
			rec, err := send.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: session, Action: sendOut, Source: rules.SourceDecision})
			if err != nil {
				errs <- err
				return
			}
			if rec.Decision.Outcome != rules.RequireApproval {
				errs <- fmt.Errorf("%s: send right after the read on the other replica: %s %v", session, rec.Decision.Outcome, rec.Decision.ReasonCodes)
			}
			inner.Wait()
			labels, _, err := a.labels.get(ctx, "acme", session)
			if err != nil {
				errs <- err
				return
			}
			var names []string
			for _, l := range labels {
				names = append(names, l.Name)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"pii", "untrusted_content"}) {
				errs <- fmt.Errorf("%s: labels %v after concurrent adds", session, names)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestBlockedReadDoesNotLabel: an action that was refused read nothing.
func TestBlockedReadDoesNotLabel(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", dataFlowPolicy+`
  - id: no-fetch-here
    when: action.tool == "web_fetch" && action.host == "blocked.example.org"
    outcome: block
`)
	f.declare(t, "acme")
	d := decide(t, f.svc, "acme", "s1", rules.Action{Kind: "tool_call", Tool: "web_fetch", Target: "https://blocked.example.org/"}).Decision
	if d.Outcome != rules.Block || len(d.Labels) != 0 {
		t.Fatalf("blocked read: %+v", d)
	}
	if d := decide(t, f.svc, "acme", "s1", sendOut).Decision; d.Outcome != rules.Warn {
		t.Fatalf("send after a blocked read: %+v", d)
	}
}

// TestLabelStoreDownFailsClosed: with the label bucket gone, a send is
// decided as if the session could carry any label (require_approval with
// EVALUATION_ERROR), an action that does not touch labels is decided as
// usual, and a read that should label the session is not answered.
func TestLabelStoreDownFailsClosed(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", dataFlowPolicy)
	f.declare(t, "acme")
	ctx := context.Background()
	if err := f.env.JS.DeleteKeyValue(ctx, LabelBucket); err != nil {
		t.Fatal(err)
	}
	d := decide(t, f.svc, "acme", "fresh", sendOut).Decision
	if d.Outcome != rules.RequireApproval || !slices.Contains(d.ReasonCodes, rules.ReasonEvaluationError) || !slices.Contains(d.ReasonCodes, "DATA_FLOW_UNTRUSTED_EGRESS") {
		t.Fatalf("send with the store down: %+v", d)
	}
	if d := decide(t, f.svc, "acme", "fresh", sendInner).Decision; d.Outcome != rules.Allow {
		t.Fatalf("declared destination with the store down: %+v", d)
	}
	if d := decide(t, f.svc, "acme", "fresh", rules.Action{Kind: "tool_call", Tool: "shell"}).Decision; d.Outcome != rules.Block {
		t.Fatalf("shell with the store down: %+v", d)
	}
	_, err := f.svc.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: "fresh", Action: readWeb, Source: rules.SourceDecision})
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Kind != apperr.KindUnavailable {
		t.Fatalf("read with the store down: %v, want unavailable", err)
	}
}

func TestLabelKey(t *testing.T) {
	for _, tc := range []struct{ tenant, session, want string }{
		{"acme", "s-1_a", "acme.s-1_a"},
		{"acme", "a.b", "acme.=YS5i"},
		{"acme", "x/y z", "acme.=eC95IHo"},
	} {
		if got := labelKey(tc.tenant, tc.session); got != tc.want {
			t.Errorf("labelKey(%q, %q) = %q, want %q", tc.tenant, tc.session, got, tc.want)
		}
	}
}

// BenchmarkDecideLabels is one recorded decision with a session: with a
// pack that has no label rules (no label store access), with the
// data-flow pack on a labelled session (one KV get), and for an action
// that labels a fresh session (a KV get and a compare-and-set create).
func BenchmarkDecideLabels(b *testing.B) {
	f := start(b)
	f.putPolicy(b, "acme", limitPolicy)
	f.putPolicy(b, "flow", dataFlowPolicy)
	f.declare(b, "flow")
	ctx := context.Background()
	decide(b, f.svc, "flow", "labelled", readWeb)
	for _, bc := range []struct {
		name   string
		tenant string
		action rules.Action
		fresh  bool
	}{
		{"no label rules", "acme", rules.Action{Tool: "refund"}, false},
		{"reads labels", "flow", sendOut, false},
		{"adds a label", "flow", readWeb, true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			req := rules.EvaluateRequest{Tenant: bc.tenant, AgentID: "a1", SessionID: "labelled", Action: bc.action, Source: rules.SourceDecision}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if bc.fresh {
					i++
					req.SessionID = fmt.Sprintf("fresh-%d", i)
				}
				if _, err := f.svc.Decide(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestLabelAddMergesStaleReads: a write built on a stale read (another
// replica labelled the session in between) loses its compare-and-set,
// re-reads and merges: no label is lost, and each keeps its first cause.
func TestLabelAddMergesStaleReads(t *testing.T) {
	f := start(t)
	ctx := context.Background()
	l := f.svc.labels
	lab := func(name, dec string) []rules.SessionLabel {
		return []rules.SessionLabel{{Name: name, DecisionID: dec, RuleID: "r"}}
	}
	if err := l.add(ctx, "acme", "s1", lab("pii", "dec_1"), labelsRead{ok: true}); err != nil {
		t.Fatal(err)
	}
	_, rev1, err := l.get(ctx, "acme", "s1")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		add  []rules.SessionLabel
		seen labelsRead
	}{
		{"read before the first write", lab("untrusted_content", "dec_2"), labelsRead{ok: true}},
		{"read an older revision", lab("secret", "dec_3"), labelsRead{labels: lab("pii", "dec_1"), rev: rev1, ok: true}},
		{"label already set elsewhere", lab("pii", "dec_4"), labelsRead{ok: true}},
	} {
		if err := l.add(ctx, "acme", "s1", tc.add, tc.seen); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
	}
	got, _, err := l.get(ctx, "acme", "s1")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, g := range got {
		names = append(names, g.Name+"="+g.DecisionID)
	}
	if want := []string{"pii=dec_1", "untrusted_content=dec_2", "secret=dec_3"}; !slices.Equal(names, want) {
		t.Fatalf("labels %v, want %v", names, want)
	}
}

// TestEventLabelsEvenWhenBlocked: an ingested event already happened, so
// it labels its session whatever its verdict, and names the event.
func TestEventLabelsEvenWhenBlocked(t *testing.T) {
	f := start(t)
	f.putPolicy(t, "acme", dataFlowPolicy+`
  - id: no-fetch
    when: action.tool == "web_fetch"
    outcome: block
`)
	f.declare(t, "acme")
	ctx := context.Background()
	rec, err := f.svc.Decide(ctx, rules.EvaluateRequest{Tenant: "acme", AgentID: "a1", SessionID: "s1", EventID: "evt_1", Action: readWeb, Source: rules.SourceEvent})
	if err != nil {
		t.Fatal(err)
	}
	if rec.Decision.Outcome != rules.Block || len(rec.Decision.Labels) != 1 {
		t.Fatalf("event verdict: %+v", rec.Decision)
	}
	d := decide(t, f.svc, "acme", "s1", sendOut).Decision
	i := slices.IndexFunc(d.Matches, func(m rules.Match) bool { return m.RuleID == "exfil" })
	if d.Outcome != rules.RequireApproval || i < 0 || !strings.Contains(d.Matches[i].Message, "event evt_1") {
		t.Fatalf("send after the event: %+v", d)
	}
}

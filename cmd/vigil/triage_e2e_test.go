package main

// Triage never lifts policy, decisions are read-your-writes from any api
// instance, and long-polls wait on the approval board, not on ClickHouse.
//
// The stacks here hold the decisions projector's batches for 20 s, so
// every decision made during a test is on POLICY but not yet in
// ClickHouse: what used to answer 404 for about a second now always
// would, unless the read goes past the projection.

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// lagging is a projector linger longer than any test here (the sink keeps
// the messages it holds alive, so nothing is redelivered meanwhile).
const lagging = 20 * time.Second

// countingCH is the real ClickHouse connection, counting the reads sent
// through it.
type countingCH struct {
	driver.Conn
	reads atomic.Int64
}

func (c *countingCH) Query(ctx context.Context, q string, args ...any) (driver.Rows, error) {
	c.reads.Add(1)
	return c.Conn.Query(ctx, q, args...)
}

func (c *countingCH) QueryRow(ctx context.Context, q string, args ...any) driver.Row {
	c.reads.Add(1)
	return c.Conn.QueryRow(ctx, q, args...)
}

func (c *countingCH) Select(ctx context.Context, dest any, q string, args ...any) error {
	c.reads.Add(1)
	return c.Conn.Select(ctx, dest, q, args...)
}

// apiReplica is a second api instance of a stack: its own NATS
// connection, catalog and approval board, the stack's ClickHouse (through
// a counter), and only HTTP (the projectors are the first instance's).
type apiReplica struct {
	base string
	ch   *countingCH
	reg  *prometheus.Registry
}

func startReplica(t testing.TB, st *Stack, cfg api.Config) *apiReplica {
	t.Helper()
	log := testLogger(t)
	// The api service's own NATS user: its least-privilege permissions
	// must cover reading decisions past the projection (POLICY consumer
	// info, ordered consumers, message gets).
	nc, js, err := st.Connect(streams.ServiceAPI, "api-replica", log)
	if err != nil {
		t.Fatalf("replica: connect: %v", err)
	}
	t.Cleanup(nc.Close)
	r := &apiReplica{ch: &countingCH{Conn: st.CH}, reg: prometheus.NewRegistry()}
	r.base = serveAPI(t, cfg, nc, js, r.ch, r.reg, log, true).base
	return r
}

// metric is the value of a counter or gauge of the replica's registry
// (summed over labels matching label=value, when given).
func (r *apiReplica) metric(t testing.TB, name string, label ...string) float64 {
	t.Helper()
	fams, err := r.reg.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	var v float64
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := len(label) != 2
			for _, l := range m.GetLabel() {
				match = match || l.GetName() == label[0] && l.GetValue() == label[1]
			}
			if match {
				v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
			}
		}
	}
	return v
}

// laggingStack is a full stack whose decisions projection lags every
// decision of the test, plus a second api instance.
func laggingStack(t *testing.T, replica api.Config) (*testStack, *apiReplica) {
	t.Helper()
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN, API: unlimited, Policy: func(c *policysvc.Config) { c.ProjectorLinger = lagging }})
	return s, startReplica(t, s.st, replica)
}

const triagePolicy = `id: payments
name: Payments
rules:
  - id: no-wire
    when: action.tool == "wire_transfer"
    outcome: block
  - id: refund-review
    when: action.tool == "refund"
    outcome: require_approval
  - id: shell-warn
    when: action.tool == "shell"
    outcome: warn
`

// TestTriageNeverLiftsPolicy: a member who marks a decision of an admin's
// rule false_positive silences warnings only; block and require_approval
// stand. Learning from the block proposes a draft that is not in force
// until someone with policies:write applies it. Every triage and learn
// here comes right after the decision, with the projection lagging.
func TestTriageNeverLiftsPolicy(t *testing.T) {
	s, _ := laggingStack(t, api.DefaultConfig())
	admin := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleAdmin)}
	member := polClient{t: t, base: s.base, key: s.key("acme", auth.RoleMember)}
	s.register("acme", "bot-a", "bot-b")
	admin.createPolicy(triagePolicy)

	cases := []struct {
		tool        string
		outcome     string
		afterFP     string
		afterFPCode string
	}{
		{"wire_transfer", "block", "block", "RULE_NO_WIRE"},
		{"refund", "require_approval", "require_approval", "RULE_REFUND_REVIEW"},
		{"shell", "warn", "allow", rules.ReasonSuppressed},
	}
	decisions := map[string]string{}
	for _, tc := range cases {
		t.Run(tc.tool, func(t *testing.T) {
			m := member
			m.t = t
			body := fmt.Sprintf(`{"agentId":"bot-a","action":%q}`, tc.tool)
			d := m.evaluate(body)
			if d.Decision != tc.outcome {
				t.Fatalf("before triage: %s, want %s", d, tc.outcome)
			}
			decisions[tc.tool] = d.DecisionID
			m.post("/v1/verdicts/"+d.DecisionID+"/status", `{"status":"false_positive"}`).want(t, http.StatusOK, "mark false_positive at once")
			if got := m.get("/v1/decisions/"+d.DecisionID).want(t, http.StatusOK, "read at once").object(t); got["status"] != "false_positive" {
				t.Errorf("triaged decision status = %v", got["status"])
			}
			again := m.evaluate(body)
			if again.Decision != tc.afterFP || again.ReasonCodes[0] != tc.afterFPCode {
				t.Errorf("after false_positive: %s, want %s [%s]", again, tc.afterFP, tc.afterFPCode)
			}
			v := m.verdict(fmt.Sprintf(`{"agent":"bot-a","tool":%q}`, tc.tool))
			if v.Outcome != tc.afterFP {
				t.Errorf("verdict door after false_positive: %s, want %s", v.Outcome, tc.afterFP)
			}
		})
	}

	// Learning from the block proposes a draft; the block stands.
	r := member.post("/v1/verdicts/"+decisions["wire_transfer"]+"/learn", nil).want(t, http.StatusCreated, "learn from a block")
	var learned struct {
		Learned string `json:"learned"`
		InForce bool   `json:"inForce"`
		Message string `json:"message"`
		Drafts  []struct {
			ID       string `json:"id"`
			Status   string `json:"status"`
			InForce  bool   `json:"inForce"`
			Proposal struct {
				PolicyID    string   `json:"policyId"`
				BaseVersion uint64   `json:"baseVersion"`
				RuleIDs     []string `json:"ruleIds"`
				DecisionID  string   `json:"decisionId"`
			} `json:"proposal"`
		} `json:"drafts"`
	}
	r.decode(t, &learned)
	if learned.Learned != "policy_exception" || learned.InForce || len(learned.Drafts) != 1 || !strings.Contains(learned.Message, "policies:write") {
		t.Fatalf("learn answered %s", r)
	}
	draft := learned.Drafts[0]
	if draft.Status != rules.StatusDraft || draft.InForce || draft.Proposal.PolicyID != "payments" ||
		!slices.Equal(draft.Proposal.RuleIDs, []string{"no-wire"}) || draft.Proposal.DecisionID != decisions["wire_transfer"] ||
		r.Header.Get("Location") != "/v1/policies/"+draft.ID {
		t.Fatalf("draft = %+v (Location %q)", draft, r.Header.Get("Location"))
	}
	if d := member.evaluate(`{"agentId":"bot-a","action":"wire_transfer"}`); d.Decision != "block" {
		t.Errorf("after learn, before apply: %s, want block", d)
	}
	if got := admin.get("/v1/policies/"+draft.ID).want(t, http.StatusOK, "get draft").object(t); got["status"] != "draft" || got["inForce"] != false {
		t.Errorf("draft reads %v", got)
	}
	if p := admin.get("/v1/policies?status=draft").want(t, http.StatusOK, "list drafts"); !strings.Contains(string(p.Body), draft.ID) {
		t.Errorf("drafts list = %s", p)
	}
	polError(t, member.post("/v1/policies/"+draft.ID+"/apply", nil), http.StatusForbidden, "FORBIDDEN", "forbidden", "member applies a draft")
	polError(t, admin.post("/v1/policies/payments/apply", nil), http.StatusConflict, "CONFLICT", "conflict", "apply a policy that is no draft")

	applied := admin.post("/v1/policies/"+draft.ID+"/apply", nil).want(t, http.StatusOK, "admin applies the draft").object(t)
	if applied["id"] != "payments" || applied["inForce"] != true {
		t.Errorf("apply answered %v", applied)
	}
	if d := member.evaluate(`{"agentId":"bot-a","action":"wire_transfer"}`); d.Decision != "allow" {
		t.Errorf("after apply, bot-a: %s, want allow", d)
	}
	if d := member.evaluate(`{"agentId":"bot-b","action":"wire_transfer"}`); d.Decision != "block" {
		t.Errorf("after apply, another agent: %s, want block", d)
	}
	polError(t, admin.post("/v1/policies/"+draft.ID+"/apply", nil), http.StatusConflict, "CONFLICT", "conflict", "apply a draft twice")

	// A draft of a policy changed since it was proposed is refused.
	r = member.post("/v1/verdicts/"+decisions["refund"]+"/learn", nil).want(t, http.StatusCreated, "learn from require_approval")
	r.decode(t, &learned)
	admin.do(http.MethodPatch, "/v1/policies/payments", `{"description":"edited meanwhile"}`).want(t, http.StatusOK, "edit the policy")
	polError(t, admin.post("/v1/policies/"+learned.Drafts[0].ID+"/apply", nil), http.StatusConflict, "CONFLICT", "conflict", "apply a stale draft")
	if d := member.evaluate(`{"agentId":"bot-a","action":"refund"}`); d.Decision != "require_approval" {
		t.Errorf("after a refused apply: %s, want require_approval", d)
	}

	// The org policy cannot be learned away.
	admin.post("/v1/org-policy", `{"mode":"blocklist","tools":["rm"]}`).want(t, http.StatusOK, "blocklist")
	org := member.evaluate(`{"agentId":"bot-a","action":"rm"}`)
	polError(t, member.post("/v1/verdicts/"+org.DecisionID+"/learn", nil), http.StatusConflict, "CONFLICT", "conflict", "learn from an org block")
}

// TestDecisionsReadYourWrites: an id returned by any of the three doors
// can be read, triaged, learned from and long-polled at once, on the
// instance that decided and on another.
func TestDecisionsReadYourWrites(t *testing.T) {
	s, b := laggingStack(t, api.DefaultConfig())
	key := s.key("acme", auth.RoleOwner)
	s.register("acme", "ryw-bot", "ryw-other")
	s.register("globex", "ryw-bot")
	doors := []struct {
		name string
		make func(c polClient) string
	}{
		{"decisions.evaluate", func(c polClient) string { return c.evaluate(`{"agentId":"ryw-bot","action":"lookup"}`).DecisionID }},
		{"policies/check", func(c polClient) string {
			id, _ := c.post("/v1/policies/check", `{"agentId":"ryw-bot","toolName":"lookup"}`).want(c.t, http.StatusOK, "check").object(c.t)["decisionId"].(string)
			return id
		}},
		{"verdicts", func(c polClient) string { return c.verdict(`{"agent":"ryw-bot","tool":"lookup"}`).ID }},
	}
	readers := []struct{ name, base string }{{"same instance", s.base}, {"other instance", b.base}}
	for _, door := range doors {
		for _, rd := range readers {
			t.Run(door.name+"/"+rd.name, func(t *testing.T) {
				a := polClient{t: t, base: s.base, key: key}
				c := polClient{t: t, base: rd.base, key: key}
				id := door.make(a)
				got := c.get("/v1/decisions/"+id).want(t, http.StatusOK, "read at once").object(t)
				if got["decisionId"] != id || got["decision"] != "allow" || got["final"] != true {
					t.Errorf("read %v", got)
				}
				var v polVerdict
				c.get("/v1/verdicts/"+id).want(t, http.StatusOK, "read the verdict at once").decode(t, &v)
				if v.ID != id || v.Decision != "allow" || v.Status != "open" {
					t.Errorf("verdict %+v", v)
				}
				c.post("/v1/verdicts/"+id+"/status", `{"status":"acknowledged"}`).want(t, http.StatusOK, "triage at once")
				c.post("/v1/verdicts/"+id+"/learn", nil).want(t, http.StatusOK, "learn at once")
				if got := c.get("/v1/decisions/"+id+"?wait=30s").want(t, http.StatusOK, "long-poll at once").object(t); got["final"] != true || got["status"] != "acknowledged" {
					t.Errorf("long-poll %v", got)
				}
			})
		}
	}
	// An older unprojected decision is found by walking the newer ones.
	a := polClient{t: t, base: s.base, key: key}
	older := a.evaluate(`{"agentId":"ryw-bot","action":"lookup","context":{"n":1}}`).DecisionID
	for range 5 {
		a.evaluate(`{"agentId":"ryw-other","action":"lookup"}`)
	}
	for _, base := range []string{s.base, b.base} {
		c := polClient{t: t, base: base, key: key}
		got := c.get("/v1/decisions/"+older).want(t, http.StatusOK, "read an older unprojected decision").object(t)
		if got["decisionId"] != older {
			t.Errorf("read %v, want %s", got, older)
		}
	}
	if n := b.metric(t, "vigil_api_decision_reads_total", "from", "stream"); n == 0 {
		t.Errorf("the other instance read no decision from the stream; the projection was expected to lag")
	}
	// Unknown ids are still 404, at once.
	c := polClient{t: t, base: b.base, key: key}
	for _, id := range []string{"dec_00000000000000000000", "dec_missing", "pa_x"} {
		polError(t, c.get("/v1/decisions/"+id+"?wait=30s"), http.StatusNotFound, "NOT_FOUND", "not_found", "unknown "+id)
	}
	// Another tenant does not find acme's decision on the stream either.
	id := polClient{t: t, base: s.base, key: key}.evaluate(`{"agentId":"ryw-bot","action":"lookup"}`).DecisionID
	other := polClient{t: t, base: b.base, key: s.key("globex", auth.RoleOwner)}
	other.evaluate(`{"agentId":"ryw-bot","action":"lookup"}`)
	polError(t, other.get("/v1/decisions/"+id), http.StatusNotFound, "NOT_FOUND", "not_found", "globex reads acme's decision")
}

// longPoll is one GET /v1/decisions/:id?wait= running in the background.
type longPoll struct {
	done chan struct{}
	res  response
	err  error
}

func startLongPoll(base, key, id, wait string) *longPoll {
	lp := &longPoll{done: make(chan struct{})}
	go func() {
		defer close(lp.done)
		lp.res, lp.err = send(base, req{method: http.MethodGet, path: "/v1/decisions/" + id + "?wait=" + wait, key: key})
	}()
	return lp
}

func (lp *longPoll) result(t *testing.T) map[string]any {
	t.Helper()
	select {
	case <-lp.done:
	case <-time.After(time.Minute):
		t.Fatal("long-poll did not return")
	}
	if lp.err != nil || lp.res.status != http.StatusOK {
		t.Fatalf("long-poll: %v %s", lp.err, lp.res)
	}
	var m map[string]any
	lp.res.decode(t, &m)
	return m
}

// TestLongPollWaitsOnTheBoard: a long-poll on a pending approval makes no
// ClickHouse query while it waits, is answered when a person decides (on
// another instance), and each key holds at most the configured number
// open at once (429 with Retry-After beyond).
func TestLongPollWaitsOnTheBoard(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.MaxLongPollsPerKey = 2
	s, b := laggingStack(t, cfg)
	owner := s.key("acme", auth.RoleOwner)
	a := polClient{t: t, base: s.base, key: owner}
	a.createPolicy(triagePolicy)
	s.register("acme", "lp-bot")
	agentKey, otherKey := s.key("acme", auth.RoleMember), s.key("acme", auth.RoleMember)

	pending := func() string {
		d := polClient{t: t, base: s.base, key: agentKey}.evaluate(`{"agentId":"lp-bot","action":"refund"}`)
		if d.Decision != "require_approval" {
			t.Fatalf("setup: %s", d)
		}
		return d.DecisionID
	}
	decide := func(id string) {
		pa := approval.IDFor(id)
		polEventually(t, catchUp, "decide "+pa, func() (bool, string) {
			r := a.post("/v1/guardian/pending-actions/"+pa+"/decide", `{"decision":"approve"}`)
			return r.Status == http.StatusOK, r.String()
		})
	}
	parked := func(n float64) {
		polEventually(t, catchUp, fmt.Sprintf("%v long-polls parked", n), func() (bool, string) {
			v := b.metric(t, "vigil_api_long_polls")
			return v == n, fmt.Sprint(v)
		})
	}

	// A long-poll that nobody answers: its whole wait costs the one lookup
	// (projection, then the stream past the projector's floor).
	id := pending()
	before := b.ch.reads.Load()
	got := polClient{t: t, base: b.base, key: agentKey}.get("/v1/decisions/"+id+"?wait=1s").want(t, http.StatusOK, "unanswered long-poll").object(t)
	if got["final"] != false || got["decision"] != "require_approval" {
		t.Errorf("unanswered long-poll = %v", got)
	}
	if n := b.ch.reads.Load() - before; n > 2 {
		t.Errorf("a 1 s long-poll made %d ClickHouse reads, want at most 2 (no polling)", n)
	}

	// Parked long-polls wake when a person decides on the other instance,
	// with no ClickHouse read while parked.
	lp1 := startLongPoll(b.base, agentKey, id, "30s")
	lp2 := startLongPoll(b.base, agentKey, id, "30s")
	parked(2)
	over := polClient{t: t, base: b.base, key: agentKey}.get("/v1/decisions/" + id + "?wait=30s")
	polError(t, over, http.StatusTooManyRequests, "RATE_LIMITED", "rate_limited", "third long-poll of one key")
	if over.Header.Get("Retry-After") == "" {
		t.Errorf("429 without Retry-After: %v", over.Header)
	}
	if v := b.metric(t, "vigil_api_long_polls_refused_total"); v != 1 {
		t.Errorf("refused long-polls = %v, want 1", v)
	}
	readsParked := b.ch.reads.Load()
	lp3 := startLongPoll(b.base, otherKey, id, "30s") // another key has its own cap
	parked(3)
	if n := b.ch.reads.Load() - readsParked; n > 2 { // lp3's own lookup
		t.Errorf("%d ClickHouse reads while long-polls were parked, want only the new poll's lookup", n)
	}
	readsParked = b.ch.reads.Load()
	decide(id)
	for _, lp := range []*longPoll{lp1, lp2, lp3} {
		got := lp.result(t)
		if got["final"] != true || got["approvalStatus"] != "approved" || got["outcome"] != "approved" {
			t.Errorf("woken long-poll = %v", got)
		}
	}
	if n := b.ch.reads.Load() - readsParked; n != 0 {
		t.Errorf("%d ClickHouse reads between parking and waking, want 0", n)
	}
	parked(0)
	// A decided action answers at once and takes no slot.
	got = polClient{t: t, base: b.base, key: agentKey}.get("/v1/decisions/"+id+"?wait=30s").want(t, http.StatusOK, "decided").object(t)
	if got["approvalStatus"] != "approved" {
		t.Errorf("after decide: %v", got)
	}
}

package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/oidc"
)

const quorumPolicy = `
id: quorum
name: quorum
rules:
  - id: payout
    when: action.tool == "payout"
    outcome: require_approval
    approvalTimeout: 2m
    approvals:
      required: 2
      groups: [finance]
  - id: wire
    when: action.tool == "wire"
    outcome: require_approval
    approvalTimeout: 2m
    approvals:
      groups: [finance]
      escalate: {after: 2s, to: [security]}
`

// quorumAction is a pending action as the Desk shows it, with its quorum.
type quorumAction struct {
	ID          string `json:"id"`
	Status      string `json:"status"`
	RequestedBy string `json:"requestedBy"`
	Required    int    `json:"required"`
	Approvals   []struct {
		By string `json:"by"`
	} `json:"approvals"`
	Quorum []struct {
		Groups     []string `json:"groups"`
		Escalated  bool     `json:"escalated"`
		ApprovedBy []string `json:"approvedBy"`
	} `json:"quorum"`
	ReviewerGroup string `json:"reviewerGroup"`
	DecidedBy     string `json:"decidedBy"`
}

// quorumStack is a stack whose members sign in through a test OIDC
// provider; people maps a name to a signed-in client.
type quorumStack struct {
	*polStack
	owner  polClient
	people map[string]polClient
}

// startQuorum starts the stack, publishes quorumPolicy and invites
// members of tenant acme: ann, bob and carl in finance, eve in ops, sam
// in security (set through POST /v1/members/groups after the invite).
func startQuorum(t *testing.T) *quorumStack {
	t.Helper()
	provider := newIDP(t)
	v, err := oidc.New(oidc.Config{Issuer: provider.Issuer, Audience: "vigil"})
	if err != nil {
		t.Fatal(err)
	}
	s := polStartWith(t, func(c *StackConfig) { c.OIDC = v })
	q := &quorumStack{polStack: s, owner: s.as(s.key("acme", auth.RoleOwner)), people: map[string]polClient{}}
	s.register("acme", "a1", "a2")
	q.owner.createPolicy(quorumPolicy)
	for _, m := range []struct {
		name, role string
		groups     []string
	}{
		{"ann", "member", []string{"finance"}}, {"bob", "admin", []string{"finance", "ops"}}, {"carl", "member", []string{"finance"}},
		{"eve", "member", []string{"ops"}}, {"sam", "member", nil},
	} {
		email := m.name + "@acme.test"
		q.owner.post("/v1/members/invite", map[string]any{"email": email, "role": m.role, "groups": m.groups}).want(t, http.StatusCreated, "invite "+m.name)
		q.people[m.name] = s.as(provider.Token(t, provider.Issuer, email, time.Hour, nil))
	}
	var sam map[string]any
	sam = q.owner.post("/v1/members/groups", map[string]any{"email": "sam@acme.test", "groups": []string{"security"}}).want(t, http.StatusOK, "sam's groups").object(t)
	if g, _ := sam["groups"].([]any); len(g) != 1 || g[0] != "security" {
		t.Fatalf("sam after setting groups: %v", sam)
	}
	return q
}

func (q *quorumStack) decide(who polClient, pa, decision string) polResp {
	q.t.Helper()
	return who.post("/v1/guardian/pending-actions/"+pa+"/decide", map[string]any{"decision": decision})
}

// refusedWith checks r is the error envelope with status and the detail
// code.
func refusedWith(t *testing.T, r polResp, status int, detail, what string) {
	t.Helper()
	code, short := "FORBIDDEN", "forbidden"
	if status == http.StatusConflict {
		code, short = "CONFLICT", "conflict"
	}
	e := polError(t, r, status, code, short, what)
	if detail == "" {
		return
	}
	for _, d := range e.Error.Details {
		if d.Code == detail {
			return
		}
	}
	t.Fatalf("%s: no detail %q in %s", what, detail, r)
}

// TestQuorumTwoOfTwoAndRedeem: a 2-of-finance approval asked for by a
// finance member. The asker, a non-member, a key and a duplicate are
// refused; the first finance approval leaves it pending at 1 of 2; the
// second approves it. Then the approved arguments are redeemed once.
func TestQuorumTwoOfTwoAndRedeem(t *testing.T) {
	q := startQuorum(t)
	ann, bob, carl, eve := q.people["ann"], q.people["bob"], q.people["carl"], q.people["eve"]
	args := map[string]any{"to": "acct-1", "amount": 50}
	d := ann.evaluate(map[string]any{"agentId": "a1", "action": "payout", "arguments": args})
	if d.Decision != "require_approval" {
		t.Fatalf("decision %s", d)
	}
	pa := pendingFor(t, q.owner, d.DecisionID).ID

	// Each person's queue (?reviewer=me) lists what they may approve now.
	queue := func(who string, want bool) {
		t.Helper()
		var p deskPage
		q.people[who].get("/v1/guardian/pending-actions?reviewer=me").want(t, http.StatusOK, who+"'s queue").decode(t, &p)
		if got := len(p.Data) == 1 && p.Data[0].ID == pa; got != want || len(p.Data) > 1 {
			t.Fatalf("%s's queue %+v, want %s listed: %v", who, p.Data, pa, want)
		}
	}
	queue("ann", false) // she asked
	queue("eve", false) // not in finance
	queue("bob", true)
	polError(t, bob.get("/v1/guardian/pending-actions?reviewer=you"), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "bad reviewer filter")

	refusedWith(t, q.decide(ann, pa, "approve"), http.StatusForbidden, "separation_of_duties", "the asker approves")
	refusedWith(t, q.decide(eve, pa, "approve"), http.StatusForbidden, "not_a_reviewer", "ops approves")
	refusedWith(t, q.decide(q.owner, pa, "approve"), http.StatusForbidden, "not_a_reviewer", "a key (no groups) approves")
	refusedWith(t, q.decide(eve, pa, "reject"), http.StatusForbidden, "", "ops rejects")

	var a quorumAction
	q.decide(bob, pa, "approve").want(t, http.StatusOK, "bob approves").decode(t, &a)
	if a.Status != "pending" || a.Required != 2 || len(a.Approvals) != 1 || a.Approvals[0].By != "member:bob@acme.test" ||
		a.RequestedBy != "member:ann@acme.test" || len(a.Quorum) != 1 || len(a.Quorum[0].ApprovedBy) != 1 {
		t.Fatalf("after the first approval: %+v", a)
	}
	refusedWith(t, q.decide(bob, pa, "approve"), http.StatusConflict, "duplicate_approver", "bob approves twice")
	queue("bob", false) // already approved
	queue("carl", true)
	if got := ann.get("/v1/decisions/"+d.DecisionID).want(t, http.StatusOK, "decision at 1 of 2").object(t); got["final"] != false ||
		fmt.Sprint(got["approvalProgress"]) != "map[approvedBy:[member:bob@acme.test] received:1 required:2]" {
		t.Fatalf("decision after one of two approvals: final %v, progress %v", got["final"], got["approvalProgress"])
	}
	// Redeeming before the approval is refused.
	refusedWith(t, ann.post("/v1/decisions/"+d.DecisionID+"/redeem", map[string]any{"arguments": args}), http.StatusConflict, "not_approved", "redeem at 1 of 2")

	q.decide(carl, pa, "approve").want(t, http.StatusOK, "carl approves").decode(t, &a)
	if a.Status != "approved" || len(a.Approvals) != 2 || a.DecidedBy != "member:carl@acme.test" {
		t.Fatalf("after the second approval: %+v", a)
	}
	if got := ann.get("/v1/decisions/"+d.DecisionID+"?wait=10s").want(t, http.StatusOK, "decision").object(t); got["outcome"] != "approved" {
		t.Fatalf("decision after two approvals: %v", got)
	}

	redeem := func(body any) polResp { return ann.post("/v1/decisions/"+d.DecisionID+"/redeem", body) }
	refusedWith(t, redeem(map[string]any{"arguments": map[string]any{"to": "acct-2", "amount": 50}}), http.StatusConflict, "arguments_mismatch", "redeem other arguments")
	polError(t, redeem(map[string]any{}), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "redeem without arguments")
	polError(t, redeem(map[string]any{"arguments": []int{1}}), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "redeem with a list")
	ok := redeem(map[string]any{"arguments": map[string]any{"amount": 50, "to": "acct-1"}}).want(t, http.StatusOK, "redeem").object(t)
	if ok["redeemed"] != true || ok["approved"] != true || ok["redemption"] == nil {
		t.Fatalf("redeem: %v", ok)
	}
	refusedWith(t, redeem(map[string]any{"arguments": args}), http.StatusConflict, "already_redeemed", "redeem twice")

	// A member taken out of finance no longer counts, at once.
	q.owner.post("/v1/members/groups", map[string]any{"email": "carl@acme.test", "groups": []string{}}).want(t, http.StatusOK, "carl leaves finance")
	d2 := ann.evaluate(map[string]any{"agentId": "a1", "action": "payout"})
	pa2 := pendingFor(t, q.owner, d2.DecisionID).ID
	refusedWith(t, q.decide(carl, pa2, "approve"), http.StatusForbidden, "not_a_reviewer", "carl after leaving finance")
	// Any eligible reviewer's reject rejects.
	q.decide(bob, pa2, "reject").want(t, http.StatusOK, "bob rejects")
	if got := ann.get("/v1/decisions/"+d2.DecisionID).want(t, http.StatusOK, "rejected").object(t); got["outcome"] != "rejected" {
		t.Fatalf("after a reject: %v", got)
	}
}

// TestQuorumEscalation: security may approve a wire only once the
// guardian's sweeper has escalated it (after 2s without a decision).
func TestQuorumEscalation(t *testing.T) {
	q := startQuorum(t)
	agent := q.as(q.key("acme", auth.RoleAgent, "a1"))
	sam := q.people["sam"]
	d := agent.evaluate(map[string]any{"agentId": "a1", "action": "wire"})
	pa := pendingFor(t, q.owner, d.DecisionID).ID
	// Well before the 2s escalation: security is not yet a reviewer.
	refusedWith(t, q.decide(sam, pa, "approve"), http.StatusForbidden, "not_a_reviewer", "security before the escalation")
	var a quorumAction
	polEventually(t, 15*time.Second, "escalation", func() (bool, string) {
		r := q.owner.get("/v1/guardian/pending-actions/" + pa)
		if r.Status != http.StatusOK {
			return false, r.String()
		}
		r.decode(t, &a)
		return len(a.Quorum) == 1 && a.Quorum[0].Escalated, r.String()
	})
	if a.Status != "pending" || a.ReviewerGroup != "security" {
		t.Fatalf("escalated action %+v", a)
	}
	q.decide(sam, pa, "approve").want(t, http.StatusOK, "security after the escalation").decode(t, &a)
	if a.Status != "approved" {
		t.Fatalf("after security approved: %+v", a)
	}
	// The agent that asked redeems its own approved action.
	agent.post("/v1/decisions/"+d.DecisionID+"/redeem", map[string]any{"arguments": nil}).want(t, http.StatusOK, "agent redeems")
}

// TestQuorumRoutesRolesAndIsolation: the groups route is for member
// managers, the redeem route for whoever may ask for the decision's agent;
// other tenants see nothing.
func TestQuorumRoutesRolesAndIsolation(t *testing.T) {
	q := startQuorum(t)
	d := q.owner.evaluate(map[string]any{"agentId": "a1", "action": "payout", "arguments": map[string]any{"x": 1}})
	pendingFor(t, q.owner, d.DecisionID)
	redeem := "/v1/decisions/" + d.DecisionID + "/redeem"
	body := map[string]any{"arguments": map[string]any{"x": 1}}

	other := q.as(q.key("acme", auth.RoleAgent, "a2"))
	polError(t, other.post(redeem, body), http.StatusForbidden, "FORBIDDEN", "forbidden", "another agent's key redeems")
	polError(t, q.as(q.key("acme", auth.RoleViewer)).post(redeem, body), http.StatusForbidden, "FORBIDDEN", "forbidden", "a viewer redeems")
	beta := q.as(q.key("beta", auth.RoleOwner))
	polError(t, beta.post(redeem, body), http.StatusNotFound, "NOT_FOUND", "not_found", "another tenant redeems")
	polError(t, beta.post("/v1/members/groups", map[string]any{"email": "ann@acme.test", "groups": []string{"x"}}), http.StatusNotFound, "NOT_FOUND", "not_found", "another tenant sets ann's groups")

	groups := []struct {
		name   string
		as     polClient
		body   any
		status int
	}{
		{"a member cannot", q.people["ann"], map[string]any{"email": "eve@acme.test", "groups": []string{"finance"}}, http.StatusForbidden},
		{"a viewer key cannot", q.as(q.key("acme", auth.RoleViewer)), map[string]any{"email": "eve@acme.test", "groups": []string{"finance"}}, http.StatusForbidden},
		{"bad group", q.owner, map[string]any{"email": "eve@acme.test", "groups": []string{"Finance Team"}}, http.StatusBadRequest},
		{"groups missing", q.owner, map[string]any{"email": "eve@acme.test"}, http.StatusBadRequest},
		{"bad email", q.owner, map[string]any{"email": "nope", "groups": []string{}}, http.StatusBadRequest},
		{"unknown member", q.owner, map[string]any{"email": "nobody@acme.test", "groups": []string{}}, http.StatusNotFound},
		{"an admin sets a member's groups", q.people["bob"], map[string]any{"email": "eve@acme.test", "groups": []string{"ops", "finance"}}, http.StatusOK},
	}
	for _, tt := range groups {
		t.Run(tt.name, func(t *testing.T) { tt.as.post("/v1/members/groups", tt.body).want(t, tt.status, tt.name) })
	}
	polError(t, q.owner.post("/v1/members/invite", map[string]any{"email": "zed@acme.test", "role": "member", "groups": []string{"a b"}}), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "invite with a bad group")
	// The data of acme is as it was: the redeem of another tenant did
	// not consume it (it is not approved, so redeem says so).
	refusedWith(t, q.owner.post(redeem, body), http.StatusConflict, "not_approved", "acme's own redeem")
}

// TestRedeemOnceAcrossInstances: redemptions of one approved decision
// racing through two api instances: exactly one succeeds, the others are
// already_redeemed.
func TestRedeemOnceAcrossInstances(t *testing.T) {
	h := startHaltStack(t)
	args := map[string]any{"to": "acct-9"}
	d := h.agentA.evaluate(map[string]any{"agentId": "a1", "action": "refund", "context": map[string]any{"amount": 5000}, "arguments": args})
	pa := pendingFor(t, h.a, d.DecisionID)
	h.a.post("/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": "approve"}).want(t, http.StatusOK, "approve")
	const n = 8
	type result struct {
		r   polResp
		err error
	}
	results := make(chan result, n)
	for i := range n {
		c := []polClient{h.agentA, h.agentB}[i%2]
		go func() {
			// send, not c.post: no t.Fatal off the test goroutine.
			r, err := send(c.base, req{method: http.MethodPost, path: "/v1/decisions/" + d.DecisionID + "/redeem", key: c.key, body: map[string]any{"arguments": args}})
			results <- result{polResp{Status: r.status, Header: r.header, Body: r.body}, err}
		}()
	}
	won := 0
	for range n {
		res := <-results
		if res.err != nil {
			t.Fatalf("redeem: %v", res.err)
		}
		r := res.r
		switch r.Status {
		case http.StatusOK:
			won++
		case http.StatusConflict:
			refusedWith(t, r, http.StatusConflict, "", "a losing redeem")
		default:
			t.Fatalf("redeem: %s", r)
		}
	}
	if won != 1 {
		t.Fatalf("%d redemptions succeeded, want exactly 1", won)
	}
	refusedWith(t, h.agentB.post("/v1/decisions/"+d.DecisionID+"/redeem", map[string]any{"arguments": args}), http.StatusConflict, "already_redeemed", "redeem after the race")
}

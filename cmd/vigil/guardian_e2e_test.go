package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/testkit"
)

const deskPolicy = `
id: desk
name: desk
rules:
  - id: big-refund
    when: action.tool == "refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
    approvalTimeout: 2m
  - id: quick
    when: action.tool == "quick"
    outcome: require_approval
    approvalTimeout: 1s
`

type deskAction struct {
	ID         string `json:"id"`
	DecisionID string `json:"decisionId"`
	Status     string `json:"status"`
	ArgsDigest string `json:"argsDigest"`
	DecidedBy  string `json:"decidedBy"`
	Comment    string `json:"comment"`
}

type deskPage struct {
	Data       []deskAction `json:"data"`
	NextCursor *string      `json:"nextCursor"`
}

// pendingFor waits until the guardian lists the decision's pending action.
func pendingFor(t *testing.T, c polClient, decisionID string) deskAction {
	t.Helper()
	var found deskAction
	polEventually(t, 15*time.Second, "pending action for "+decisionID, func() (bool, string) {
		var p deskPage
		r := c.get("/v1/guardian/pending-actions?status=pending&limit=100")
		if r.Status != http.StatusOK {
			return false, r.String()
		}
		r.decode(t, &p)
		for _, a := range p.Data {
			if a.DecisionID == decisionID {
				found = a
				return true, ""
			}
		}
		return false, r.String()
	})
	return found
}

// gauge reads a gauge of the stack's registry, summed over its labels
// (0 if absent).
func (s *polStack) gauge(name string) float64 {
	s.t.Helper()
	fams, err := s.st.Reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	var sum float64
	for _, f := range fams {
		if f.GetName() == name {
			for _, m := range f.GetMetric() {
				sum += m.GetGauge().GetValue()
			}
		}
	}
	return sum
}

func TestDeskApproveLongPoll(t *testing.T) {
	s := polStart(t)
	owner := s.as(s.key("acme", auth.RoleOwner))
	s.register("acme", "a1")
	agent := s.as(s.key("acme", auth.RoleAgent, "a1"))
	owner.createPolicy(deskPolicy)

	d := agent.evaluate(map[string]any{"agentId": "a1", "action": "refund", "context": map[string]any{"amount": 5000}})
	if d.Decision != "require_approval" || !d.RequiresDeskApproval {
		t.Fatalf("decision %s", d)
	}
	pa := pendingFor(t, owner, d.DecisionID)
	if pa.Status != "pending" || len(pa.ArgsDigest) != len("sha256:")+64 {
		t.Fatalf("pending action %+v", pa)
	}

	type polled struct {
		body map[string]any
		at   time.Time
	}
	done := make(chan polled, 1)
	go func() {
		r := agent.get("/v1/decisions/" + d.DecisionID + "?wait=30s")
		done <- polled{r.want(t, http.StatusOK, "long-poll").object(t), time.Now()}
	}()
	// Decide only once the poll is open, so that it is woken by the
	// decision rather than finding it already made.
	testkit.Eventually(t, "the long-poll open", func() bool { return s.gauge("vigil_api_long_polls") >= 1 })
	decidedAt := time.Now()
	r := owner.post("/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": "approve", "comment": "fine"}).want(t, http.StatusOK, "decide")
	var after deskAction
	r.decode(t, &after)
	if after.Status != "approved" || after.DecidedBy == "" || after.Comment != "fine" {
		t.Fatalf("after decide %+v", after)
	}
	p := <-done
	// Informational only (timings belong in benchmarks): includes the
	// decide request's own round trip.
	t.Logf("long-poll returned %s after the decide request was sent", p.at.Sub(decidedAt))
	if p.body["final"] != true || p.body["outcome"] != "approved" || p.body["argsDigest"] != pa.ArgsDigest {
		t.Fatalf("long-poll result %v", p.body)
	}

	// Exactly once: a second decision is a conflict.
	polError(t, owner.post("/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": "reject"}), http.StatusConflict, "CONFLICT", "conflict", "second decide")
	// Without wait, a final decision answers at once.
	if got := agent.get("/v1/decisions/"+d.DecisionID).want(t, http.StatusOK, "get").object(t); got["outcome"] != "approved" {
		t.Fatalf("get after decide %v", got)
	}
}

func TestDeskExpiry(t *testing.T) {
	s := polStart(t)
	owner := s.as(s.key("acme", auth.RoleOwner))
	s.register("acme", "a1")
	owner.createPolicy(deskPolicy)
	d := owner.evaluate(map[string]any{"agentId": "a1", "action": "quick"})
	got := owner.get("/v1/decisions/"+d.DecisionID+"?wait=30s").want(t, http.StatusOK, "long-poll").object(t)
	if got["approvalStatus"] != "expired" || got["outcome"] != "rejected" || got["final"] != true {
		t.Fatalf("expired decision %v", got)
	}
	pa := got["approval"].(map[string]any)["id"].(string)
	polError(t, owner.post("/v1/guardian/pending-actions/"+pa+"/decide", map[string]any{"decision": "approve"}), http.StatusConflict, "CONFLICT", "conflict", "decide after expiry")
}

func TestDeskRolesIsolationAndErrors(t *testing.T) {
	s := polStart(t)
	owner := s.as(s.key("acme", auth.RoleOwner))
	s.register("acme", "a1")
	owner.createPolicy(deskPolicy)
	d := owner.evaluate(map[string]any{"agentId": "a1", "action": "refund", "context": map[string]any{"amount": 5000}})
	pa := pendingFor(t, owner, d.DecisionID)
	decide := "/v1/guardian/pending-actions/" + pa.ID + "/decide"

	roles := []struct {
		role         auth.Role
		list, decide int
	}{
		{auth.RoleViewer, http.StatusOK, http.StatusForbidden},
		{auth.RoleAgent, http.StatusForbidden, http.StatusForbidden},
	}
	for _, tt := range roles {
		c := s.as(s.key("acme", tt.role))
		c.get("/v1/guardian/pending-actions").want(t, tt.list, string(tt.role)+" list")
		c.post(decide, map[string]any{"decision": "approve"}).want(t, tt.decide, string(tt.role)+" decide")
	}

	other := s.as(s.key("beta", auth.RoleOwner))
	polError(t, other.get("/v1/guardian/pending-actions/"+pa.ID), http.StatusNotFound, "NOT_FOUND", "not_found", "other tenant get")
	polError(t, other.post(decide, map[string]any{"decision": "approve"}), http.StatusNotFound, "NOT_FOUND", "not_found", "other tenant decide")
	var p deskPage
	other.get("/v1/guardian/pending-actions").want(t, http.StatusOK, "other tenant list").decode(t, &p)
	if len(p.Data) != 0 {
		t.Fatalf("other tenant sees %d pending actions", len(p.Data))
	}

	bad := []struct {
		name, method, path string
		body               any
		status             int
		code, short        string
	}{
		{"bad decision", http.MethodPost, decide, map[string]any{"decision": "maybe"}, 400, "VALIDATION_ERROR", "invalid_request"},
		{"malformed body", http.MethodPost, decide, "{", 400, "VALIDATION_ERROR", "invalid_request"},
		{"reroute without group", http.MethodPost, decide, map[string]any{"decision": "reroute"}, 400, "VALIDATION_ERROR", "invalid_request"},
		{"unknown action", http.MethodPost, "/v1/guardian/pending-actions/pa_nope/decide", map[string]any{"decision": "approve"}, 404, "NOT_FOUND", "not_found"},
		{"bad status filter", http.MethodGet, "/v1/guardian/pending-actions?status=maybe", nil, 400, "VALIDATION_ERROR", "invalid_request"},
		{"bad limit", http.MethodGet, "/v1/guardian/pending-actions?limit=0", nil, 400, "VALIDATION_ERROR", "invalid_request"},
		{"bad wait", http.MethodGet, "/v1/decisions/" + d.DecisionID + "?wait=forever", nil, 400, "VALIDATION_ERROR", "invalid_request"},
		{"wait too long", http.MethodGet, "/v1/decisions/" + d.DecisionID + "?wait=5m", nil, 400, "VALIDATION_ERROR", "invalid_request"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			polError(t, owner.do(tt.method, tt.path, tt.body), tt.status, tt.code, tt.short, tt.name)
		})
	}

	// Reroute keeps it pending in the new group; then it can be decided.
	var rr deskAction
	owner.post(decide, map[string]any{"decision": "reroute", "reviewerGroup": "finance"}).want(t, http.StatusOK, "reroute").decode(t, &rr)
	if rr.Status != "pending" {
		t.Fatalf("after reroute %+v", rr)
	}
	owner.get("/v1/guardian/pending-actions?reviewerGroup=finance").want(t, http.StatusOK, "group filter").decode(t, &p)
	if len(p.Data) != 1 || p.Data[0].ID != pa.ID {
		t.Fatalf("finance group lists %+v", p.Data)
	}
	owner.post(decide, map[string]any{"decision": "reject", "comment": "no"}).want(t, http.StatusOK, "reject")
}

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/services/api"
)

// haltView is a halt as the API answers it.
type haltView struct {
	ID              string  `json:"id"`
	Scope           string  `json:"scope"`
	AgentID         string  `json:"agentId"`
	SessionID       string  `json:"sessionId"`
	Reason          string  `json:"reason"`
	Active          bool    `json:"active"`
	CreatedBy       string  `json:"createdBy"`
	EndedBy         string  `json:"endedBy"`
	EndedAt         *string `json:"endedAt"`
	PendingRejected *int    `json:"pendingRejected"`
}

type haltPage struct {
	Data []haltView `json:"data"`
}

func (p haltPage) ids() []string {
	var out []string
	for _, h := range p.Data {
		out = append(out, h.ID)
	}
	return out
}

// haltStack is a full stack (instance A, whose catalog the policy
// service shares) and a second api instance B with its own NATS
// connection, catalog and approval board.
type haltStack struct {
	a, b    polClient
	agentA  polClient
	agentB  polClient
	replica *apiReplica
	s       *testStack
}

func startHaltStack(t *testing.T) haltStack {
	t.Helper()
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN, API: unlimited})
	cfg := api.DefaultConfig()
	unlimited(&cfg)
	r := startReplica(t, s.st, cfg)
	owner := s.key("acme", auth.RoleOwner)
	agent := s.key("acme", auth.RoleAgent, "a1", "a2")
	s.register("acme", "a1", "a2")
	h := haltStack{
		a: polClient{t: t, base: s.base, key: owner}, b: polClient{t: t, base: r.base, key: owner},
		agentA: polClient{t: t, base: s.base, key: agent}, agentB: polClient{t: t, base: r.base, key: agent},
		replica: r, s: s,
	}
	h.a.createPolicy(deskPolicy)
	return h
}

// ask is a decision request of agent in session for a harmless tool.
func ask(agent, session string) map[string]any {
	b := map[string]any{"agentId": agent, "action": "lookup"}
	if session != "" {
		b["sessionId"] = session
	}
	return b
}

func halted(d polKLA) bool {
	return d.Decision == "block" && len(d.ReasonCodes) > 0 && d.ReasonCodes[0] == "HALTED"
}

func (c polClient) raiseHalt(body map[string]any) haltView {
	c.t.Helper()
	var h haltView
	r := c.post("/v1/halts", body).want(c.t, http.StatusCreated, "raise halt")
	r.decode(c.t, &h)
	if !strings.HasPrefix(h.ID, "halt_") || !h.Active || h.CreatedBy == "" || h.PendingRejected == nil {
		c.t.Fatalf("raised halt %+v", h)
	}
	if seq, err := strconv.ParseUint(r.Header.Get("Vigil-Control-Seq"), 10, 64); err != nil || seq == 0 {
		c.t.Fatalf("raised halt without a CONTROL sequence: %q", r.Header.Get("Vigil-Control-Seq"))
	}
	return h
}

// TestHaltAcrossInstances raises a halt of each scope on one api
// instance and checks decisions on both: in scope they block with HALTED
// (at once on the instance that raised it, which carries the halt's
// CONTROL sequence to the policy service; on the other once its catalog
// has it), out of scope they do not; resuming restores the rules.
func TestHaltAcrossInstances(t *testing.T) {
	h := startHaltStack(t)
	type probe struct {
		agent, session string
		halted         bool
	}
	tests := []struct {
		name   string
		body   map[string]any
		probes []probe
	}{
		{"tenant", map[string]any{"scope": "tenant", "reason": "incident 42"},
			[]probe{{"a1", "", true}, {"a2", "s9", true}}},
		{"agent", map[string]any{"scope": "agent", "agentId": "a1", "reason": "runaway loop"},
			[]probe{{"a1", "", true}, {"a1", "s1", true}, {"a2", "s1", false}}},
		{"session", map[string]any{"scope": "session", "sessionId": "s1", "reason": "prompt injection"},
			[]probe{{"a1", "s1", true}, {"a2", "s1", true}, {"a1", "s2", false}, {"a1", "", false}}},
		{"session of one agent", map[string]any{"scope": "session", "agentId": "a2", "sessionId": "s1", "reason": "one agent's session"},
			[]probe{{"a2", "s1", true}, {"a1", "s1", false}}},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Alternate which instance raises and which follows.
			raiser, follower, raiseAgent, followAgent := h.b, h.a, h.agentB, h.agentA
			if i%2 == 1 {
				raiser, follower, raiseAgent, followAgent = h.a, h.b, h.agentA, h.agentB
			}
			raiser.t, follower.t, raiseAgent.t, followAgent.t = t, t, t, t
			for _, p := range tt.probes {
				if d := raiseAgent.evaluate(ask(p.agent, p.session)); d.Decision != "allow" {
					t.Fatalf("before the halt %+v: %s", p, d)
				}
			}
			hv := raiser.raiseHalt(tt.body)
			for _, p := range tt.probes {
				// The raising instance: in force from its 201.
				if d := raiseAgent.evaluate(ask(p.agent, p.session)); halted(d) != p.halted {
					t.Fatalf("raiser, %+v: %s, want halted=%v", p, d, p.halted)
				}
			}
			for _, p := range tt.probes {
				if p.halted {
					polEventually(t, 10*time.Second, "HALTED on the other instance", func() (bool, string) {
						d := followAgent.evaluate(ask(p.agent, p.session))
						return halted(d), d.String()
					})
				}
			}
			for _, p := range tt.probes {
				d := followAgent.evaluate(ask(p.agent, p.session))
				if halted(d) != p.halted {
					t.Fatalf("follower, %+v: %s, want halted=%v", p, d, p.halted)
				}
				if p.halted && !slices.ContainsFunc(d.Matches, func(m polMatch) bool { return m.RuleID == "halt" && strings.Contains(m.Message, hv.ID) }) {
					t.Fatalf("a halted decision does not name its halt: %+v", d.Matches)
				}
			}
			var active haltPage
			follower.get("/v1/halts").want(t, http.StatusOK, "list halts").decode(t, &active)
			if !slices.Equal(active.ids(), []string{hv.ID}) {
				t.Fatalf("active halts %v, want [%s]", active.ids(), hv.ID)
			}

			// Resume on the other instance: in force there at once.
			var ended haltView
			follower.do(http.MethodDelete, "/v1/halts/"+hv.ID, nil).want(t, http.StatusOK, "resume").decode(t, &ended)
			if ended.Active || ended.EndedAt == nil || ended.EndedBy == "" {
				t.Fatalf("resumed halt %+v", ended)
			}
			for _, p := range tt.probes {
				if d := followAgent.evaluate(ask(p.agent, p.session)); d.Decision != "allow" {
					t.Fatalf("after resume, %+v: %s", p, d)
				}
			}
			polEventually(t, 10*time.Second, "resume seen by the raiser", func() (bool, string) {
				d := raiseAgent.evaluate(ask(tt.probes[0].agent, tt.probes[0].session))
				return d.Decision == "allow", d.String()
			})
			polError(t, raiser.do(http.MethodDelete, "/v1/halts/"+hv.ID, nil), http.StatusConflict, "CONFLICT", "conflict", "resume twice")
			var none haltPage
			raiser.get("/v1/halts").want(t, http.StatusOK, "list").decode(t, &none)
			if len(none.Data) != 0 {
				t.Fatalf("active halts after resume: %v", none.ids())
			}
		})
	}
	var all haltPage
	h.a.get("/v1/halts?all=true").want(t, http.StatusOK, "list all").decode(t, &all)
	if len(all.Data) != len(tests) || slices.ContainsFunc(all.Data, func(v haltView) bool { return v.Active }) {
		t.Fatalf("all halts %+v, want %d ended", all.Data, len(tests))
	}

	// Each raise and resume is on CONTROL, hence in the audit log.
	id := all.Data[0].ID
	polEventually(t, polWait, "halt and resume in the audit log", func() (bool, string) {
		r := h.a.get("/v1/audit?entityType=halt&entityId=" + id)
		if r.Status != http.StatusOK {
			return false, r.String()
		}
		var page struct {
			Data []struct {
				Action, Actor string
			} `json:"data"`
		}
		r.decode(t, &page)
		var got []string
		for _, e := range page.Data {
			if !strings.HasPrefix(e.Actor, "key:") {
				return false, r.String()
			}
			got = append(got, e.Action)
		}
		return slices.Equal(got, []string{"resumed", "halted"}), r.String()
	})
}

// TestHaltRejectsPendingApprovals: an action waiting for a person in a
// new halt's scope is rejected by the halt, and a long-poll on it (on the
// other instance) answers at once with the rejection; outside the scope
// it stays pending.
func TestHaltRejectsPendingApprovals(t *testing.T) {
	h := startHaltStack(t)
	refund := func(agent string) map[string]any {
		return map[string]any{"agentId": agent, "sessionId": "s1", "action": "refund", "context": map[string]any{"amount": 5000}}
	}
	in := h.agentA.evaluate(refund("a1"))
	out := h.agentA.evaluate(refund("a2"))
	if in.Decision != "require_approval" || out.Decision != "require_approval" {
		t.Fatalf("decisions %s, %s", in, out)
	}
	paIn, paOut := pendingFor(t, h.a, in.DecisionID), pendingFor(t, h.a, out.DecisionID)
	// The replica's board must hold both before the long-poll starts.
	pendingFor(t, h.b, out.DecisionID)

	polled := make(chan map[string]any, 1)
	go func() {
		r, err := send(h.replica.base, req{method: http.MethodGet, path: "/v1/decisions/" + in.DecisionID + "?wait=60s", key: h.agentB.key})
		if err != nil || r.status != http.StatusOK {
			polled <- map[string]any{"error": fmt.Sprint(err, r)}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(r.body, &m); err != nil {
			m = map[string]any{"error": err.Error()}
		}
		polled <- m
	}()
	polEventually(t, 10*time.Second, "long-poll waiting on the replica", func() (bool, string) {
		n := h.replica.metric(t, "vigil_api_long_polls")
		return n == 1, fmt.Sprint(n)
	})

	hv := h.a.raiseHalt(map[string]any{"scope": "agent", "agentId": "a1", "reason": "stop a1"})
	if *hv.PendingRejected != 1 {
		t.Fatalf("pendingRejected %d, want 1", *hv.PendingRejected)
	}
	var got map[string]any
	select {
	case got = <-polled:
	case <-time.After(30 * time.Second):
		t.Fatal("the long-poll did not answer after the halt")
	}
	a, _ := got["approval"].(map[string]any)
	if got["final"] != true || got["outcome"] != "rejected" || a == nil || a["decidedBy"] != "halt:"+hv.ID {
		t.Fatalf("long-poll after the halt: %v", got)
	}
	var still deskAction
	h.a.get("/v1/guardian/pending-actions/"+paOut.ID).want(t, http.StatusOK, "out of scope").decode(t, &still)
	if still.Status != "pending" {
		t.Fatalf("an action outside the halt was decided: %+v", still)
	}
	// Refused because of the halt (not merely because it is decided).
	e := polError(t, h.a.post("/v1/guardian/pending-actions/"+paIn.ID+"/decide", map[string]any{"decision": "approve"}), http.StatusConflict, "CONFLICT", "conflict", "approve a halted action")
	if !strings.Contains(e.Message, hv.ID) {
		t.Fatalf("approval under a halt refused with %q, which does not name the halt", e.Message)
	}
}

// TestHaltErrors: every bad request gets the envelope naming the field.
func TestHaltErrors(t *testing.T) {
	h := startHaltStack(t)
	tests := []struct {
		name   string
		body   any
		status int
		code   string
		path   string
	}{
		{"scope unknown", map[string]any{"scope": "fleet", "reason": "x"}, 400, "VALIDATION_ERROR", "scope"},
		{"scope missing", map[string]any{"reason": "x"}, 400, "VALIDATION_ERROR", "scope"},
		{"agent scope without agentId", map[string]any{"scope": "agent", "reason": "x"}, 400, "VALIDATION_ERROR", "agentId"},
		{"session scope without sessionId", map[string]any{"scope": "session", "reason": "x"}, 400, "VALIDATION_ERROR", "sessionId"},
		{"tenant scope naming an agent", map[string]any{"scope": "tenant", "agentId": "a1", "reason": "x"}, 400, "VALIDATION_ERROR", "agentId"},
		{"no reason", map[string]any{"scope": "tenant"}, 400, "VALIDATION_ERROR", "reason"},
		{"unknown field", map[string]any{"scope": "tenant", "reason": "x", "until": "later"}, 400, "VALIDATION_ERROR", ""},
		{"not JSON", "{", 400, "VALIDATION_ERROR", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := h.a
			c.t = t
			e := polError(t, c.post("/v1/halts", tt.body), tt.status, tt.code, "invalid_request", tt.name)
			if tt.path != "" && (len(e.Error.Details) == 0 || e.Error.Details[0].Path != tt.path) {
				t.Fatalf("details %+v, want path %s", e.Error.Details, tt.path)
			}
		})
	}
	polError(t, h.a.do(http.MethodDelete, "/v1/halts/halt_nope", nil), http.StatusNotFound, "NOT_FOUND", "not_found", "resume unknown")
	polError(t, h.a.get("/v1/halts?all=maybe"), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", "all=maybe")

	// Another tenant neither sees nor resumes acme's halt.
	hv := h.a.raiseHalt(map[string]any{"scope": "tenant", "reason": "acme only"})
	other := polClient{t: t, base: h.s.base, key: h.s.key("globex", auth.RoleAdmin)}
	polError(t, other.do(http.MethodDelete, "/v1/halts/"+hv.ID, nil), http.StatusNotFound, "NOT_FOUND", "not_found", "resume another tenant's halt")
	var page haltPage
	other.get("/v1/halts?all=true").want(t, http.StatusOK, "other tenant list").decode(t, &page)
	if len(page.Data) != 0 {
		t.Fatalf("another tenant sees %v", page.ids())
	}
	h.s.register("globex", "g1")
	if d := (polClient{t: t, base: h.s.base, key: h.s.key("globex", auth.RoleAgent, "g1")}).evaluate(ask("g1", "")); d.Decision != "allow" {
		t.Fatalf("acme's halt reached globex: %s", d)
	}
}

// TestHaltSignalled: raising and resuming a halt reach a notification
// channel subscribed to them, as one incident (same group).
func TestHaltSignalled(t *testing.T) {
	s := polStartWith(t, func(c *StackConfig) {
		c.NotifierAllowPrivate = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	owner := s.as(s.key("acme", auth.RoleOwner))
	rc := newHookReceiver(t)
	owner.post("/v1/notification-channels", map[string]any{
		"name": "oncall", "url": rc.URL + "/vigil", "signals": []string{"halt.raised", "halt.resumed"},
	}).want(t, http.StatusCreated, "create channel")
	hv := owner.raiseHalt(map[string]any{"scope": "agent", "agentId": "a1", "reason": "runaway spend"})
	owner.do(http.MethodDelete, "/v1/halts/"+hv.ID, nil).want(t, http.StatusOK, "resume")

	type signal struct {
		Type, Severity, Summary, Group, AgentID string
		Resolves                                bool
	}
	tests := []struct {
		typ, severity string
		resolves      bool
	}{
		{"halt.raised", "critical", false},
		{"halt.resumed", "info", true},
	}
	for _, tt := range tests {
		var sig signal
		if err := json.Unmarshal(rc.waitType(t, tt.typ).body, &sig); err != nil {
			t.Fatalf("%s: %v", tt.typ, err)
		}
		if sig.Severity != tt.severity || sig.Resolves != tt.resolves || sig.Group != hv.ID || sig.AgentID != "a1" || !strings.Contains(sig.Summary, "runaway spend") {
			t.Fatalf("%s delivered as %+v", tt.typ, sig)
		}
	}
}

// TestHaltSurvivesRestart: a halt is state on CONTROL, not in a process.
// A restarted stack's first decision is already HALTED: the policy
// service answers only once its catalog has loaded CONTROL.
func TestHaltSurvivesRestart(t *testing.T) {
	db := chtest.New(t)
	dir := t.TempDir()
	s := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir})
	owner := s.key("acme", auth.RoleOwner)
	c := polClient{t: t, base: s.base, key: owner}
	hv := c.raiseHalt(map[string]any{"scope": "tenant", "reason": "before the restart"})
	s.register("acme", "a1")
	s.Stop()

	s2 := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir})
	c = polClient{t: t, base: s2.base, key: owner}
	if d := c.evaluate(ask("a1", "")); !halted(d) {
		t.Fatalf("first decision after a restart: %s, want HALTED", d)
	}
	c.do(http.MethodDelete, "/v1/halts/"+hv.ID, nil).want(t, http.StatusOK, "resume after restart")
	if d := c.evaluate(ask("a1", "")); d.Decision != "allow" {
		t.Fatalf("after resume: %s", d)
	}
}

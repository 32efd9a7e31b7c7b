package main

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
)

// agentKey creates an agent key through the API, as an admin would.
func (e *env) agentKey(t *testing.T, body map[string]any) keyDoc {
	t.Helper()
	body["role"], body["name"] = "agent", "bot"
	r := e.post(e.owner, "/v1/keys", body)
	expect(t, r, http.StatusCreated, "create agent key")
	var k keyDoc
	r.decode(t, &k)
	return k
}

// forbidden asserts a 403 in the envelope.
func forbidden(t *testing.T, r response, what string) {
	t.Helper()
	if r.status != http.StatusForbidden {
		t.Errorf("%s: want 403, got %s", what, r)
		return
	}
	checkEnvelope(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", nil)
}

// decisionAgent reads a decision as the owner and returns its agent.
func (e *env) decisionAgent(t *testing.T, id string) string {
	t.Helper()
	var d struct {
		AgentID string `json:"agentId"`
	}
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/decisions/"+id)
		if r.status == http.StatusOK {
			r.decode(t, &d)
		}
		return r.status == http.StatusOK, r.String()
	})
	return d.AgentID
}

// TestAgentKeys is issue 12's "agent keys are tenant-wide" against the
// real stack: a key bound to bot-a cannot speak for, govern or read
// another agent, nor lift the controls that govern bot-a itself, through
// any door or any place a request can name an agent.
func TestAgentKeys(t *testing.T) {
	e := newEnv(t)
	botA := e.agentKey(t, map[string]any{"agentId": "bot-a"})
	if !slices.Equal(botA.Agents, []string{"bot-a"}) {
		t.Fatalf("created key %+v, want bound to bot-a", botA)
	}
	botBC := e.agentKey(t, map[string]any{"agentIds": []string{"bot-c", "bot-b", "bot-c"}})
	if !slices.Equal(botBC.Agents, []string{"bot-b", "bot-c"}) {
		t.Fatalf("created key %+v, want bound to bot-b and bot-c", botBC)
	}
	a := botA.Key
	// An agent key from before binding existed.
	legacy := e.key("default", auth.RoleAgent)
	legacyID, _ := auth.ParseToken(legacy)
	e.register("default", "bot-b", "bot-c")

	// bot-a is registered and paused by the owner; bot-zzz is not paused.
	expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "bot-a", "owner": "payments-team"}), 201, "register bot-a")
	expect(t, e.post(e.owner, "/v1/agents/bot-a/manifest", map[string]any{"tools": []string{"search"}}), 200, "declare bot-a")
	expect(t, e.post(e.owner, "/v1/agents/bot-a/settings", map[string]any{"paused": true}), 200, "pause bot-a")
	expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "bot-zzz"}), 201, "register bot-zzz")

	t.Run("key creation", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			body map[string]any
			path string
		}{
			{"admin key with an agent", map[string]any{"name": "x", "role": "admin", "agentId": "bot-a"}, "agentId"},
			{"viewer key with agents", map[string]any{"name": "x", "role": "viewer", "agentIds": []string{"bot-a"}}, "agentId"},
			{"agent key without an agent", map[string]any{"name": "x", "role": "agent"}, "agentId"},
			{"agent key with an empty agentId", map[string]any{"name": "x", "role": "agent", "agentId": ""}, "agentId"},
			{"agent key with a bad id", map[string]any{"name": "x", "role": "agent", "agentIds": []string{"bot a"}}, "agentIds[0]"},
		} {
			r := e.post(e.owner, "/v1/keys", tc.body)
			if r.status != http.StatusBadRequest || !strings.Contains(string(r.body), `"path":"`+tc.path+`"`) {
				t.Errorf("%s: want 400 on %s, got %s", tc.name, tc.path, r)
			}
		}
		r := e.get(e.owner, "/v1/keys")
		var list page[keyDoc]
		r.decode(t, &list)
		i := slices.IndexFunc(list.Data, func(k keyDoc) bool { return k.ID == botA.ID })
		if i < 0 || !slices.Equal(list.Data[i].Agents, []string{"bot-a"}) {
			t.Errorf("the key listing does not show bot-a's binding: %s", r)
		}
	})

	t.Run("decisions are attributed to the bound agent", func(t *testing.T) {
		// The reproduction: paused bot-a asks as bot-zzz.
		type door struct {
			path string
			ok   int
			body func(agentFields map[string]any) map[string]any
		}
		doors := []door{
			{"/v1/decisions.evaluate", 200, func(f map[string]any) map[string]any { return with(f, "action", "search") }},
			{"/v1/policies/check", 200, func(f map[string]any) map[string]any { return with(f, "toolName", "search") }},
			{"/v1/verdicts", 201, func(f map[string]any) map[string]any { return with(f, "tool", "search") }},
		}
		attacks := []struct {
			name   string
			fields map[string]any
			header map[string]string
		}{
			{"agentId of another agent", map[string]any{"agentId": "bot-zzz"}, nil},
			{"agent of another agent", map[string]any{"agent": "bot-zzz"}, nil},
			{"X-Agent-Id of another agent", map[string]any{}, map[string]string{"X-Agent-Id": "bot-zzz"}},
			{"own body, other header", map[string]any{"agentId": "bot-a"}, map[string]string{"X-Agent-Id": "bot-zzz"}},
			{"own agentId, other agent", map[string]any{"agentId": "bot-a", "agent": "bot-zzz"}, nil},
			{"empty agentId, other agent", map[string]any{"agentId": "", "agent": "bot-zzz"}, nil},
			{"case variant of its own", map[string]any{"agentId": "BOT-A"}, nil},
			{"case variant of the field name", map[string]any{"AgentID": "bot-zzz"}, nil},
			{"lower-case header name", map[string]any{}, map[string]string{"x-agent-id": "bot-zzz"}},
			{"trailing space", map[string]any{"agentId": "bot-a "}, nil},
		}
		for _, d := range doors {
			for _, at := range attacks {
				r := e.do(req{method: http.MethodPost, path: d.path, key: a, body: d.body(at.fields), header: at.header})
				forbidden(t, r, d.path+" "+at.name)
			}
			// A JSON object that names the agent twice: the last wins in
			// Go, and that is the one checked.
			own, err := json.Marshal(d.body(map[string]any{"agentId": "bot-a"}))
			if err != nil {
				t.Fatal(err)
			}
			raw := strings.TrimSuffix(string(own), "}") + `,"agentId":"bot-zzz"}`
			forbidden(t, e.do(req{method: http.MethodPost, path: d.path, key: a, body: raw}), d.path+" duplicate agentId")

			// Omitted or empty: bot-a, and bot-a is paused.
			for _, f := range []map[string]any{{}, {"agentId": ""}, {"agentId": "bot-a"}} {
				r := e.do(req{method: http.MethodPost, path: d.path, key: a, body: d.body(f), header: map[string]string{"X-Agent-Id": ""}})
				if r.status != d.ok || !strings.Contains(string(r.body), "AGENT_PAUSED") {
					t.Errorf("%s as bot-a with %v: want bot-a's paused block, got %s", d.path, f, r)
					continue
				}
				var out struct {
					DecisionID string `json:"decisionId"`
				}
				r.decode(t, &out)
				if got := e.decisionAgent(t, out.DecisionID); got != "bot-a" {
					t.Errorf("%s with %v: decision recorded for %q, want bot-a", d.path, f, got)
				}
			}
			// A key bound to two agents must say which; it may be either.
			r := e.post(botBC.Key, d.path, d.body(map[string]any{}))
			checkEnvelope(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"agentId", "required"}})
			expect(t, e.do(req{method: http.MethodPost, path: d.path, key: botBC.Key, body: d.body(map[string]any{}), header: map[string]string{"X-Agent-Id": "bot-c"}}), d.ok, d.path+" as bot-c")
			forbidden(t, e.post(botBC.Key, d.path, d.body(map[string]any{"agentId": "bot-a"})), d.path+" bot-b/c key as bot-a")
			// Unbound keys no longer ask at all.
			r = e.post(legacy, d.path, d.body(map[string]any{"agentId": "bot-zzz"}))
			forbidden(t, r, d.path+" unbound key")
			if !strings.Contains(string(r.body), "/bind") {
				t.Errorf("the unbound key's refusal does not say how to bind it: %s", r)
			}
		}
	})

	t.Run("an agent key cannot govern its agent", func(t *testing.T) {
		for _, tc := range []struct {
			name, method, path string
			body               any
		}{
			{"unpause itself", http.MethodPost, "/v1/agents/bot-a/settings", map[string]any{"paused": false}},
			{"unpause another", http.MethodPost, "/v1/agents/bot-zzz/settings", map[string]any{"paused": false}},
			{"reset its baseline", http.MethodPost, "/v1/agents/bot-a/reset", map[string]any{}},
			{"change its owner", http.MethodPatch, "/v1/agents/bot-a", map[string]any{"owner": "me"}},
			{"change its status", http.MethodPatch, "/v1/agents/bot-a", map[string]any{"status": "active"}},
			{"widen its declaration", http.MethodPost, "/v1/agents/bot-a/manifest", map[string]any{"tools": []string{"search", "execute_refund"}}},
			{"declare for another", http.MethodPost, "/v1/agents/bot-zzz/manifest", map[string]any{"tools": []string{}}},
			{"register another", http.MethodPost, "/v1/agents", map[string]any{"agentId": "bot-zzz2"}},
			{"register another (Kaplaix id)", http.MethodPost, "/v1/agents", map[string]any{"id": "bot-zzz2"}},
			{"read another", http.MethodGet, "/v1/agents/bot-zzz", nil},
			{"read another's sessions", http.MethodGet, "/v1/agents/bot-zzz/sessions", nil},
			{"read verdicts", http.MethodGet, "/v1/verdicts", nil},
			{"read baselines", http.MethodGet, "/v1/agents/profiles", nil},
			{"bind itself to more agents", http.MethodPost, "/v1/keys/" + botA.ID + "/bind", map[string]any{"agentIds": []string{"bot-a", "bot-zzz"}}},
		} {
			forbidden(t, e.do(req{method: tc.method, path: tc.path, key: a, body: tc.body}), tc.name)
		}
		var got struct {
			Owner       string                   `json:"owner"`
			Status      string                   `json:"status"`
			Settings    struct{ Paused bool }    `json:"settings"`
			Declaration struct{ Tools []string } `json:"declaration"`
		}
		e.get(e.owner, "/v1/agents/bot-a").decode(t, &got)
		if !got.Settings.Paused || got.Owner != "payments-team" || got.Status != "active" || !slices.Equal(got.Declaration.Tools, []string{"search"}) {
			t.Errorf("bot-a changed under its own key: %+v", got)
		}
		if r := e.post(a, "/v1/decisions.evaluate", map[string]any{"action": "search"}); !strings.Contains(string(r.body), "AGENT_PAUSED") {
			t.Errorf("bot-a is no longer blocked: %s", r)
		}
		// Narrowing is fine; widening back is not.
		expect(t, e.post(a, "/v1/agents/bot-a/manifest", map[string]any{"tools": []string{}}), 200, "narrow the declaration")
		forbidden(t, e.post(a, "/v1/agents/bot-a/manifest", map[string]any{"tools": []string{"search"}}), "widen back")
		forbidden(t, e.post(a, "/v1/agents/bot-a/manifest", map[string]any{"destinations": []string{"*"}}), "widen destinations")
	})

	t.Run("an agent key reads only its own records", func(t *testing.T) {
		other := e.post(e.owner, "/v1/decisions.evaluate", map[string]any{"agentId": "bot-zzz", "action": "search"})
		var od struct {
			DecisionID string `json:"decisionId"`
		}
		other.decode(t, &od)
		e.decisionAgent(t, od.DecisionID)
		forbidden(t, e.get(a, "/v1/decisions/"+od.DecisionID), "read bot-zzz's decision")
		forbidden(t, e.get(a, "/v1/decisions/"+od.DecisionID+"?wait=1s"), "long-poll bot-zzz's decision")
		forbidden(t, e.post(a, "/v1/verdicts/"+od.DecisionID+"/status", map[string]any{"status": "false_positive"}), "triage")
		forbidden(t, e.post(a, "/v1/verdicts/"+od.DecisionID+"/learn", nil), "learn")
		forbidden(t, e.get(legacy, "/v1/decisions/"+od.DecisionID), "unbound key reads a decision")

		own := e.post(a, "/v1/decisions.evaluate", map[string]any{"action": "search"})
		var d struct {
			DecisionID string `json:"decisionId"`
		}
		own.decode(t, &d)
		e.decisionAgent(t, d.DecisionID)
		expect(t, e.get(a, "/v1/decisions/"+d.DecisionID), 200, "read its own decision")

		// The same Idempotency-Key and body as the owner's request for
		// bot-zzz: no replay of bot-zzz's answer.
		body := map[string]any{"agentId": "bot-zzz", "action": "search"}
		hdr := map[string]string{"Idempotency-Key": "agent-keys-idem"}
		expect(t, e.do(req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: e.owner, body: body, header: hdr}), 200, "owner with an idempotency key")
		forbidden(t, e.do(req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: a, body: body, header: hdr}), "replay of the owner's answer")

		var list page[agentDoc]
		e.get(a, "/v1/agents?limit=100").decode(t, &list)
		if len(list.Data) != 1 || list.Data[0].AgentID != "bot-a" {
			t.Errorf("bot-a's key lists %+v, want bot-a only", list.Data)
		}
		expect(t, e.get(a, "/v1/agents/bot-a"), 200, "read itself")
		// The unbound key keeps the tenant-wide agent reads it had.
		e.get(legacy, "/v1/agents?limit=100").decode(t, &list)
		if len(list.Data) < 2 {
			t.Errorf("the unbound key lists %d agents", len(list.Data))
		}
	})

	t.Run("registration", func(t *testing.T) {
		d := e.agentKey(t, map[string]any{"agentId": "bot-d"})
		r := e.post(d.Key, "/v1/agents", map[string]any{"name": "D"})
		expect(t, r, 201, "register itself without naming itself")
		var got agentDoc
		r.decode(t, &got)
		if got.AgentID != "bot-d" || got.Name != "D" {
			t.Errorf("registered %+v, want bot-d", got)
		}
		expect(t, e.post(d.Key, "/v1/agents", map[string]any{"name": "D again"}), 409, "register twice")
		expect(t, e.post(d.Key, "/v1/agents/bot-d/manifest", map[string]any{"tools": []string{"search"}}), 200, "first declaration")
		forbidden(t, e.post(d.Key, "/v1/agents/bot-d/manifest", map[string]any{"tools": []string{"search", "shell"}}), "widen after registration")

		// A discovered agent the owner has paused: claiming it keeps the pause.
		k := e.agentKey(t, map[string]any{"agentId": "bot-e"})
		expect(t, e.post(e.owner, "/v1/agents/bot-e/settings", map[string]any{"paused": true}), 200, "pause bot-e before it registers")
		forbidden(t, e.post(k.Key, "/v1/agents", map[string]any{"status": "active"}), "register with a status")
		forbidden(t, e.post(k.Key, "/v1/agents", map[string]any{"owner": "me"}), "register with an owner")
		expect(t, e.post(k.Key, "/v1/agents", map[string]any{"name": "E"}), 201, "claim bot-e")
		if r := e.post(k.Key, "/v1/decisions.evaluate", map[string]any{"action": "search"}); !strings.Contains(string(r.body), "AGENT_PAUSED") {
			t.Errorf("claiming bot-e lifted its pause: %s", r)
		}
	})

	t.Run("events for another agent are refused per item", func(t *testing.T) {
		forbidden(t, e.post(a, "/v1/events", ev("bot-zzz", "ak-s1", baseTime)), "event for bot-zzz")
		forbidden(t, e.post(a, "/v1/events", ev("BOT-A", "ak-s1", baseTime)), "event for BOT-A")
		forbidden(t, e.do(req{method: http.MethodPost, path: "/v1/events", key: a, body: ev("bot-a", "ak-s1", baseTime), header: map[string]string{"X-Agent-Id": "bot-zzz"}}), "X-Agent-Id of another agent")
		expect(t, e.post(a, "/v1/events", with(ev("", "ak-s1", baseTime), "agentId", nil)), 202, "event without agentId")
		br := e.postBatch(a, []map[string]any{
			ev("bot-a", "ak-s1", baseTime.Add(time.Second)),
			ev("bot-zzz", "ak-s1", baseTime.Add(2*time.Second)),
			ev("", "ak-s1", baseTime.Add(3*time.Second)),
			ev("Bot-A", "ak-s1", baseTime.Add(4*time.Second)),
		})
		want := []string{"accepted", "rejected", "accepted", "rejected"}
		for i, res := range br.Results {
			if res.Status != want[i] {
				t.Errorf("batch item %d: %s, want %s", i, res.Status, want[i])
			}
			if want[i] == "rejected" && (res.Error == nil || res.Error.Code != "FORBIDDEN") {
				t.Errorf("batch item %d: error %+v, want FORBIDDEN", i, res.Error)
			}
		}
		if br.Accepted != 2 || br.Rejected != 2 {
			t.Errorf("batch counts %+v", br)
		}
		r := e.do(req{method: http.MethodPost, path: "/v1/events/batch", key: a, body: map[string]any{"events": []any{ev("bot-a", "ak-s1", baseTime)}}, header: map[string]string{"X-Agent-Id": "bot-zzz"}})
		forbidden(t, r, "batch with X-Agent-Id of another agent")
		s := e.waitSession(e.owner, "ak-s1", 3)
		if s.AgentID != "bot-a" {
			t.Errorf("session ak-s1 is attributed to %q", s.AgentID)
		}
		// The unbound key still reports, for any agent, until it is bound.
		expect(t, e.post(legacy, "/v1/events", ev("bot-zzz", "ak-s2", baseTime)), 202, "unbound key reports")
	})

	t.Run("binding an old key", func(t *testing.T) {
		viewer := e.key("default", auth.RoleViewer)
		viewerID, _ := auth.ParseToken(viewer)
		r := e.post(e.owner, "/v1/keys/"+viewerID+"/bind", map[string]any{"agentId": "bot-a"})
		checkEnvelope(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"agentId", "invalid_format"}})
		checkEnvelope(t, e.post(e.owner, "/v1/keys/"+legacyID+"/bind", map[string]any{}), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"agentId", "required"}})
		expect(t, e.post(e.owner, "/v1/keys/0000000000000000/bind", map[string]any{"agentId": "bot-a"}), 404, "unknown key")

		r = e.post(e.owner, "/v1/keys/"+legacyID+"/bind", map[string]any{"agentId": "bot-zzz"})
		expect(t, r, 200, "bind the old key")
		var k keyDoc
		r.decode(t, &k)
		if !slices.Equal(k.Agents, []string{"bot-zzz"}) {
			t.Errorf("bound key %+v", k)
		}
		ownerID, _ := auth.ParseToken(e.owner)
		eventually(t, catchUp, func() (bool, string) {
			r := e.get(e.owner, "/v1/audit?entityType=key&entityId="+legacyID+"&action=bound")
			return r.status == 200 && strings.Contains(string(r.body), `"actor":"key:`+ownerID+`"`), "audit of the binding: " + r.String()
		})
		// From the next request on, it is bot-zzz's key.
		expect(t, e.post(legacy, "/v1/decisions.evaluate", map[string]any{"action": "search"}), 200, "the bound key asks as bot-zzz")
		forbidden(t, e.post(legacy, "/v1/decisions.evaluate", map[string]any{"agentId": "bot-a", "action": "search"}), "the bound key asks as bot-a")
		forbidden(t, e.post(legacy, "/v1/events", ev("bot-a", "ak-s3", baseTime)), "the bound key reports for bot-a")
		forbidden(t, e.get(legacy, "/v1/agents/bot-a"), "the bound key reads bot-a")
	})
}

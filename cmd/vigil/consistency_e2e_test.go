package main

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
)

// slowProjection holds every batch of the events projector this long, so
// a read right after a write finds nothing unless it waits for its token.
const slowProjection = 4 * time.Second

const tokenPolicy = `id: tok-rules
name: Token rules
rules:
  - id: shell-warn
    when: action.tool == "shell"
    outcome: warn
  - id: no-wire
    when: action.tool == "wire_transfer"
    outcome: block
`

// token returns the Vigil-Consistency header of a 2xx answer, failing
// the test unless it names stream.
func token(t *testing.T, r polResp, stream string) string {
	t.Helper()
	tok := r.Header.Get(consistency.Header)
	parsed, err := consistency.Parse(tok)
	if err != nil || parsed[stream] == 0 {
		t.Fatalf("answer carries no %s sequence in %s: %q (%v); %s", stream, consistency.Header, tok, err, r)
	}
	return tok
}

// TestConsistencyTokens runs the create-then-read flows of the upstream
// documents with no sleep and no retry: each write's token is sent with
// the next request, reads go to a second api instance, and the events
// projector lags by seconds (so that without the token the read is a
// 404). event → session detail, agent → its sessions, policy → check,
// session → risk (computed on request, equal to the score published
// later).
func TestConsistencyTokens(t *testing.T) {
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN, API: unlimited, Ingest: func(c *ingest.Config) { c.ProjectorLinger = slowProjection }})
	cfg := api.DefaultConfig()
	unlimited(&cfg)
	cfg.ConsistencyWait = 3 * slowProjection
	r := startReplica(t, s.st, cfg)
	key := s.key("acme", auth.RoleOwner)
	a, b := polClient{t: t, base: s.base, key: key}, polClient{t: t, base: r.base, key: key}
	const agent, session = "tok-bot", "tok-session"

	// policy → check, across instances.
	pol := a.post("/v1/policies", tokenPolicy, "Content-Type", "application/yaml").want(t, http.StatusCreated, "create policy")
	tok := token(t, pol, streams.Control)
	chk := b.post("/v1/policies/check", map[string]any{"agentId": agent, "toolType": "api", "toolName": "wire_transfer", "operation": "execute"},
		consistency.Header, tok).want(t, http.StatusOK, "check right after the policy, on instance B")
	if d := chk.object(t)["decision"]; d != "denied" {
		t.Fatalf("check right after the policy: decision %v, want denied (the new policy): %s", d, chk)
	}

	// agent → its sessions: the client passes the token it has; each
	// answer's token covers everything before it.
	reg := a.post("/v1/agents", map[string]any{"agentId": agent, "name": "Token bot"}, consistency.Header, tok).want(t, http.StatusCreated, "register agent")
	tok = token(t, reg, streams.Control)
	evt := with(ev(agent, session, time.Now()), "payload", map[string]any{"toolName": "shell", "responseStatus": 200})
	post := a.post("/v1/events", evt, consistency.Header, tok).want(t, http.StatusAccepted, "post event")
	tok = token(t, post, streams.Ingest)
	if parsed, _ := consistency.Parse(tok); parsed[streams.Control] == 0 {
		t.Fatalf("the event's token dropped the CONTROL sequence it was sent with: %q", tok)
	}

	// Without the token the lagging projection does not have it yet.
	b.get("/v1/sessions/"+session).want(t, http.StatusNotFound, "session detail without a token, projection lagging")

	// event → session detail, on instance B.
	det := b.do(http.MethodGet, "/v1/sessions/"+session, nil, consistency.Header, tok).want(t, http.StatusOK, "session detail with the token")
	var detail struct {
		SessionID string `json:"sessionId"`
		Events    []struct {
			EventID string `json:"eventId"`
		} `json:"events"`
	}
	det.decode(t, &detail)
	if len(detail.Events) != 1 || detail.Events[0].EventID != evt["eventId"] {
		t.Fatalf("session detail with the token: %s", det)
	}
	if got := det.Header.Get(consistency.Header); got != tok {
		t.Errorf("a read answers with the token it was sent: got %q, want %q", got, tok)
	}

	// agent → its sessions (token as a query parameter this time).
	list := b.get("/v1/agents/"+agent+"/sessions?consistency="+tok).want(t, http.StatusOK, "agent sessions with the token")
	if !strings.Contains(string(list.Body), `"sessionId":"`+session+`"`) {
		t.Fatalf("agent sessions with the token lacks %s: %s", session, list)
	}

	// decision → verdict list, on instance B: the decision's answer
	// carries its POLICY sequence.
	vd := a.post("/v1/verdicts", map[string]any{"agent": agent, "kind": "tool_call", "tool": "wire_transfer"}, consistency.Header, tok).
		want(t, http.StatusCreated, "post verdict")
	vtok := token(t, vd, streams.Policy)
	vid, _ := vd.object(t)["id"].(string)
	vl := b.get("/v1/verdicts?consistency="+vtok).want(t, http.StatusOK, "verdict list with the token")
	if vid == "" || !strings.Contains(string(vl.Body), `"id":"`+vid+`"`) {
		t.Fatalf("verdict list with the token lacks %q: %s", vid, vl)
	}

	// session → risk: computed on request, then published the same.
	rsk := a.do(http.MethodGet, "/v1/sessions/"+session+"/risk", nil, consistency.Header, tok).want(t, http.StatusOK, "session risk with the token")
	var onRequest map[string]any
	rsk.decode(t, &onRequest)
	if onRequest["score"] == float64(0) || onRequest["actions"] != float64(1) {
		t.Fatalf("on-request risk should score the warned action: %s", rsk)
	}
	delete(onRequest, "riskLevel")
	var published map[string]any
	polEventually(t, catchUp, "the session's score published on RISK", func() (bool, string) {
		st, err := s.st.JS.Stream(context.Background(), streams.Risk)
		if err != nil {
			return false, err.Error()
		}
		m, err := st.GetLastMsgForSubject(context.Background(), streams.SessionScoreSubject("acme", session))
		if err != nil {
			return false, err.Error()
		}
		published = nil
		return json.Unmarshal(m.Data, &published) == nil, string(m.Data)
	})
	if !reflect.DeepEqual(onRequest, published) {
		t.Fatalf("on-request score differs from the published one:\n on request %v\n published  %v", onRequest, published)
	}
}

// TestConsistencyTokenErrors: a malformed token is a 400 in the envelope,
// on reads and writes alike.
func TestConsistencyTokenErrors(t *testing.T) {
	e := newEnv(t)
	c := polClient{t: t, base: e.base, key: e.owner}
	for _, tc := range []struct{ name, method, path, token string }{
		{"unknown stream", http.MethodGet, "/v1/sessions", "NOPE:1"},
		{"not a number", http.MethodGet, "/v1/sessions/x", "INGEST:x"},
		{"no sequence", http.MethodGet, "/v1/agents", "CONTROL"},
		{"on a write", http.MethodPost, "/v1/agents", "INGEST:-1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := c.do(tc.method, tc.path, map[string]any{"name": "x"}, consistency.Header, tc.token)
			checkEnvelope(t, response{status: r.Status, header: r.Header, body: r.Body}, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request",
				[]pair{{consistency.Header, "invalid_format"}})
		})
	}
}

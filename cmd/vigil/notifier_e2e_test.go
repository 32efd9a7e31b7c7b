package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/webhook"
)

const notifierPolicy = `
id: notify
name: notify
rules:
  - id: no-shell
    when: action.tool == "shell"
    outcome: block
    reasonCodes: [SHELL_FORBIDDEN]
  - id: big-refund
    when: action.tool == "refund"
    outcome: require_approval
    approvalTimeout: 2m
`

// hookReceiver is a loopback webhook target that keeps what it got.
type hookReceiver struct {
	*httptest.Server
	mu  sync.Mutex
	got []hookRequest
}

type hookRequest struct {
	header http.Header
	body   []byte
	typ    string
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		var m struct {
			Type string `json:"type"`
		}
		_ = json.Unmarshal(b, &m)
		h.mu.Lock()
		h.got = append(h.got, hookRequest{header: r.Header.Clone(), body: b, typ: m.Type})
		h.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(h.Close)
	return h
}

// waitType waits for a delivery of signal type typ.
func (h *hookReceiver) waitType(t *testing.T, typ string) hookRequest {
	t.Helper()
	var found hookRequest
	polEventually(t, 20*time.Second, "a "+typ+" delivery", func() (bool, string) {
		h.mu.Lock()
		defer h.mu.Unlock()
		for _, r := range h.got {
			if r.typ == typ {
				found = r
				return true, ""
			}
		}
		return false, ""
	})
	return found
}

// TestNotifierEndToEnd: in `vigil dev`, a block decision and an approval's
// request and resolution reach a webhook channel, signed.
func TestNotifierEndToEnd(t *testing.T) {
	// The receiver is on loopback: the notifier may deliver there.
	s := polStartWith(t, func(c *StackConfig) {
		c.NotifierAllowPrivate = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	})
	owner := s.as(s.key("acme", auth.RoleOwner))
	s.register("acme", "a1")
	owner.createPolicy(notifierPolicy)
	rc := newHookReceiver(t)
	ch := owner.post("/v1/notification-channels", map[string]any{
		"name": "secops", "url": rc.URL + "/vigil",
		"signals": []string{"verdict.block", "approval.requested", "approval.resolved"},
	}).want(t, http.StatusCreated, "create channel").object(t)
	secret, _ := ch["secret"].(string)
	if secret == "" {
		t.Fatalf("no signing secret in %v", ch)
	}
	// Kaizen's list sees it.
	if l := owner.get("/v1/webhooks").want(t, http.StatusOK, "list webhooks").object(t); len(l["webhooks"].([]any)) != 1 {
		t.Fatalf("webhooks: %v", l)
	}

	owner.evaluate(map[string]any{"agentId": "a1", "action": "shell"})
	d := owner.evaluate(map[string]any{"agentId": "a1", "action": "refund"})
	pa := pendingFor(t, owner, d.DecisionID)
	// Another key approves: the one that asked may not (separation of duties).
	s.as(s.key("acme", auth.RoleAdmin)).post("/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": "approve"}).want(t, http.StatusOK, "decide")

	for _, typ := range []string{"verdict.block", "approval.requested", "approval.resolved"} {
		r := rc.waitType(t, typ)
		if err := webhook.Verify(secret, r.header, r.body, time.Now(), webhook.DefaultTolerance); err != nil {
			t.Fatalf("%s: signature: %v", typ, err)
		}
	}
	// The attempts are listed with their status codes.
	id := ch["id"].(string)
	polEventually(t, 20*time.Second, "3 recorded deliveries", func() (bool, string) {
		r := owner.get("/v1/notification-channels/" + id + "/deliveries")
		var p struct {
			Data []struct {
				StatusCode int    `json:"statusCode"`
				Outcome    string `json:"outcome"`
			} `json:"data"`
		}
		r.decode(t, &p)
		n := 0
		for _, a := range p.Data {
			if a.StatusCode == 204 && a.Outcome == "delivered" {
				n++
			}
		}
		return n >= 3, r.String()
	})
}

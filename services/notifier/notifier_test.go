package notifier_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/webhook"
)

func TestChannelLifecycle(t *testing.T) {
	e := newEnv(t, nil)
	r := e.do("acme/owner", "POST", "/v1/notification-channels", map[string]any{
		"name": "SecOps", "url": "https://hooks.example.com/vigil?token=abc", "events": []string{"verdict.block", "approval.requested"}, "minSeverity": "medium",
	})
	if r.status != http.StatusCreated {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	created := r.json(t)
	id := created["id"].(string)
	secret, _ := created["secret"].(string)
	if !strings.HasPrefix(secret, webhook.SecretPrefix) {
		t.Fatalf("create did not show the signing secret: %s", r.body)
	}
	if created["type"] != "webhook" || created["name"] != "SecOps" || created["minSeverity"] != "medium" || created["enabled"] != true {
		t.Fatalf("created channel: %s", r.body)
	}
	if created["url"] != "https://hooks.example.com/vigil?…" {
		t.Fatalf("url shown as %v, want query hidden", created["url"])
	}

	get := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id, nil)
	if get.status != 200 || strings.Contains(string(get.body), secret) || strings.Contains(string(get.body), "token=abc") {
		t.Fatalf("get: %d %s", get.status, get.body)
	}
	if sigs := get.json(t)["signals"].([]any); len(sigs) != 2 {
		t.Fatalf("signals %v", sigs)
	}

	patch := e.do("acme/owner", "PATCH", "/v1/notification-channels/"+id, map[string]any{"signals": []string{"verdict.warn"}, "enabled": false})
	if patch.status != 200 {
		t.Fatalf("patch: %d %s", patch.status, patch.body)
	}
	pm := patch.json(t)
	if pm["enabled"] != false || len(pm["signals"].([]any)) != 1 || pm["revision"].(float64) <= created["revision"].(float64) {
		t.Fatalf("patched: %s", patch.body)
	}

	// Kaizen's /v1/webhooks sees the same channels.
	kz := e.do("acme/owner", "POST", "/v1/webhooks", map[string]any{"type": "slack", "url": "https://hooks.example.com/services/T000/B000/XXXX"})
	if kz.status != http.StatusCreated {
		t.Fatalf("kaizen create: %d %s", kz.status, kz.body)
	}
	kid := kz.json(t)["id"].(string)
	if strings.Contains(string(kz.body), "XXXX") || kz.json(t)["secret"] != nil {
		t.Fatalf("slack create leaked its URL or got a signing secret: %s", kz.body)
	}
	list := e.do("acme/viewer", "GET", "/v1/webhooks", nil)
	lm := list.json(t)
	if len(lm["webhooks"].([]any)) != 2 || len(lm["data"].([]any)) != 2 {
		t.Fatalf("webhooks list: %s", list.body)
	}
	page := e.do("acme/viewer", "GET", "/v1/notification-channels?limit=1", nil).json(t)
	if len(page["data"].([]any)) != 1 || page["hasMore"] != true {
		t.Fatalf("page 1: %v", page)
	}
	page2 := e.do("acme/viewer", "GET", "/v1/notification-channels?limit=1&cursor="+page["nextCursor"].(string), nil).json(t)
	if d := page2["data"].([]any); len(d) != 1 || d[0].(map[string]any)["id"] != kid || page2["hasMore"] != false {
		t.Fatalf("page 2: %v", page2)
	}

	// Rotation shows the new secret once; the old one is never shown again.
	rot := e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/rotate-secret", nil)
	newSecret, _ := rot.json(t)["secret"].(string)
	if rot.status != 200 || !strings.HasPrefix(newSecret, webhook.SecretPrefix) || newSecret == secret {
		t.Fatalf("rotate: %d %s", rot.status, rot.body)
	}
	if g := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id, nil); strings.Contains(string(g.body), newSecret) {
		t.Fatal("get shows the rotated secret")
	}

	// A client can bring its existing signing secret.
	own := webhook.NewSecret()
	br := e.do("acme/owner", "POST", "/v1/webhooks", map[string]any{"url": "https://hooks.example.com/own", "secret": own})
	if br.status != 201 || br.json(t)["secret"] != own {
		t.Fatalf("own secret: %d %s", br.status, br.body)
	}
	if d := e.do("acme/owner", "DELETE", "/v1/webhooks/"+kid, nil); d.status != http.StatusNoContent {
		t.Fatalf("delete: %d %s", d.status, d.body)
	}
	if g := e.do("acme/viewer", "GET", "/v1/notification-channels/"+kid, nil); g.status != 404 {
		t.Fatalf("deleted channel: %d", g.status)
	}
	if d := e.do("acme/owner", "DELETE", "/v1/notification-channels/"+kid, nil); d.status != 404 {
		t.Fatalf("second delete: %d", d.status)
	}

	// Kaizen deletes on the collection path, naming the id in the query.
	ownID, _ := br.json(t)["id"].(string)
	for _, tc := range []struct {
		who, path string
		status    int
	}{
		{"acme/owner", "/v1/webhooks", http.StatusBadRequest},
		{"acme/viewer", "/v1/webhooks?id=" + ownID, http.StatusForbidden},
		{"globex/owner", "/v1/webhooks?id=" + ownID, http.StatusNotFound},
		{"acme/owner", "/v1/webhooks?id=" + ownID, http.StatusNoContent},
		{"acme/owner", "/v1/webhooks?id=" + ownID, http.StatusNotFound},
	} {
		if d := e.do(tc.who, "DELETE", tc.path, nil); d.status != tc.status {
			t.Errorf("%s DELETE %s: %d %s, want %d", tc.who, tc.path, d.status, d.body, tc.status)
		}
	}
	if g := e.do("acme/viewer", "GET", "/v1/webhooks/"+ownID, nil); g.status != 404 {
		t.Errorf("deleted by query, still there: %d", g.status)
	}
}

func TestIdempotentCreate(t *testing.T) {
	e := newEnv(t, nil)
	body := map[string]any{"url": "https://hooks.example.com/a"}
	a := e.do("acme/owner", "POST", "/v1/notification-channels", body, "Idempotency-Key", "k-1")
	b := e.do("acme/owner", "POST", "/v1/notification-channels", body, "Idempotency-Key", "k-1")
	if a.status != 201 || b.status != 201 || a.json(t)["id"] != b.json(t)["id"] {
		t.Fatalf("replay created another channel: %s / %s", a.body, b.body)
	}
	// The retry gets the same signing secret (the first response may have
	// been lost), read back from the encrypted channel.
	if sa, sb := a.json(t)["secret"], b.json(t)["secret"]; sa == nil || sa != sb {
		t.Fatalf("replayed secret %v, first %v", sb, sa)
	}
	// Another tenant's same key is another channel.
	g := e.do("globex/owner", "POST", "/v1/notification-channels", body, "Idempotency-Key", "k-1")
	if g.status != 201 || g.json(t)["id"] == a.json(t)["id"] {
		t.Fatalf("globex with acme's key: %d %s", g.status, g.body)
	}
	// Another principal of the same tenant with the same key creates a
	// channel of its own and never receives the first one's secret.
	ad := e.do("acme/admin", "POST", "/v1/notification-channels", body, "Idempotency-Key", "k-1")
	if ad.status != 201 || ad.json(t)["id"] == a.json(t)["id"] || ad.json(t)["secret"] == a.json(t)["secret"] {
		t.Fatalf("acme admin with the owner's key: %d %s", ad.status, ad.body)
	}
	if n := len(e.do("acme/viewer", "GET", "/v1/notification-channels", nil).json(t)["data"].([]any)); n != 2 {
		t.Fatalf("%d channels, want 2", n)
	}
	c := e.do("acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/b"}, "Idempotency-Key", "k-1")
	if c.status != http.StatusConflict {
		t.Fatalf("same key, other body: %d %s", c.status, c.body)
	}
}

// TestSignedDeliveryFromPolicy: a block verdict reaches a subscribed
// webhook, signed per Standard Webhooks; filtered signals do not.
func TestSignedDeliveryFromPolicy(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	id, secret := e.createChannel("acme", map[string]any{"url": rc.URL + "/hook", "signals": []string{"verdict.block", "verdict.warn"}, "minSeverity": "high"})

	// warn is below the channel's minimum severity, allow is no signal;
	// both are recorded before the block, by the same producer, so by the
	// time the block arrives they were skipped, not merely delayed.
	e.decide("acme", "dec_warn1", policy.Warn)
	e.decide("acme", "dec_allow1", policy.Allow)
	e.decide("acme", "dec_block1", policy.Block)
	got := rc.waitCount(t, 1)
	if len(got) != 1 {
		t.Fatalf("%d deliveries, want 1", len(got))
	}
	req := got[0]
	if err := webhook.Verify(secret, req.header, req.body, time.Now(), webhook.DefaultTolerance); err != nil {
		t.Fatalf("signature does not verify with the spec's algorithm: %v", err)
	}
	body := bodyOf(t, req)
	if body["type"] != "verdict.block" || body["id"] != "sig_dec_block1" || body["tenant"] != "acme" || body["severity"] != "high" {
		t.Fatalf("body: %s", req.body)
	}
	if data := body["data"].(map[string]any); data["decisionId"] != "dec_block1" {
		t.Fatalf("data: %v", data)
	}
	ts := req.header.Get(webhook.HeaderTimestamp)
	if got, want := req.header.Get(webhook.HeaderTimedSignature), webhook.TimedSignature([]string{secret}, parseUnix(t, ts), req.body); got != want {
		t.Fatalf("timed signature %q, want %q", got, want)
	}
	if got, want := req.header.Get(webhook.HeaderBodySignature), webhook.BodySignature([]string{secret}, parseUnix(t, ts), req.body); got != want {
		t.Fatalf("body signature %q, want %q", got, want)
	}
	// The attempt is recorded with its status code and latency.
	atts := e.deliveries("acme", id, 1, "")
	a := atts[0]
	if a["statusCode"].(float64) != 200 || a["status"] != "succeeded" || a["outcome"] != "delivered" || a["webhookId"] != req.header.Get(webhook.HeaderID) || a["signalType"] != "verdict.block" {
		t.Fatalf("attempt: %v", a)
	}
	if _, ok := a["latencyMs"].(float64); !ok {
		t.Fatalf("attempt lacks latency: %v", a)
	}
}

func parseUnix(t *testing.T, s string) time.Time {
	t.Helper()
	var sec int64
	for _, c := range s {
		if c < '0' || c > '9' {
			t.Fatalf("timestamp %q", s)
		}
		sec = sec*10 + int64(c-'0')
	}
	return time.Unix(sec, 0)
}

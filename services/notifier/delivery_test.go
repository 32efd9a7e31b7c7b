package notifier_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/pkg/webhook"
	"github.com/vigilhq/vigil/services/notifier"
)

// TestRetryUntilRecovered: a target answering 500 twice gets the signal on
// the third attempt, with the same webhook-id every time.
func TestRetryUntilRecovered(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n <= 2 {
			return 500
		}
		return 204
	})
	id, secret := e.createChannel("acme", map[string]any{"url": rc.URL, "signals": []string{"verdict.block"}})
	e.decide("acme", "dec_r1", policy.Block)
	got := rc.waitCount(t, 3)
	wid := got[0].header.Get(webhook.HeaderID)
	for i, r := range got {
		if r.header.Get(webhook.HeaderID) != wid {
			t.Fatalf("attempt %d has webhook-id %q, first had %q", i+1, r.header.Get(webhook.HeaderID), wid)
		}
		if string(r.body) != string(got[0].body) {
			t.Fatalf("attempt %d body differs", i+1)
		}
		if err := webhook.Verify(secret, r.header, r.body, time.Now(), webhook.DefaultTolerance); err != nil {
			t.Fatalf("attempt %d: %v", i+1, err)
		}
	}
	atts := e.deliveries("acme", id, 3, "")
	codes := map[float64]int{}
	outcomes := map[string]int{}
	for _, a := range atts {
		codes[a["statusCode"].(float64)]++
		outcomes[a["outcome"].(string)]++
	}
	if codes[500] != 2 || codes[204] != 1 || outcomes["retry_scheduled"] != 2 || outcomes["delivered"] != 1 {
		t.Fatalf("attempts: %v", atts)
	}
	// Newest first: the success, then the failures with their next attempt time.
	if atts[0]["outcome"] != "delivered" || atts[1]["nextAttemptAt"] == nil {
		t.Fatalf("order or next attempt: %v", atts)
	}
	if n := len(rc.requests()); n != 3 {
		t.Fatalf("%d requests after delivery, want 3", n)
	}
}

// TestDeadLetterAndReplay: a target that never recovers ends in the dead
// letter (and the channel is marked unhealthy); a replay after it
// recovers delivers with the same webhook-id.
func TestDeadLetterAndReplay(t *testing.T) {
	e := newEnv(t, nil)
	var healthy atomic.Bool
	rc := newReceiver(t, func(int, *http.Request) int {
		if healthy.Load() {
			return 200
		}
		return 503
	})
	id, _ := e.createChannel("acme", map[string]any{"url": rc.URL, "signals": []string{"verdict.block"}})
	e.decide("acme", "dec_d1", policy.Block)
	rc.waitCount(t, 3)

	var dl map[string]any
	testkit.Eventually(t, "dead letter listed", func() (bool, string) {
		r := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id+"/dead-letters", nil)
		data, _ := r.json(t)["data"].([]any)
		if len(data) == 1 {
			dl = data[0].(map[string]any)
		}
		return len(data) == 1, string(r.body)
	})
	if dl["attempts"].(float64) != 3 || dl["lastStatusCode"].(float64) != 503 || dl["signalType"] != "verdict.block" {
		t.Fatalf("dead letter: %v", dl)
	}
	if d := e.deliveries("acme", id, 1, "?status=dead_lettered"); len(d) != 1 || d[0]["deliveryId"] != dl["deliveryId"] {
		t.Fatalf("status filter: %v", d)
	}
	ch := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id, nil).json(t)
	if h := ch["health"].(map[string]any); h["status"] != "unhealthy" {
		t.Fatalf("channel health after 3 failures: %v", h)
	}

	did := dl["deliveryId"].(string)
	// Other tenants cannot see or replay it; unknown ids are 404.
	if r := e.do("globex/owner", "POST", "/v1/notification-channels/"+id+"/deliveries/"+did+"/retry", nil); r.status != 404 {
		t.Fatalf("foreign replay: %d %s", r.status, r.body)
	}
	if r := e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/deliveries/msg_nope/retry", nil); r.status != 404 {
		t.Fatalf("unknown delivery: %d %s", r.status, r.body)
	}
	healthy.Store(true)
	r := e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/deliveries/"+did+"/retry", nil)
	if r.status != http.StatusAccepted {
		t.Fatalf("replay: %d %s", r.status, r.body)
	}
	got := rc.waitCount(t, 4)
	if got[3].header.Get(webhook.HeaderID) != got[0].header.Get(webhook.HeaderID) || got[0].header.Get(webhook.HeaderID) != did {
		t.Fatalf("replay webhook-id %q, original %q, delivery %q", got[3].header.Get(webhook.HeaderID), got[0].header.Get(webhook.HeaderID), did)
	}
	testkit.Eventually(t, "channel healthy again", func() (bool, string) {
		h := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id, nil).json(t)["health"].(map[string]any)
		return h["status"] == "healthy", fmt.Sprint(h)
	})
	testkit.Eventually(t, "dead letter gone after replay", func() (bool, string) {
		r := e.do("acme/viewer", "GET", "/v1/notification-channels/"+id+"/dead-letters", nil)
		return len(r.json(t)["data"].([]any)) == 0, string(r.body)
	})
	atts := e.deliveries("acme", id, 4, "?deliveryId="+did)
	if atts[0]["replay"].(float64) != 1 || atts[0]["outcome"] != "delivered" {
		t.Fatalf("replayed attempt: %v", atts[0])
	}
}

// TestRetryAfterHonoured: the next attempt waits at least what the
// target's Retry-After asks, even though the schedule would retry sooner.
func TestRetryAfterHonoured(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n == 1 {
			return 429
		}
		return 200
	})
	rc.header = http.Header{"Retry-After": []string{"2"}}
	id, _ := e.createChannel("acme", map[string]any{"url": rc.URL})
	e.decide("acme", "dec_ra", policy.Block)
	got := rc.waitCount(t, 2)
	if gap := got[1].at.Sub(got[0].at); gap < 2*time.Second {
		t.Fatalf("retried after %v, Retry-After said 2s", gap)
	}
	atts := e.deliveries("acme", id, 2, "")
	first := atts[1]
	next, _ := time.Parse(time.RFC3339Nano, first["nextAttemptAt"].(string))
	at, _ := time.Parse(time.RFC3339Nano, first["at"].(string))
	if first["statusCode"].(float64) != 429 || next.Sub(at) < 1900*time.Millisecond {
		t.Fatalf("first attempt %v: next attempt %v after", first, next.Sub(at))
	}
}

// TestHungTargetDoesNotDelayOthers: while one channel's target hangs,
// another channel receives every signal.
func TestHungTargetDoesNotDelayOthers(t *testing.T) {
	e := newEnv(t, func(c *notifier.Config) {
		c.AttemptTimeout = time.Minute
		c.LaneQueue, c.LaneWorkers = 2, 1
		c.ShutdownTimeout = 100 * time.Millisecond
	})
	release := make(chan struct{})
	hung := newReceiver(t, func(int, *http.Request) int { <-release; return 200 })
	t.Cleanup(func() { close(release) })
	fast := newReceiver(t, nil)
	e.createChannel("acme", map[string]any{"url": hung.URL})
	e.createChannel("acme", map[string]any{"url": fast.URL})
	const n = 30
	for i := range n {
		e.decide("acme", fmt.Sprintf("dec_h%d", i), policy.Block)
	}
	fast.waitCount(t, n)
	if got := len(hung.requests()); got != 1 {
		// One attempt is hanging; nothing else of that channel ran.
		t.Fatalf("hung target got %d requests, want 1 (its lane is busy)", got)
	}
}

// TestRestartKeepsPendingRetries: a retry scheduled before a restart is
// made by the next instance.
func TestRestartKeepsPendingRetries(t *testing.T) {
	e := newEnv(t, func(c *notifier.Config) {
		c.Schedule.InitialInterval, c.Schedule.MaxInterval = time.Second, 2*time.Second
	})
	rc := newReceiver(t, func(n int, _ *http.Request) int {
		if n == 1 {
			return 500
		}
		return 200
	})
	e.createChannel("acme", map[string]any{"url": rc.URL})
	e.decide("acme", "dec_restart", policy.Block)
	rc.waitCount(t, 1)
	e.stop()
	e.start()
	got := rc.waitCount(t, 2)
	if got[0].header.Get(webhook.HeaderID) != got[1].header.Get(webhook.HeaderID) {
		t.Fatal("retry after restart has another webhook-id")
	}
}

// TestSignalsFromGuardianAndRisk: approvals and RISK records (in the
// shape pkg/streams documents) reach channels by type and severity.
func TestSignalsFromGuardianAndRisk(t *testing.T) {
	// One worker per channel: deliveries arrive in the order they were
	// scheduled, so what arrives before the last marker is all there is.
	e := newEnv(t, func(c *notifier.Config) { c.LaneWorkers = 1 })
	rc := newReceiver(t, nil)
	e.createChannel("acme", map[string]any{"url": rc.URL, "signals": []string{"anomaly", "risk.high"}})
	now := time.Now().UTC().Format(time.RFC3339)
	score := func(id, sev string, n int) map[string]any {
		return map[string]any{"id": id, "tenant": "acme", "agentId": "agent-1", "sessionId": "sess-9", "severity": sev, "summary": "session " + sev, "occurredAt": now, "score": n}
	}
	anomaly := func(id string) map[string]any {
		return map[string]any{"id": id, "tenant": "acme", "agentId": "agent-1", "sessionId": "sess-9", "severity": "medium", "summary": "new destination", "occurredAt": now, "extra": "ignored"}
	}
	e.risk(streams.SessionScoreSubject("acme", "sess-9"), score("rs_low", "low", 12))
	e.risk(streams.AnomalySubject("acme", "agent-1"), anomaly("an_1"))
	e.risk(streams.SessionScoreSubject("acme", "sess-9"), score("rs_high", "critical", 91))
	e.risk(streams.SessionScoreSubject("acme", "sess-9"), score("rs_high2", "critical", 95)) // still high: no new signal
	e.risk(streams.AnomalySubject("acme", "agent-1"), anomaly("an_marker"))
	got := rc.waitCount(t, 3)
	var ids []string
	for _, r := range got {
		ids = append(ids, bodyOf(t, r)["type"].(string)+"/"+bodyOf(t, r)["severity"].(string))
	}
	if want := "[anomaly/medium risk.high/critical anomaly/medium]"; fmt.Sprint(ids) != want {
		t.Fatalf("delivered %v, want %s", ids, want)
	}

	// Approvals reach a channel subscribed to them.
	ap := newReceiver(t, nil)
	e.createChannel("acme", map[string]any{"url": ap.URL, "signals": []string{"approval.requested", "approval.resolved"}})
	e.approvalChange("acme", "pa_1", approval.OpRequested, approval.Pending)
	e.approvalChange("acme", "pa_1", approval.OpResolved, approval.Approved)
	types := map[string]string{}
	for _, r := range ap.waitCount(t, 2) {
		b := bodyOf(t, r)
		types[b["type"].(string)] = b["severity"].(string)
	}
	if want := map[string]string{"approval.requested": "high", "approval.resolved": "info"}; fmt.Sprint(types) != fmt.Sprint(want) {
		t.Fatalf("approvals delivered %v, want %v", types, want)
	}
}

// TestNativeFormats: Slack, Datadog, Splunk and PagerDuty get their own
// payloads and credentials; PagerDuty resolves the incident an approval
// request opened, under the same dedup key.
func TestNativeFormats(t *testing.T) {
	e := newEnv(t, nil)
	slack, dd, splunk, pd := newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil), newReceiver(t, nil)
	e.createChannel("acme", map[string]any{"type": "slack", "url": slack.URL + "/services/T1/B1/sl4cks3cret", "signals": []string{"verdict.block"}})
	e.createChannel("acme", map[string]any{"type": "datadog", "url": dd.URL + "/api/v1/events", "apiKey": "dd-key-123", "signals": []string{"verdict.block"}})
	e.createChannel("acme", map[string]any{"type": "splunk", "url": splunk.URL + "/services/collector/event", "credentials": map[string]string{"token": "hec-456"}, "signals": []string{"verdict.block"}})
	e.createChannel("acme", map[string]any{"type": "pagerduty", "url": pd.URL + "/v2/enqueue", "routingKey": "pd-789", "signals": []string{"approval.requested", "approval.resolved"}})
	e.decide("acme", "dec_n1", policy.Block)
	e.approvalChange("acme", "pa_n1", approval.OpRequested, approval.Pending)
	e.approvalChange("acme", "pa_n1", approval.OpResolved, approval.Rejected)

	s := bodyOf(t, slack.waitCount(t, 1)[0])
	if blocks, _ := s["blocks"].([]any); len(blocks) < 3 || !strings.Contains(s["text"].(string), "block") {
		t.Fatalf("slack payload: %v", s)
	}
	d := dd.waitCount(t, 1)[0]
	db := bodyOf(t, d)
	if d.header.Get("DD-API-KEY") != "dd-key-123" || db["alert_type"] != "error" || db["source_type_name"] != "vigil" || db["aggregation_key"] != "dec_n1" {
		t.Fatalf("datadog: %v %v", d.header, db)
	}
	sp := splunk.waitCount(t, 1)[0]
	sb := bodyOf(t, sp)
	if sp.header.Get("Authorization") != "Splunk hec-456" || sb["sourcetype"] != "vigil:signal" || sb["event"].(map[string]any)["type"] != "verdict.block" {
		t.Fatalf("splunk: %v %v", sp.header, sb)
	}
	got := pd.waitCount(t, 2)
	actions := map[string]map[string]any{}
	for _, r := range got {
		b := bodyOf(t, r)
		actions[b["event_action"].(string)] = b
	}
	trig, res := actions["trigger"], actions["resolve"]
	if trig == nil || res == nil || trig["dedup_key"] != "vigil-pa_n1" || res["dedup_key"] != trig["dedup_key"] || trig["routing_key"] != "pd-789" {
		t.Fatalf("pagerduty: %v", actions)
	}
	if p := trig["payload"].(map[string]any); p["severity"] != "error" || p["source"] != "vigil" || p["summary"] == "" {
		t.Fatalf("pagerduty payload: %v", p)
	}
	// Only webhooks are signed with Vigil's secret.
	if slack.requests()[0].header.Get(webhook.HeaderSignature) != "" {
		t.Fatal("slack request carries a webhook signature")
	}
}

func TestTestEndpoint(t *testing.T) {
	e := newEnv(t, nil)
	ok := newReceiver(t, nil)
	bad := newReceiver(t, func(int, *http.Request) int { return 418 })
	okID, secret := e.createChannel("acme", map[string]any{"url": ok.URL})
	badID, _ := e.createChannel("acme", map[string]any{"url": bad.URL})
	r := e.do("acme/owner", "POST", "/v1/notification-channels/"+okID+"/test", nil)
	if m := r.json(t); r.status != 200 || m["success"] != true || m["statusCode"].(float64) != 200 {
		t.Fatalf("test ok: %d %s", r.status, r.body)
	}
	req := ok.requests()[0]
	if err := webhook.Verify(secret, req.header, req.body, time.Now(), webhook.DefaultTolerance); err != nil || bodyOf(t, req)["type"] != "notification.test" {
		t.Fatalf("test delivery: %v %s", err, req.body)
	}
	r = e.do("acme/owner", "POST", "/v1/notification-channels/"+badID+"/test", nil)
	if m := r.json(t); r.status != 200 || m["success"] != false || m["statusCode"].(float64) != 418 {
		t.Fatalf("test failing target: %d %s", r.status, r.body)
	}
	if a := e.deliveries("acme", badID, 1, "?status=test"); a[0]["statusCode"].(float64) != 418 {
		t.Fatalf("test attempt: %v", a)
	}
	if r := e.do("acme/viewer", "POST", "/v1/notification-channels/"+okID+"/test", nil); r.status != 403 {
		t.Fatalf("viewer test: %d", r.status)
	}
}

// TestRotationKeepsEveryHeaderVerifying: after a secret rotation, a
// receiver still holding the previous secret verifies each of the three
// signature headers, and so does one holding the new secret (issue 14:
// X-Vigil-Signature-256 signed the body alone and only with the current
// secret).
func TestRotationKeepsEveryHeaderVerifying(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, nil)
	id, old := e.createChannel("acme", map[string]any{"url": rc.URL})
	rot := e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/rotate-secret", nil)
	current, _ := rot.json(t)["secret"].(string)
	if rot.status != 200 || current == "" {
		t.Fatalf("rotate: %d %s", rot.status, rot.body)
	}
	if r := e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/test", nil); r.status != 200 {
		t.Fatalf("test delivery: %d %s", r.status, r.body)
	}
	req := rc.requests()[0]
	now := time.Now()
	for _, k := range []struct{ name, secret string }{{"previous", old}, {"current", current}} {
		if err := webhook.Verify(k.secret, req.header, req.body, now, webhook.DefaultTolerance); err != nil {
			t.Errorf("webhook-signature with the %s secret: %v", k.name, err)
		}
		for _, h := range []string{webhook.HeaderTimedSignature, webhook.HeaderBodySignature} {
			if err := webhook.VerifyCompat(h, k.secret, req.header, req.body, now, webhook.DefaultTolerance); err != nil {
				t.Errorf("%s with the %s secret: %v", h, k.name, err)
			}
		}
	}
	stranger := webhook.NewSecret()
	if err := webhook.VerifyCompat(webhook.HeaderBodySignature, stranger, req.header, req.body, now, webhook.DefaultTolerance); !errors.Is(err, webhook.ErrNoMatch) {
		t.Fatalf("an unrelated secret verified: %v", err)
	}
}

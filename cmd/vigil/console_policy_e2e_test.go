package main

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigilhq/vigil/pkg/auth"
)

// signIn signs the browser in with key and waits for the Desk.
func (b *browser) signIn(key string) {
	b.t.Helper()
	b.do(b.ctx, "sign in", chromedp.Navigate(b.base+"/console/desk"), chromedp.WaitVisible(chromedp.CSS("#key")),
		chromedp.SetValue(chromedp.CSS("#key"), key), chromedp.Submit(chromedp.CSS("#key")), chromedp.WaitVisible(chromedp.CSS("#desk")))
}

// TestConsolePolicyInBrowser drives the policy editor's test cases and
// replay and the session's merged timeline in headless chromium (the
// set-up of TestConsoleInBrowser): a failing test case shown next to its
// line, fixed and passing; a replay listing the recorded decision the
// draft would change; the session page's one timeline in order.
func TestConsolePolicyInBrowser(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, e.base)
	owner := polClient{t: t, base: e.base, key: e.owner}
	e.register("default", "bot")
	agent := polClient{t: t, base: e.base, key: e.key("default", auth.RoleAgent, "bot")}
	owner.createPolicy(replayLive)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// Recorded history: an event, a refund that needed approval (approved)
	// and a small one.
	session := "console-timeline"
	start := time.Now().Add(-2 * time.Second)
	if br := e.postBatch(agent.key, []map[string]any{ev("bot", session, start)}); br.Accepted != 1 {
		t.Fatalf("event: %+v", br)
	}
	big := agent.evaluate(map[string]any{"agentId": "bot", "sessionId": session, "action": "refund", "context": map[string]any{"amount": 5000}})
	small := agent.evaluate(map[string]any{"agentId": "bot", "sessionId": session, "action": "refund", "context": map[string]any{"amount": 50}})
	pa := pendingFor(t, owner, big.DecisionID)
	owner.post("/v1/guardian/pending-actions/"+pa.ID+"/decide", map[string]any{"decision": "approve", "comment": "fine"}).want(t, http.StatusOK, "decide")
	polEventually(t, 20*time.Second, "the session's decisions and event projected", func() (bool, string) {
		var p struct{ Data []any }
		r := owner.get("/v1/verdicts?session=" + session)
		r.decode(t, &p)
		s := owner.get("/v1/sessions/" + session)
		// The event's own verdict is a decision of the session too.
		return len(p.Data) == 3 && s.Status == http.StatusOK, r.String() + s.String()
	})

	b.signIn(e.owner)
	b.clean("sign-in")

	// A draft with a case that fails: shown with its line and why.
	failing := strings.Replace(replayDraft, "a card lookup is blocked (wrong on purpose)", "a card lookup is blocked", 1)
	b.do(b.ctx, "policy editor", chromedp.Navigate(e.base+"/console/policies/new"), chromedp.WaitVisible(css("#tests-status")),
		chromedp.SetValue(css("#policy-yaml"), failing), chromedp.SendKeys(css("#policy-yaml"), " "),
		chromedp.WaitVisible(css(`#test-results li.fail[data-name="a card lookup is blocked"]`)), chromedp.WaitVisible(css("#policy-status.ok")))
	text := get(b, b.ctx, "failing case", chromedp.Text(css(`#test-results li.fail`)))
	for _, want := range []string{"FAIL", "line ", "decision block, want warn", "refunds/no-card-lookups (block)", "rule big-refund did not match"} {
		if !strings.Contains(text, want) {
			t.Errorf("the failing case lacks %q:\n%s", want, text)
		}
	}
	if n := get(b, b.ctx, "passing cases", chromedp.Evaluate[int](`document.querySelectorAll('#test-results li.pass').length`)); n != 2 {
		t.Errorf("%d passing cases shown, want 2", n)
	}
	if st := get(b, b.ctx, "tests status", chromedp.Text(css("#tests-status"))); !strings.Contains(st, "2 passed, 1 failed") {
		t.Errorf("tests status %q", st)
	}
	b.shot(b.ctx, "policy-tests")
	b.clean("failing test case")

	// Fixed: every case passes.
	fixed := strings.Replace(failing, "expect: {decision: warn, reasonCodes: [CARD_LOOKUP], rules: [big-refund]}", "expect: {decision: block, reasonCodes: [CARD_LOOKUP], rules: [no-card-lookups]}", 1)
	if fixed == failing {
		t.Fatal("the fix did not apply")
	}
	b.do(b.ctx, "fix the case", chromedp.SetValue(css("#policy-yaml"), fixed), chromedp.SendKeys(css("#policy-yaml"), " "),
		chromedp.WaitVisible(css("#tests-status.ok")), chromedp.WaitNotPresent(css("#test-results li.fail")))
	if st := get(b, b.ctx, "tests status", chromedp.Text(css("#tests-status"))); !strings.Contains(st, "3 passed, 0 failed") {
		t.Errorf("tests status after the fix %q", st)
	}
	b.clean("fixed test case")

	// Replay: the 5000 refund would now be allowed; the small one is
	// unchanged and not listed.
	row := `#replay-result tr[data-decision="` + big.DecisionID + `"]`
	b.do(b.ctx, "replay", chromedp.SetValue(css("#replay-days"), "7"), chromedp.Click(css("#replay-run")),
		chromedp.WaitVisible(css("#replay-result[data-done]")), chromedp.WaitVisible(css(row)))
	changed := get(b, b.ctx, "changed decision", chromedp.Text(css(row)))
	for _, want := range []string{"require_approval [AMOUNT_OVER_THRESHOLD]", "refunds/big-refund", "allow [DEFAULT_ALLOW]", "bot", "refund", session} {
		if !strings.Contains(changed, want) {
			t.Errorf("the changed decision lacks %q:\n%s", want, changed)
		}
	}
	summary := get(b, b.ctx, "replay summary", chromedp.Text(css("#replay-result")))
	if !strings.Contains(summary, "1 would change") || !strings.Contains(summary, "require_approval → allow") || strings.Contains(summary, small.DecisionID) {
		t.Errorf("replay summary:\n%s", summary)
	}
	b.shot(b.ctx, "policy-replay")
	b.clean("replay")

	// A bad number of days is the API's refusal, on the page.
	b.do(b.ctx, "replay 90 days", chromedp.SetValue(css("#replay-days"), "90"), chromedp.Click(css("#replay-run")),
		chromedp.WaitVisible(css("#replay-result .error")))
	if msg := get(b, b.ctx, "replay error", chromedp.Text(css("#replay-result .error"))); !strings.Contains(msg, "days must be an integer from 1 to 30") {
		t.Errorf("replay error %q", msg)
	}
	b.clean("refused replay")

	// The session page: risk first, then one timeline, oldest first, with
	// the event, the decisions, the approval and its decision.
	b.do(b.ctx, "session page", chromedp.Navigate(e.base+"/console/sessions/"+session), chromedp.WaitVisible(css("#timeline")))
	kinds := get(b, b.ctx, "timeline", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#timeline tbody tr[data-kind]')).map((r) => r.dataset.kind + ' ' + r.querySelector('time').getAttribute('datetime'))`))
	var order []string
	var last time.Time
	for _, k := range kinds {
		kind, at, _ := strings.Cut(k, " ")
		ts, err := time.Parse(time.RFC3339Nano, at)
		if err != nil || ts.Before(last) {
			t.Fatalf("timeline not in order at %q: %q", k, kinds)
		}
		last = ts
		order = append(order, kind)
	}
	count := map[string]int{}
	for _, k := range order {
		count[k]++
	}
	// The event; its verdict and the two refunds; the approval, once when
	// asked and once when decided.
	if len(order) != 6 || order[0] != "event" || count["decision"] != 3 || count["approval"] != 2 {
		t.Fatalf("timeline kinds %q", kinds)
	}
	if !get(b, b.ctx, "risk first", chromedp.Evaluate[bool](`!!(document.getElementById('risk-h').compareDocumentPosition(document.getElementById('timeline')) & Node.DOCUMENT_POSITION_FOLLOWING)`)) {
		t.Error("the risk section is not above the timeline")
	}
	link := get(b, b.ctx, "decision links its approval", chromedp.AttributeValue(css(`tr[data-id="`+big.DecisionID+`"] a`), "href"))
	if link.Value != "#approval-"+pa.ID {
		t.Errorf("the decision links %q, want its approval", link.Value)
	}
	b.shot(b.ctx, "session-timeline")
	b.clean("session timeline")
}

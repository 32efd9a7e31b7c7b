package main

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/vigilhq/vigil/pkg/auth"
)

// screenshotsEnv, when set to 1, makes TestConsoleInBrowser write a
// screenshot of every page to docs/console/ (run it by hand after changing
// the console; CI does not).
const screenshotsEnv = "VIGIL_CONSOLE_SCREENSHOTS"

// chromiumPath installs Debian's chromium when it is missing and returns
// its binary.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	out, err := exec.Command("bash", "../../scripts/apt-install.sh", "chromium", "chromium").CombinedOutput()
	if err != nil {
		t.Fatalf("installing chromium: %v\n%s", err, out)
	}
	for _, p := range []string{"chromium", "/usr/bin/chromium"} {
		if p, err := exec.LookPath(p); err == nil {
			return p
		}
	}
	t.Fatal("chromium is not installed after scripts/apt-install.sh")
	return ""
}

// browser is a headless chromium whose tabs report every console error or
// warning, uncaught exception and browser log error (CSP violations are
// logged there) into problems.
type browser struct {
	t        *testing.T
	base     string
	ctx      context.Context
	mu       sync.Mutex
	problems []string
}

func newBrowser(t *testing.T, base string) *browser {
	t.Helper()
	opts := append(slices.Clone(chromedp.DefaultExecAllocatorOptions[:]),
		chromedp.ExecPath(chromiumPath(t)), chromedp.NoSandbox, chromedp.WindowSize(1280, 900),
		chromedp.Flag("disable-dev-shm-usage", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	b := &browser{t: t, base: base, ctx: ctx}
	t.Cleanup(func() { cancelC(); cancelA() })
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	b.listen(ctx)
	return b
}

// tab opens a second tab of the same browser (same cookies).
func (b *browser) tab() context.Context {
	ctx, cancel := chromedp.NewContext(b.ctx)
	b.t.Cleanup(cancel)
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		b.t.Fatalf("new tab: %v", err)
	}
	b.listen(ctx)
	return ctx
}

func (b *browser) listen(ctx context.Context) {
	msgs := chromedp.Console(ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			if m.Type == chromedp.ConsoleError || m.Type == chromedp.ConsoleWarning || m.IsException() {
				b.mu.Lock()
				b.problems = append(b.problems, m.String()+" "+m.Source+" "+m.URL)
				b.mu.Unlock()
			}
		}
	}()
}

// take returns and clears the problems reported so far.
func (b *browser) take() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	p := b.problems
	b.problems = nil
	return p
}

// do runs steps on a tab, failing the test with the tab's location.
func (b *browser) do(ctx context.Context, what string, steps ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := chromedp.Do(c, steps...); err != nil {
		c2, cancel2 := context.WithTimeout(ctx, 5*time.Second)
		defer cancel2()
		loc, _ := chromedp.Run(c2, chromedp.Location())
		text, _ := chromedp.Run(c2, chromedp.Evaluate[string](`document.body ? document.body.innerText.slice(0, 600) : ''`))
		b.t.Fatalf("%s (at %s): %v\npage: %s\nproblems: %q", what, loc, err, text, b.take())
	}
}

// get runs one action that returns a value.
func get[T any](b *browser, ctx context.Context, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	c, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, a)
	if err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
	return v
}

// clean fails the test if a page reported a problem since the last call.
func (b *browser) clean(what string) {
	b.t.Helper()
	// Give late console messages of the page a moment to arrive.
	time.Sleep(150 * time.Millisecond)
	if p := b.take(); len(p) > 0 {
		b.t.Errorf("%s: the page reported problems:\n  %s", what, strings.Join(p, "\n  "))
	}
}

// shot writes docs/console/<name>.png when screenshotsEnv is set.
func (b *browser) shot(ctx context.Context, name string) {
	b.t.Helper()
	if os.Getenv(screenshotsEnv) != "1" {
		return
	}
	time.Sleep(1500 * time.Millisecond) // past the arrival highlight
	png := get(b, ctx, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "console", name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
}

// cookie returns the browser's cookie named name, or nil.
func (b *browser) cookie(name string) *network.Cookie {
	b.t.Helper()
	res, err := chromedp.Call(b.ctx, network.GetCookies, network.GetCookiesParams{})
	if err != nil {
		b.t.Fatalf("cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == name {
			return c
		}
	}
	return nil
}

const consolePolicy = `
id: console-desk
name: Refunds need a person
rules:
  - id: big-refund
    when: action.tool == "refund" && context.amount > 1000
    outcome: require_approval
    reasonCodes: [AMOUNT_OVER_THRESHOLD]
    approvalTimeout: 10m
`

// TestConsoleInBrowser drives the console in headless chromium against
// the in-process stack: sign-in, a pending action arriving on two open
// Desks without a reload, approving it (the agent's long-poll returns and
// the other Desk drops the card), verifying an evidence bundle in the page
// and seeing a tampered one fail, the policy editor's server-side
// validation, and every page loading with no console error and no CSP
// violation.
func TestConsoleInBrowser(t *testing.T) {
	e := newEnv(t)
	b := newBrowser(t, e.base)
	owner := polClient{t: t, base: e.base, key: e.owner}
	e.register("default", "refund-bot")
	agent := polClient{t: t, base: e.base, key: e.key("default", auth.RoleAgent, "refund-bot")}
	owner.createPolicy(consolePolicy)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }

	// The detector works: an inline script is refused by the CSP, and the
	// refusal is reported.
	b.do(b.ctx, "sign-in page", chromedp.Navigate(e.base+"/console/desk"), chromedp.WaitVisible(css("#key")))
	get(b, b.ctx, "inject inline script", chromedp.Evaluate[bool](`(() => { const s = document.createElement('script'); s.textContent = 'window.pwned = 1'; document.body.append(s); return true })()`))
	time.Sleep(300 * time.Millisecond)
	if p := b.take(); !slices.ContainsFunc(p, func(s string) bool { return strings.Contains(s, "Content Security Policy") }) {
		t.Fatalf("an inline script was not reported as a CSP violation; got %q", p)
	}
	if get(b, b.ctx, "check inline script", chromedp.Evaluate[bool](`window.pwned === 1`)) {
		t.Fatal("the CSP let an inline script run")
	}
	// (The sign-in page's screenshot, with its single sign-on button, is
	// TestConsoleOIDCInBrowser's.)

	// A wrong key is refused on the page; the owner key signs in.
	b.do(b.ctx, "wrong key", chromedp.SendKeys(css("#key"), "vgl_nope"), chromedp.Submit(css("#key")), chromedp.WaitVisible(css("#signin-error")))
	if msg := get(b, b.ctx, "sign-in error", chromedp.Text(css("#signin-error"))); !strings.Contains(msg, "not accepted") {
		t.Fatalf("wrong key: %q", msg)
	}
	// The refusal is a 401, which the browser logs: expected here.
	time.Sleep(150 * time.Millisecond)
	if p := b.take(); len(p) != 1 || !strings.Contains(p[0], "401") {
		t.Fatalf("a wrong key should log exactly its 401; got %q", p)
	}
	b.do(b.ctx, "sign in", chromedp.SetValue(css("#key"), e.owner), chromedp.Submit(css("#key")),
		chromedp.WaitVisible(css("#desk")), chromedp.WaitVisible(css("#live.on")))
	b.clean("desk")
	if ck := b.cookie("vigil_console"); ck == nil || !ck.HTTPOnly || ck.SameSite != network.CookieSameSiteStrict || ck.Secure || ck.Path != "/console" {
		t.Fatalf("session cookie %+v (want HttpOnly, SameSite=Strict, not Secure over plain HTTP, Path=/console)", ck)
	}

	// A second console (another tab) on the Desk.
	other := b.tab()
	b.do(other, "second desk", chromedp.Navigate(e.base+"/console/desk"), chromedp.WaitVisible(css("#live.on")))
	for _, ctx := range []context.Context{b.ctx, other} {
		get(b, ctx, "mark the page", chromedp.Evaluate[bool](`window.notReloaded = true`))
	}

	// The agent reports an event and asks; the action appears on both
	// Desks without a reload.
	session := "console-s1"
	if br := e.postBatch(agent.key, []map[string]any{ev("refund-bot", session, time.Now())}); br.Accepted != 1 {
		t.Fatalf("event: %+v", br)
	}
	d := agent.evaluate(map[string]any{"agentId": "refund-bot", "sessionId": session, "action": "refund",
		"context": map[string]any{"amount": 5000, "note": "line\nbreak \u2028 \"quoted\" \u00e9\U0001F600"}})
	if d.Decision != "require_approval" {
		t.Fatalf("decision %s", d)
	}
	pa := pendingFor(t, owner, d.DecisionID)
	card := "#card-" + pa.ID
	for _, ctx := range []context.Context{b.ctx, other} {
		b.do(ctx, "card appears", chromedp.WaitVisible(css(card)))
		if !get(b, ctx, "not reloaded", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
			t.Fatal("a Desk reloaded to show the card")
		}
	}
	cardText := get(b, b.ctx, "card text", chromedp.Text(css(card)))
	for _, want := range []string{"refund", "AMOUNT_OVER_THRESHOLD", "big-refund", pa.ArgsDigest, "refund-bot", "expires in"} {
		if !strings.Contains(cardText, want) {
			t.Errorf("the card lacks %q:\n%s", want, cardText)
		}
	}
	b.shot(b.ctx, "desk")

	// The agent long-polls; the person approves in the first console.
	polled := make(chan map[string]any, 1)
	go func() {
		polled <- agent.get("/v1/decisions/"+d.DecisionID+"?wait=30s").want(t, http.StatusOK, "long-poll").object(t)
	}()
	b.do(b.ctx, "approve", chromedp.SendKeys(css(card+" textarea"), "checked with finance"),
		chromedp.Click(css(card+` button[value="approve"]`)), chromedp.WaitVisible(css(".flash")))
	b.do(other, "card removed in the other console", chromedp.WaitNotPresent(css(card)))
	if !get(b, other, "other console not reloaded", chromedp.Evaluate[bool](`window.notReloaded === true`)) {
		t.Fatal("the other console reloaded to drop the card")
	}
	select {
	case got := <-polled:
		if got["outcome"] != "approved" || got["final"] != true {
			t.Fatalf("long-poll answered %v", got)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the agent's long-poll did not return after the approval")
	}
	if got := owner.get("/v1/guardian/pending-actions/"+pa.ID).want(t, http.StatusOK, "pending action").object(t); got["comment"] != "checked with finance" || !strings.HasPrefix(fmt.Sprint(got["decidedBy"]), "key:") {
		t.Fatalf("decided as %v / %v", got["decidedBy"], got["comment"])
	}
	b.clean("desk after approval")

	// Evidence: once the ledger holds the session's records, the page
	// verifies the bundle it downloads, and a tampered copy fails.
	var bundle []byte
	polEventually(t, 20*time.Second, "the session's evidence", func() (bool, string) {
		r := owner.get("/v1/sessions/" + session + "/evidence")
		bundle = r.Body
		return r.Status == http.StatusOK && bytes.Contains(r.Body, []byte(`"kind":"approval"`)) && bytes.Contains(r.Body, []byte(`"kind":"event"`)), r.String()
	})
	verdict := func(what string) (string, string) {
		b.do(b.ctx, what, chromedp.WaitVisible(css("#verify-result[data-result]")))
		return get(b, b.ctx, what, chromedp.AttributeValue(css("#verify-result"), "data-result")).Value, get(b, b.ctx, what, chromedp.Text(css("#verify-result")))
	}
	b.do(b.ctx, "verify in the page", chromedp.Navigate(e.base+"/console/sessions/"+session),
		chromedp.WaitVisible(css("#verify-server")), chromedp.Click(css("#verify-server")))
	if result, report := verdict("the session's bundle"); result != "valid" {
		t.Fatalf("the session's own bundle: %s: %s", result, report)
	}
	if m := get(b, b.ctx, "key match", chromedp.AttributeValue(css("#verify-key"), "data-match")); m.Value != "true" {
		t.Fatalf("the bundle's key was not recognised as the ledger's key (%q)", m.Value)
	}
	b.shot(b.ctx, "session")
	b.clean("session")
	tampered := bytes.Replace(bundle, []byte(`"amount":5000`), []byte(`"amount":50`), 1)
	if bytes.Equal(tampered, bundle) {
		t.Fatal("the bundle has no amount to tamper with")
	}
	dir := t.TempDir()
	for name, body := range map[string][]byte{"good.json": bundle, "tampered.json": tampered} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct{ file, want, text string }{{"good.json", "valid", "VALID"}, {"tampered.json", "tampered", "record bytes changed"}} {
		get(b, b.ctx, "reset", chromedp.Evaluate[bool](`delete document.getElementById('verify-result').dataset.result`))
		b.do(b.ctx, "upload "+c.file, chromedp.SetUploadFiles(css("#verify-file"), []string{filepath.Join(dir, c.file)}))
		if result, report := verdict("verify " + c.file); result != c.want || !strings.Contains(report, c.text) {
			t.Fatalf("%s: %s: %s", c.file, result, report)
		}
	}
	b.shot(b.ctx, "session-tampered")
	b.clean("session verification")

	// The policy editor compiles on the server as the author types.
	b.do(b.ctx, "policy editor", chromedp.Navigate(e.base+"/console/policies/new"), chromedp.WaitVisible(css("#policy-status.ok")))
	b.do(b.ctx, "break the policy", chromedp.SetValue(css("#policy-yaml"), "id: broken\nname: Broken\nrules:\n  - id: r\n    when: action.tool ==\n    outcome: block\n"),
		chromedp.SendKeys(css("#policy-yaml"), " "), chromedp.WaitVisible(css("#policy-status.bad")))
	if status := get(b, b.ctx, "editor status", chromedp.Text(css("#policy-status"))); !strings.Contains(status, "✗") || !strings.Contains(strings.ToLower(status), "when") {
		t.Fatalf("the editor's error: %q", status)
	}
	if inv := get(b, b.ctx, "aria-invalid", chromedp.AttributeValue(css("#policy-yaml"), "aria-invalid")); inv.Value != "true" {
		t.Fatalf("aria-invalid %q", inv.Value)
	}
	b.shot(b.ctx, "policy-editor")
	b.clean("policy editor")

	// An agent's own page: registration, declaration, baseline, the
	// anomalies the risk service found (linked to their session), sessions.
	anomalies := agentWithAnomalies(t, e, owner, "refund-bot", "console-s2")
	b.do(b.ctx, "agent page", chromedp.Navigate(e.base+"/console/agents"), chromedp.WaitVisible(css(`a[href="/console/agents/refund-bot"]`)),
		chromedp.Click(css(`a[href="/console/agents/refund-bot"]`)), chromedp.WaitVisible(css("#anomalies")))
	for _, id := range anomalies {
		b.do(b.ctx, "anomaly "+id, chromedp.WaitVisible(css(`#anomalies tr[data-id="`+id+`"] a[href="/console/sessions/console-s2"]`)))
	}
	agentText := get(b, b.ctx, "agent page text", chromedp.Text(css("main")))
	for _, want := range []string{"BASELINE_NEW_TOOL", "shell_exec", "web_search", "Manifest hash", "console-s1", "console-s2", "Reason for halting"} {
		if !strings.Contains(agentText, want) {
			t.Errorf("the agent page lacks %q", want)
		}
	}
	if problem := get(b, b.ctx, "agent page", chromedp.Evaluate[string](`(document.querySelector('main .error') || {}).textContent || ''`)); problem != "" {
		t.Errorf("the agent page shows an error: %s", problem)
	}
	b.shot(b.ctx, "agent")
	b.clean("agent page")
	// Its baseline reset, through the confirmation page.
	b.do(b.ctx, "reset step", chromedp.Click(css("#agent-reset button")), chromedp.WaitVisible(css("#reset-baseline button")))
	b.clean("reset confirmation")
	b.do(b.ctx, "reset", chromedp.Click(css("#reset-baseline button")), chromedp.WaitVisible(css("p.flash")))
	if flash := get(b, b.ctx, "reset flash", chromedp.Text(css("p.flash"))); !strings.Contains(flash, "baseline of refund-bot reset (rst_") {
		t.Errorf("after the reset: flash %q", flash)
	}
	b.clean("agent page after the reset")

	// Every page loads with no console error and no CSP violation.
	for _, p := range []string{"desk", "sessions", "agents", "policies", "verdicts", "audit", "keys", "members", "channels", "policies/console-desk/edit"} {
		b.do(b.ctx, "page "+p, chromedp.Navigate(e.base+"/console/"+p), chromedp.WaitVisible(css("h1")))
		if problem := get(b, b.ctx, "page "+p, chromedp.Evaluate[string](`(document.querySelector('main .error') || {}).textContent || ''`)); problem != "" {
			t.Errorf("page %s shows an error: %s", p, problem)
		}
		b.clean("page " + p)
		// The Desk was taken with a card; keys and members by
		// TestConsoleKeysMembersInBrowser, with their forms used.
		if p != "desk" && p != "keys" && p != "members" && !strings.Contains(p, "/") {
			b.shot(b.ctx, p)
		}
	}

	// The phone layout: the page itself never scrolls sideways.
	b.do(b.ctx, "phone layout", chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile),
		chromedp.Navigate(e.base+"/console/sessions/"+session), chromedp.WaitVisible(css("h1")))
	if get(b, b.ctx, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
		t.Error("the session page scrolls sideways on a phone")
	}
	b.shot(b.ctx, "phone-session")
	b.do(b.ctx, "agent page on a phone", chromedp.Navigate(e.base+"/console/agents/refund-bot"), chromedp.WaitVisible(css("#anomalies")))
	if get(b, b.ctx, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
		t.Error("the agent page scrolls sideways on a phone")
	}
	b.shot(b.ctx, "phone-agent")
	b.clean("phone")

	// Signing out ends the session on the server.
	b.do(b.ctx, "sign out", chromedp.EmulateViewport(1280, 900), chromedp.Navigate(e.base+"/console/desk"), chromedp.WaitVisible(css("#desk")),
		chromedp.Click(css(".who button")), chromedp.WaitVisible(css("#key")))
	b.do(b.ctx, "after sign-out", chromedp.Navigate(e.base+"/console/desk"), chromedp.WaitVisible(css("#key")))
	b.clean("sign-out")
}

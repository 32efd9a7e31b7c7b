package main

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// refused checks that the only problems the page reported since the last
// call are the browser's log lines for the HTTP status a refused form
// answered with (chromium logs a document's 4xx).
func (b *browser) refused(what string, status string) {
	b.t.Helper()
	time.Sleep(150 * time.Millisecond)
	if p := b.take(); len(p) != 1 || !strings.Contains(p[0], status) {
		b.t.Errorf("%s: want exactly the %s logged; got %q", what, status, p)
	}
}

// waitFlash waits until the page's status message contains text.
func (b *browser) waitFlash(what, text string) {
	b.t.Helper()
	polEventually(b.t, 20*time.Second, what, func() (bool, string) {
		// The page may be navigating: an evaluation that fails is retried.
		ctx, cancel := context.WithTimeout(b.ctx, 5*time.Second)
		defer cancel()
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`(document.querySelector('.flash') || {}).textContent || ''`))
		return err == nil && strings.Contains(got, text), fmt.Sprintf("flash %q (%v)", got, err)
	})
}

// unlabelled returns the form controls of the page that have no label.
const unlabelled = `Array.from(document.querySelectorAll('main input:not([type=hidden]), main select, main textarea')).filter((e) => e.labels.length === 0).map((e) => e.id || e.name)`

// consoleKeyID returns the id of the tenant's key named name.
func consoleKeyID(t *testing.T, owner polClient, name string) string {
	t.Helper()
	var keys struct {
		Data []struct{ ID, Name string } `json:"data"`
	}
	owner.get("/v1/keys").want(t, http.StatusOK, "keys").decode(t, &keys)
	for _, k := range keys.Data {
		if k.Name == name {
			return k.ID
		}
	}
	t.Fatalf("no key named %q", name)
	return ""
}

// consoleMembers returns the tenant's members by email.
func consoleMembers(t *testing.T, owner polClient) map[string]map[string]any {
	t.Helper()
	var page struct{ Data []map[string]any }
	owner.get("/v1/members").want(t, http.StatusOK, "members").decode(t, &page)
	out := map[string]map[string]any{}
	for _, m := range page.Data {
		out[m["email"].(string)] = m
	}
	return out
}

// TestConsoleKeysMembersInBrowser drives the keys and members forms in
// headless chromium: a refused agent key shows the API's error in the
// form; a key is created, its secret read once and used against the API,
// revoked after a confirmation step (by keyboard) and then refused by the
// API; a member is invited, given another role and reviewer groups and
// removed; the last
// owner cannot be demoted (the API's 409 on the page); every control is
// labelled; no console error or CSP violation; the phone layout does not
// scroll sideways.
func TestConsoleKeysMembersInBrowser(t *testing.T) {
	// newEnv with the stack's log kept at debug level, to check no secret
	// reaches it.
	db := chtest.New(t)
	log, logs := testkit.Logger(t, slog.LevelDebug)
	s := startStack(t, stacktest.Options{DSN: db.DSN, Log: log})
	e := &env{testStack: s, db: db, owner: s.st.BootstrapKey}
	e.register("default", "deploy-bot")
	owner := polClient{t: t, base: e.base, key: e.owner}
	b := newBrowser(t, e.base)
	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	b.signIn(e.owner)
	b.clean("sign-in")

	// Every control of the keys page is labelled.
	b.do(b.ctx, "keys page", chromedp.Navigate(e.base+"/console/keys"), chromedp.WaitVisible(css("#create-key")))
	if l := get(b, b.ctx, "labels", chromedp.Evaluate[[]string](unlabelled)); len(l) > 0 {
		t.Errorf("keys page: controls without a label: %q", l)
	}
	if roles := get(b, b.ctx, "roles offered", chromedp.Evaluate[[]string](`Array.from(document.querySelectorAll('#key-role option')).map((o) => o.value)`)); !slices.Equal(roles, []string{"owner", "admin", "member", "viewer", "agent"}) {
		t.Errorf("an owner is offered roles %q", roles)
	}
	// The form is usable by keyboard: Tab goes through its controls in order.
	b.do(b.ctx, "focus the form", chromedp.Focus(css("#key-name")))
	var order []string
	for range 4 {
		b.do(b.ctx, "tab", chromedp.KeyEvent("\t"))
		order = append(order, get(b, b.ctx, "focused", chromedp.Evaluate[string](`document.activeElement.id || document.activeElement.tagName + ':' + document.activeElement.textContent`)))
	}
	if !slices.Equal(order, []string{"key-role", "key-agents", "key-expiry", "BUTTON:Create key"}) {
		t.Errorf("tab order through the create form: %q", order)
	}
	b.clean("keys page")

	// An agent key needs its agent: the API's refusal, in the form, with
	// what was typed kept and the field marked.
	b.do(b.ctx, "agent key without agent", chromedp.SetValue(css("#key-name"), "deploy bot"), chromedp.SetValue(css("#key-role"), "agent"),
		chromedp.Submit(css("#key-name")), chromedp.WaitVisible(css("#create-key-problem")))
	if msg := get(b, b.ctx, "problem", chromedp.Text(css("#create-key-problem"))); !strings.Contains(msg, "give agentId (or agentIds) for an agent key") {
		t.Errorf("refused agent key: %q", msg)
	}
	if inv := get(b, b.ctx, "aria-invalid", chromedp.AttributeValue(css("#key-agents"), "aria-invalid")); inv.Value != "true" {
		t.Errorf("the agent field is not marked invalid (%q)", inv.Value)
	}
	if v := get(b, b.ctx, "kept", chromedp.Value(css("#key-name"))); v != "deploy bot" {
		t.Errorf("the name typed was not kept: %q", v)
	}
	b.refused("agent key without agent", "400")
	b.do(b.ctx, "agent key", chromedp.SetValue(css("#key-agents"), "deploy-bot"), chromedp.Submit(css("#key-name")), chromedp.WaitVisible(css("#new-key")))
	agentSecret := get(b, b.ctx, "agent key", chromedp.Value(css("#new-key")))
	if h := get(b, b.ctx, "heading", chromedp.Text(css("#secret-h"))); !strings.Contains(h, "agent, for deploy-bot") {
		t.Errorf("created agent key: %q", h)
	}
	agent := polClient{t: t, base: e.base, key: agentSecret}
	if d := agent.evaluate(map[string]any{"agentId": "deploy-bot", "action": "deploy"}); d.Decision == "" {
		t.Errorf("the new agent key asks: %s", d)
	}
	b.clean("agent key created")

	// A member key expiring in 30 days: its secret once, usable at once.
	b.do(b.ctx, "member key", chromedp.Navigate(e.base+"/console/keys"), chromedp.WaitVisible(css("#create-key")),
		chromedp.SetValue(css("#key-name"), "ci reader"), chromedp.SetValue(css("#key-role"), "member"), chromedp.SetValue(css("#key-expiry"), "720h"),
		chromedp.Submit(css("#key-name")), chromedp.WaitVisible(css("#new-key")))
	secret := get(b, b.ctx, "secret", chromedp.Value(css("#new-key")))
	if !strings.HasPrefix(secret, "vgl_") {
		t.Fatalf("the page shows %q as the key", secret)
	}
	if hint := get(b, b.ctx, "hint", chromedp.Text(css("#new-key-hint"))); !strings.Contains(hint, "expires 20") {
		t.Errorf("the expiry is not shown: %q", hint)
	}
	b.clean("member key created")
	reader := polClient{t: t, base: e.base, key: secret}
	reader.get("/v1/sessions").want(t, http.StatusOK, "the new key reads sessions")
	id := consoleKeyID(t, owner, "ci reader")

	// An agent key from before binding is bound from its row.
	legacy := e.key("default", auth.RoleAgent)
	var legacyID string
	var keys struct {
		Data []struct {
			ID, Role string
			Agents   []string
		} `json:"data"`
	}
	owner.get("/v1/keys").want(t, http.StatusOK, "keys").decode(t, &keys)
	for _, k := range keys.Data {
		if k.Role == "agent" && len(k.Agents) == 0 {
			legacyID = k.ID
		}
	}
	unbound := polClient{t: t, base: e.base, key: legacy}
	unbound.post("/v1/decisions.evaluate", map[string]any{"agentId": "deploy-bot", "action": "deploy"}).want(t, http.StatusForbidden, "an unbound agent key asks")
	b.do(b.ctx, "bind", chromedp.Navigate(e.base+"/console/keys"), chromedp.SetValue(css("#bind-agents-"+legacyID), "deploy-bot"),
		chromedp.Click(css("#bind-"+legacyID+" button")))
	b.waitFlash("bound", "key "+legacyID+" bound to deploy-bot")
	if d := unbound.evaluate(map[string]any{"agentId": "deploy-bot", "action": "deploy"}); d.Decision == "" {
		t.Errorf("the bound key asks: %s", d)
	}
	b.clean("bound")

	// Never again: not in the list, nor anywhere in the page.
	b.do(b.ctx, "keys after", chromedp.Navigate(e.base+"/console/keys"), chromedp.WaitVisible(css("#revoke-"+id)))
	if html := get(b, b.ctx, "page html", chromedp.Evaluate[string](`document.documentElement.outerHTML`)); strings.Contains(html, secret) || strings.Contains(html, agentSecret) {
		t.Fatal("the keys page shows a key's secret again")
	}
	b.shot(b.ctx, "keys")

	// Revoke: a confirmation step, then (by keyboard) the revocation.
	b.do(b.ctx, "revoke step", chromedp.Click(css("#revoke-"+id+" button")), chromedp.WaitVisible(css("#revoke-key")))
	if facts := get(b, b.ctx, "confirmation", chromedp.Text(css(".facts"))); !strings.Contains(facts, "ci reader") || !strings.Contains(facts, id) {
		t.Errorf("the confirmation does not name the key: %q", facts)
	}
	reader.get("/v1/sessions").want(t, http.StatusOK, "the confirmation step revokes nothing")
	b.do(b.ctx, "revoke by keyboard", chromedp.Focus(css("#revoke-key button")), chromedp.KeyEvent("\r"))
	b.waitFlash("revoked", "key "+id+" revoked")
	reader.get("/v1/sessions").want(t, http.StatusUnauthorized, "the revoked key")
	if l := logs.String(); strings.Contains(l, secret) || strings.Contains(l, agentSecret) || !strings.Contains(l, "console sign-in") {
		t.Error("a created key's secret is in the log (or the log was not captured)")
	}
	b.do(b.ctx, "no revoke for a revoked key", chromedp.WaitNotPresent(css("#revoke-"+id)))
	b.clean("revoked")

	// Members: invite, with every control labelled.
	b.do(b.ctx, "members page", chromedp.Navigate(e.base+"/console/members"), chromedp.WaitVisible(css("#invite-member")))
	if l := get(b, b.ctx, "labels", chromedp.Evaluate[[]string](unlabelled)); len(l) > 0 {
		t.Errorf("members page: controls without a label: %q", l)
	}
	b.do(b.ctx, "bad invitation", chromedp.SetValue(css("#member-email"), "ada@example.com"), chromedp.SetValue(css("#member-groups"), "finance, not a group!"),
		chromedp.Submit(css("#member-email")), chromedp.WaitVisible(css("#invite-member-problem")))
	if inv := get(b, b.ctx, "aria-invalid", chromedp.AttributeValue(css("#member-groups"), "aria-invalid")); inv.Value != "true" {
		t.Errorf("the groups field is not marked invalid (%q): %s", inv.Value, get(b, b.ctx, "problem", chromedp.Text(css("#invite-member-problem"))))
	}
	b.refused("bad invitation", "400")
	b.do(b.ctx, "invite", chromedp.SetValue(css("#member-groups"), "finance"), chromedp.SetValue(css("#member-role"), "member"),
		chromedp.SetValue(css("#member-name"), "Ada"), chromedp.Submit(css("#member-email")))
	b.waitFlash("invited", "ada@example.com invited as member")
	if m := consoleMembers(t, owner)["ada@example.com"]; m == nil || m["role"] != "member" || m["status"] != "invited" || m["name"] != "Ada" || len(m["groups"].([]any)) != 1 {
		t.Fatalf("ada after the invitation: %v", m)
	}
	b.clean("invited")

	// A role change from the row.
	ada := `form[id="role-ada@example.com"]`
	b.do(b.ctx, "role change", chromedp.SetValue(css(ada+" select"), "admin"), chromedp.Click(css(ada+" button")))
	b.waitFlash("role changed", "ada@example.com is now admin")
	if m := consoleMembers(t, owner)["ada@example.com"]; m["role"] != "admin" {
		t.Fatalf("ada's role %v", m["role"])
	}
	b.clean("role changed")

	// Her reviewer groups, from the row.
	groups := `form[id="groups-ada@example.com"]`
	b.do(b.ctx, "groups", chromedp.SetValue(css(groups+" input:not([type=hidden])"), "finance, oncall"), chromedp.Click(css(groups+" button")))
	b.waitFlash("groups set", "ada@example.com's groups: finance, oncall")
	if m := consoleMembers(t, owner)["ada@example.com"]; len(m["groups"].([]any)) != 2 {
		t.Fatalf("ada's groups %v", m["groups"])
	}
	b.clean("groups set")

	// The only owner member cannot be demoted: the API's 409, on the page.
	b.do(b.ctx, "invite an owner", chromedp.SetValue(css("#member-email"), "bob@example.com"), chromedp.SetValue(css("#member-role"), "owner"),
		chromedp.Submit(css("#member-email")), chromedp.WaitVisible(css(`form[id="role-bob@example.com"]`)))
	b.shot(b.ctx, "members")
	b.clean("owner invited")
	bob := `form[id="role-bob@example.com"]`
	b.do(b.ctx, "demote the last owner", chromedp.SetValue(css(bob+" select"), "viewer"), chromedp.Click(css(bob+" button")), chromedp.WaitVisible(css("main > .error")))
	if msg := get(b, b.ctx, "problem", chromedp.Text(css("main > .error"))); !strings.Contains(msg, "bob@example.com is the last owner and cannot be demoted") {
		t.Errorf("demoting the last owner: %q", msg)
	}
	b.refused("demote the last owner", "409")
	if m := consoleMembers(t, owner)["bob@example.com"]; m["role"] != "owner" {
		t.Fatalf("bob's role %v", m["role"])
	}

	// Remove ada: a confirmation step, then the removal.
	b.do(b.ctx, "remove step", chromedp.Navigate(e.base+"/console/members"), chromedp.Click(css(`form[id="remove-ada@example.com"] button`)), chromedp.WaitVisible(css("#remove-member")))
	if _, ok := consoleMembers(t, owner)["ada@example.com"]; !ok {
		t.Fatal("the confirmation step removed ada")
	}
	b.do(b.ctx, "remove", chromedp.Click(css("#remove-member button")))
	b.waitFlash("removed", "ada@example.com removed")
	if _, ok := consoleMembers(t, owner)["ada@example.com"]; ok {
		t.Fatal("ada is still a member")
	}
	b.clean("removed")

	// A phone: the forms' pages do not scroll sideways.
	for _, p := range []string{"keys", "members"} {
		b.do(b.ctx, "phone "+p, chromedp.EmulateViewport(390, 844, chromedp.EmulateMobile), chromedp.Navigate(e.base+"/console/"+p), chromedp.WaitVisible(css("h1")))
		if get(b, b.ctx, "overflow", chromedp.Evaluate[bool](`document.documentElement.scrollWidth > window.innerWidth + 1`)) {
			t.Errorf("the %s page scrolls sideways on a phone", p)
		}
		b.shot(b.ctx, "phone-"+p)
		b.clean("phone " + p)
	}
}

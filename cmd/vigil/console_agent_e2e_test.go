package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
)

// agentWithAnomalies declares agent's manifest (web_search only) and
// makes the risk service find anomalies: the warm-up's 20 web_search
// events, then a shell_exec in session, a new tool after the warm-up
// (and an undeclared one if the policy service judged it with the
// declaration). It returns the anomalies' verdict ids once the new tool's
// is listed.
func agentWithAnomalies(t *testing.T, e *env, owner polClient, agent, session string) []string {
	t.Helper()
	owner.post("/v1/agents/"+agent+"/manifest", map[string]any{"tools": []string{"web_search"}, "destinations": []string{}}).want(t, http.StatusOK, "declare")
	now := time.Now().Add(-time.Minute)
	var events []map[string]any
	for i := 0; i < 20; i++ {
		events = append(events, ev(agent, session, now.Add(time.Duration(i)*time.Second)))
	}
	events = append(events, with(ev(agent, session, now.Add(21*time.Second)), "payload", map[string]any{"toolName": "shell_exec", "responseStatus": 200}))
	e.postBatch(e.owner, events)
	var ids []string
	polEventually(t, catchUp, "the agent's anomalies", func() (bool, string) {
		r := owner.get("/v1/verdicts?source=baseline&agent=" + url.QueryEscape(agent) + "&limit=100")
		var page struct {
			Data []struct {
				ID          string   `json:"id"`
				SessionID   string   `json:"sessionId"`
				ReasonCodes []string `json:"reasonCodes"`
			} `json:"data"`
		}
		r.decode(t, &page)
		ids = ids[:0]
		newTool := false
		for _, v := range page.Data {
			if v.SessionID != session {
				t.Fatalf("anomaly %s names session %q, want %q", v.ID, v.SessionID, session)
			}
			ids = append(ids, v.ID)
			newTool = newTool || v.ReasonCodes[0] == "BASELINE_NEW_TOOL"
		}
		return newTool, r.String()
	})
	return ids
}

// TestConsoleAgentPage checks an agent's own page over HTTP: its
// registration, declaration, baseline, anomalies and sessions for a
// viewer (who gets no controls, and whose forged pause is the API's 403);
// an owner pausing, resuming, resetting the baseline (through its
// confirmation page) and halting from it; an unknown agent and
// another tenant's agent both a 404 page; agent keys kept out.
func TestConsoleAgentPage(t *testing.T) {
	e := newEnv(t)
	owner := polClient{t: t, base: e.base, key: e.owner}
	e.register("default", "watch-bot")
	anomalies := agentWithAnomalies(t, e, owner, "watch-bot", "watch-s1")
	page := "/console/agents/watch-bot"

	// A viewer reads everything and is offered no control.
	viewer := newConsoleUser(t, e.base)
	if status, body := viewer.signIn(e.key("default", auth.RoleViewer)); status != http.StatusSeeOther {
		t.Fatalf("viewer sign-in: %d %s", status, body)
	}
	status, _, body := viewer.send(http.MethodGet, page, nil, "")
	if status != http.StatusOK {
		t.Fatalf("viewer's agent page: %d\n%s", status, body)
	}
	for _, want := range []string{
		"<h1>Agent <span class=\"mono\">watch-bot</span></h1>",
		// registration and declaration
		"Manifest hash", `<dt>Tools</dt><dd>web_search</dd>`,
		// the baseline: depth, and the tools learned, shell_exec not declared
		"Tools learned", `<td data-label="Value" class="mono">shell_exec</td>`, `<span class="badge bad">no</span>`,
		// the anomalies, linked to their session (BASELINE_UNDECLARED_TOOL
		// too when the policy service had the declaration by then)
		"BASELINE_NEW_TOOL", `<a href="/console/sessions/watch-s1">watch-s1</a>`,
		// the sessions
		`<td data-label="Events">21</td>`,
		"Your role (viewer) may not pause, resume or reset its baseline (agents:write) or halt it (halts:manage).",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("the viewer's agent page lacks %q", want)
		}
	}
	for _, id := range anomalies {
		if !strings.Contains(body, `data-id="`+id+`"`) {
			t.Errorf("anomaly %s is not listed", id)
		}
	}
	if strings.Contains(body, `action="/console/halts"`) || strings.Contains(body, `/settings"`) || strings.Contains(body, `/reset"`) {
		t.Error("a viewer is offered the pause, reset or halt form")
	}
	// A forged reset is refused by the risk service's route, and the
	// baseline stays.
	if status, _, body := viewer.send(http.MethodPost, page+"/reset", url.Values{"csrf": {viewer.csrf}}, e.base); status != http.StatusForbidden || !strings.Contains(body, "role viewer may not agents:write") {
		t.Fatalf("viewer resets: %d %s", status, body)
	}
	// A forged pause is the API's refusal, in its words; nothing changes.
	status, _, body = viewer.send(http.MethodPost, page+"/settings", url.Values{"csrf": {viewer.csrf}, "paused": {"true"}, "return": {"agent"}}, e.base)
	if status != http.StatusForbidden || !strings.Contains(body, "role viewer may not agents:write") {
		t.Fatalf("viewer pauses: %d %s", status, body)
	}
	// The list links to the page.
	if _, _, list := viewer.send(http.MethodGet, "/console/agents", nil, ""); !strings.Contains(list, `<a href="/console/agents/watch-bot">watch-bot</a>`) {
		t.Error("the agents list does not link to the agent's page")
	}

	// Unknown, and another tenant's: the same 404 page.
	for _, c := range []struct {
		who  string
		user *consoleUser
		path string
	}{{"an unknown agent", viewer, "/console/agents/nobody"}, {"another tenant's agent", nil, page}} {
		u := c.user
		if u == nil {
			u = newConsoleUser(t, e.base)
			if status, _ := u.signIn(e.key("globex", auth.RoleOwner)); status != http.StatusSeeOther {
				t.Fatal("globex sign-in")
			}
		}
		status, _, body := u.send(http.MethodGet, c.path, nil, "")
		if status != http.StatusNotFound || !strings.Contains(body, "<h1>Agent not found</h1>") || !strings.Contains(body, "not found") {
			t.Errorf("%s: %d\n%s", c.who, status, body)
		}
		if strings.Contains(body, "BASELINE_") || strings.Contains(body, "watch-s1") {
			t.Errorf("%s: the 404 page shows the agent's records", c.who)
		}
	}

	// Agent keys never get in: no sign-in, and a bearer key alone is sent
	// to the sign-in page.
	agentKey := e.key("default", auth.RoleAgent, "watch-bot")
	if status, body := newConsoleUser(t, e.base).signIn(agentKey); status != http.StatusForbidden {
		t.Fatalf("agent key sign-in: %d %s", status, body)
	}
	req, _ := http.NewRequest(http.MethodGet, e.base+page, nil)
	req.Header.Set("Authorization", "Bearer "+agentKey)
	res, err := newConsoleUser(t, e.base).c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = res.Body.Close()
	if res.StatusCode != http.StatusSeeOther || !strings.HasPrefix(res.Header.Get("Location"), "/console/sign-in") {
		t.Fatalf("an agent key's bearer on the page: %d %s", res.StatusCode, res.Header.Get("Location"))
	}

	// An owner pauses, resumes and halts from the page, and comes back to it.
	own := newConsoleUser(t, e.base)
	if status, _ := own.signIn(e.owner); status != http.StatusSeeOther {
		t.Fatal("owner sign-in")
	}
	_, _, body = own.send(http.MethodGet, page, nil, "")
	for _, want := range []string{`action="/console/agents/watch-bot/settings"`, `name="paused" value="true"`, `action="/console/halts"`, `<label for="halt-reason">Reason for halting</label>`} {
		if !strings.Contains(body, want) {
			t.Errorf("the owner's agent page lacks %q", want)
		}
	}
	post := func(what, path string, form url.Values) string {
		t.Helper()
		form.Set("csrf", own.csrf)
		form.Set("return", "agent")
		status, loc, body := own.send(http.MethodPost, path, form, e.base)
		if status != http.StatusSeeOther || !strings.HasPrefix(loc, page+"?flash=") {
			t.Fatalf("%s: %d %q %s", what, status, loc, body)
		}
		_, _, body = own.send(http.MethodGet, loc, nil, "")
		return body
	}
	if body := post("pause", page+"/settings", url.Values{"paused": {"true"}}); !strings.Contains(body, `<span class="badge bad">paused</span>`) || !strings.Contains(body, `name="paused" value="false"`) {
		t.Fatalf("after pausing, the page shows no pause or no Resume:\n%s", body)
	}
	if got := owner.get("/v1/agents/watch-bot").want(t, http.StatusOK, "agent").object(t); got["settings"].(map[string]any)["paused"] != true {
		t.Fatalf("not paused: %v", got["settings"])
	}
	if body := post("resume", page+"/settings", url.Values{"paused": {"false"}}); strings.Contains(body, `<span class="badge bad">paused</span>`) {
		t.Fatal("still shown paused after resuming")
	}
	// The baseline reset: the page's form leads to a confirmation page
	// (the profile as it is, Cancel back to the agent), whose form resets
	// through the risk service; the page then shows a fresh baseline.
	status, _, body = own.send(http.MethodGet, page+"/reset", nil, "")
	for _, want := range []string{"<h1>Reset the baseline of watch-bot</h1>", "<dt>Observations</dt><dd>21</dd>", "<dt>Earlier resets</dt><dd>0</dd>",
		`action="/console/agents/watch-bot/reset"`, `<a href="/console/agents/watch-bot">Cancel</a>`} {
		if status != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("reset confirmation (%d) lacks %q", status, want)
		}
	}
	if status, _, body := own.send(http.MethodGet, "/console/agents/nobody/reset", nil, ""); status != http.StatusNotFound {
		t.Errorf("reset page of an unknown agent: %d %s", status, body)
	}
	if body := post("reset", page+"/reset", url.Values{}); !strings.Contains(body, "baseline of watch-bot reset (rst_") || !strings.Contains(body, "<dt>Resets</dt><dd>1</dd>") {
		t.Fatalf("after the reset, no flash or no reset counted:\n%s", body)
	}
	var profiles struct {
		Data []map[string]any `json:"data"`
	}
	owner.get("/v1/agents/profiles?agentId=watch-bot").want(t, http.StatusOK, "profiles").decode(t, &profiles)
	if len(profiles.Data) != 1 || profiles.Data[0]["resets"] != 1.0 || profiles.Data[0]["observations"] != 0.0 {
		t.Fatalf("profile after the reset: %v", profiles.Data)
	}
	if body := post("halt", "/console/halts", url.Values{"scope": {"agent"}, "agentId": {"watch-bot"}, "reason": {"console test"}}); !strings.Contains(body, "in force") {
		t.Fatalf("no halt flash:\n%s", body)
	}
	var halts struct {
		Data []map[string]any `json:"data"`
	}
	owner.get("/v1/halts").want(t, http.StatusOK, "halts").decode(t, &halts)
	if len(halts.Data) != 1 || halts.Data[0]["agentId"] != "watch-bot" || halts.Data[0]["reason"] != "console test" {
		t.Fatalf("halts %v", halts.Data)
	}
}

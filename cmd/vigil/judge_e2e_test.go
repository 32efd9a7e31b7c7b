package main

// End-to-end tests of the LLM judge against a local OpenAI-compatible
// server the test starts (real HTTP): configuration, amendment of flagged
// verdicts, timeout, budget, key secrecy, tenant isolation, bad inputs.

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// fakeLLM is an OpenAI-compatible chat completions server.
type fakeLLM struct {
	srv *httptest.Server

	mu       sync.Mutex
	delay    time.Duration
	answer   string // the assistant message content
	calls    int
	inflight int
	auth     []string
	bodies   []string
	released chan struct{}
}

func newFakeLLM(t *testing.T) *fakeLLM {
	f := &fakeLLM{answer: `{"confidence":0.91,"assessment":"true_positive","evidence":["shell.exec is not in the declaration"],"summary":"undeclared shell access"}`, released: make(chan struct{})}
	f.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		f.mu.Lock()
		f.calls++
		f.inflight++
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.bodies = append(f.bodies, string(body))
		delay, answer := f.delay, f.answer
		f.mu.Unlock()
		defer func() { f.mu.Lock(); f.inflight--; f.mu.Unlock() }()
		if r.URL.Path != "/v1/chat/completions" || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			case <-f.released:
				return
			}
		}
		content, _ := json.Marshal(answer)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"id":"cmpl-1","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":%s},"finish_reason":"stop"}],"usage":{"prompt_tokens":100,"completion_tokens":20,"total_tokens":120}}`, content)
	}))
	t.Cleanup(func() { close(f.released); f.srv.Close() })
	return f
}

func (f *fakeLLM) set(delay time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.delay = delay
}

func (f *fakeLLM) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls
}

// startJudgeStack is startStack with the judge allowed to reach loopback
// and a short per-call timeout.
func startJudgeStack(t *testing.T, dsn string, log *slog.Logger) *testStack {
	t.Helper()
	loop := []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	return startStack(t, stacktest.Options{DSN: dsn, Log: log,
		API: func(c *api.Config) { c.Judge.Allow = loop },
		Policy: func(c *policysvc.Config) {
			c.Judge.Allow, c.JudgeTimeout = loop, 400*time.Millisecond
		},
	})
}

// judgeMetric reads vigil_judge_calls_total{outcome}.
func judgeMetric(t *testing.T, s *testStack, outcome string) float64 {
	t.Helper()
	mfs, err := s.st.Reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vigil_judge_calls_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" && l.GetValue() == outcome {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

type judgedVerdict struct {
	ID         string   `json:"id"`
	Outcome    string   `json:"outcome"`
	Source     string   `json:"source"`
	Agent      string   `json:"agent"`
	Confidence *float64 `json:"confidence"`
	Evidence   []struct {
		RuleID  string `json:"ruleId"`
		Message string `json:"message"`
	} `json:"evidence"`
}

// flagVerdict makes one warn decision (an undeclared tool) and returns its id.
func flagVerdict(t *testing.T, s *testStack, key, agentID string) string {
	t.Helper()
	r := s.post(key, "/v1/decisions.evaluate", map[string]any{"agentId": agentID, "sessionId": "judge-sess", "action": map[string]any{"tool": "shell.exec", "arguments": map[string]any{"cmd": "cat /etc/passwd"}}})
	expect(t, r, http.StatusOK, "evaluate")
	var d struct {
		Decision   string `json:"decision"`
		DecisionID string `json:"decisionId"`
	}
	r.decode(t, &d)
	if d.Decision != "warn" {
		t.Fatalf("want a warn decision, got %s", r)
	}
	return d.DecisionID
}

func verdictByID(t *testing.T, s *testStack, key, id string) (judgedVerdict, bool) {
	r := s.get(key, "/v1/verdicts?limit=100")
	if r.status != http.StatusOK {
		return judgedVerdict{}, false
	}
	var page struct{ Data []judgedVerdict }
	r.decode(t, &page)
	for _, v := range page.Data {
		if v.ID == id {
			return v, true
		}
	}
	return judgedVerdict{}, false
}

func enableJudge(t *testing.T, s *testStack, key, agentID string) {
	t.Helper()
	expect(t, s.post(key, "/v1/agents/"+agentID+"/manifest", map[string]any{"tools": []string{"web_search"}}), http.StatusOK, "manifest")
	expect(t, s.post(key, "/v1/agents/"+agentID+"/settings", map[string]any{"judge_enabled": true}), http.StatusOK, "judge_enabled")
}

func TestJudgeEndToEnd(t *testing.T) {
	logs := &testkit.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs.String())
		}
	})
	db := chtest.New(t)
	s := startJudgeStack(t, db.DSN, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	llm := newFakeLLM(t)
	owner := s.st.BootstrapKey
	other := s.key("globex", auth.RoleOwner)
	const apiKey = "sk-judge-test-0123456789-SECRET-abcd"

	// Configure: the key is sealed, never returned; only a hint.
	r := s.post(owner, "/v1/llm-config", map[string]any{"baseUrl": llm.srv.URL + "/v1", "model": "judge-1", "apiKey": apiKey, "dailyTokenBudget": 100000, "confidenceThreshold": 0.8})
	expect(t, r, http.StatusOK, "POST /v1/llm-config")
	for _, resp := range []response{r, s.get(owner, "/v1/llm-config")} {
		var v struct {
			Configured bool   `json:"configured"`
			APIKeySet  bool   `json:"apiKeySet"`
			APIKeyHint string `json:"apiKeyHint"`
			Model      string `json:"model"`
		}
		resp.decode(t, &v)
		if !v.Configured || !v.APIKeySet || v.APIKeyHint != "…abcd" || v.Model != "judge-1" || strings.Contains(string(resp.body), "SECRET") {
			t.Fatalf("llm-config view: %s", resp)
		}
	}

	// A flagged verdict of a judge-enabled agent is amended.
	enableJudge(t, s, owner, "judged-bot")
	id := flagVerdict(t, s, owner, "judged-bot")
	var v judgedVerdict
	eventually(t, catchUp, func() (bool, string) {
		var ok bool
		v, ok = verdictByID(t, s, owner, id)
		return ok && v.Confidence != nil, fmt.Sprintf("verdict %s not amended yet (%d calls)", id, llm.count())
	})
	if *v.Confidence != 0.91 || v.Outcome != "warn" {
		t.Errorf("amended verdict: %+v", v)
	}
	found := false
	for _, e := range v.Evidence {
		found = found || (e.RuleID == "llm-judge" && strings.Contains(e.Message, "not in the declaration"))
	}
	if !found {
		t.Errorf("no judge evidence on the verdict: %+v", v.Evidence)
	}
	r = s.get(owner, "/v1/decisions/"+id)
	var dv struct {
		Confidence *float64         `json:"confidence"`
		Judgement  *judge.Judgement `json:"judgement"`
	}
	r.decode(t, &dv)
	if dv.Confidence == nil || dv.Judgement == nil || !dv.Judgement.Confirmed || dv.Judgement.Model != "judge-1" {
		t.Errorf("GET /v1/decisions/%s: %s", id, r)
	}
	// What the model saw: the flag, the declaration, the session; the key
	// only as the bearer token. (The risk service's anomaly about the
	// same action is judged too, in its own call.)
	llm.mu.Lock()
	seen := false
	for i, b := range llm.bodies {
		if llm.auth[i] != "Bearer "+apiKey {
			t.Errorf("request %d authorization %q", i, llm.auth[i])
		}
		seen = seen || strings.Contains(b, "UNDECLARED_TOOL") && strings.Contains(b, "web_search") &&
			strings.Contains(b, `"model":"judge-1"`) && strings.Contains(b, "json_object")
	}
	if !seen {
		t.Errorf("no request carried the flag, the declaration and the JSON format: %q", llm.bodies)
	}
	llm.mu.Unlock()
	// The risk service's anomaly about the same undeclared tool (a verdict
	// with source baseline) is judged too.
	eventually(t, catchUp, func() (bool, string) {
		r := s.get(owner, "/v1/verdicts?source=baseline&agent=judged-bot&limit=100")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		var page struct{ Data []judgedVerdict }
		r.decode(t, &page)
		for _, v := range page.Data {
			if v.Confidence != nil && *v.Confidence == 0.91 {
				return true, ""
			}
		}
		return false, fmt.Sprintf("no judged anomaly among %d baseline verdicts", len(page.Data))
	})
	// Not judged: allow verdicts and agents without the judge.
	expect(t, s.post(owner, "/v1/decisions.evaluate", map[string]any{"agentId": "judged-bot", "action": map[string]any{"tool": "web_search"}}), http.StatusOK, "allow")
	expect(t, s.post(owner, "/v1/agents/plain-bot/manifest", map[string]any{"tools": []string{"web_search"}}), http.StatusOK, "manifest")
	flagVerdict(t, s, owner, "plain-bot")

	// Usage counts the response's tokens.
	var u struct {
		TokensUsed, Calls, DailyTokenBudget, Remaining int64
		Exhausted                                      bool
	}
	s.get(owner, "/v1/judge/usage").decode(t, &u)
	eventually(t, catchUp, func() (bool, string) {
		s.get(owner, "/v1/judge/usage").decode(t, &u)
		n := int64(llm.count())
		return u.Calls == n && u.TokensUsed == 120*n && u.DailyTokenBudget == 100000 && u.Remaining == 100000-120*n && !u.Exhausted,
			fmt.Sprintf("usage %+v after %d calls", u, n)
	})
	// Kaizen's "this week": the seven UTC days ending with the day asked
	// for (today by default), in total and per day.
	type weekUsage struct {
		TokensUsed int64 `json:"tokensUsed"`
		Week       struct {
			From, To   string
			TokensUsed int64 `json:"tokensUsed"`
			Calls      int64 `json:"calls"`
			Days       []struct {
				Day        string `json:"day"`
				TokensUsed int64  `json:"tokensUsed"`
			} `json:"days"`
		} `json:"week"`
	}
	now := time.Now().UTC()
	today := now.Format(time.DateOnly)
	for _, tc := range []struct {
		day               time.Time
		dayTokens, weekTk int64
	}{
		{now, u.TokensUsed, u.TokensUsed},
		{now.AddDate(0, 0, 6), 0, u.TokensUsed}, // today is the week's first day
		{now.AddDate(0, 0, 7), 0, 0},            // today has left the week
	} {
		var w weekUsage
		s.get(owner, "/v1/judge/usage?day="+tc.day.Format(time.DateOnly)).decode(t, &w)
		wk := w.Week
		if w.TokensUsed != tc.dayTokens || wk.TokensUsed != tc.weekTk || len(wk.Days) != 7 || wk.To != tc.day.Format(time.DateOnly) ||
			wk.From != tc.day.AddDate(0, 0, -6).Format(time.DateOnly) || wk.Days[6].Day != wk.To || wk.Days[0].Day != wk.From {
			t.Errorf("usage of the week to %s: %+v, want day %d, week %d", tc.day.Format(time.DateOnly), w, tc.dayTokens, tc.weekTk)
		}
		for _, d := range wk.Days {
			if d.Day == today && d.TokensUsed != tc.weekTk {
				t.Errorf("week to %s: today %+v, want %d tokens", wk.To, d, tc.weekTk)
			}
		}
	}

	// Tenant isolation: globex sees nothing of it; its own flag (judge on,
	// no config) calls nobody.
	var ov struct {
		Configured bool `json:"configured"`
	}
	s.get(other, "/v1/llm-config").decode(t, &ov)
	s.get(other, "/v1/judge/usage").decode(t, &u)
	if ov.Configured || u.TokensUsed != 0 || u.Calls != 0 {
		t.Errorf("globex sees default's judge: configured=%v usage=%+v", ov.Configured, u)
	}
	if _, ok := verdictByID(t, s, other, id); ok {
		t.Error("globex lists default's verdict")
	}
	if r := s.get(other, "/v1/decisions/"+id); r.status != http.StatusNotFound {
		t.Errorf("globex GET default's decision: %s", r)
	}
	enableJudge(t, s, other, "judged-bot")
	before := judgeMetric(t, s, "unconfigured")
	calls := llm.count()
	gid := flagVerdict(t, s, other, "judged-bot")
	eventually(t, catchUp, func() (bool, string) {
		_, listed := verdictByID(t, s, other, gid)
		return listed && judgeMetric(t, s, "unconfigured") > before, "globex flag not seen by the judge"
	})
	if gv, _ := verdictByID(t, s, other, gid); gv.Confidence != nil || llm.count() != calls {
		t.Errorf("unconfigured tenant judged: %+v, %d → %d calls", gv, calls, llm.count())
	}

	// Timeout: the decision is answered as before, the verdict stays
	// unamended, and the attempt is counted as a timeout.
	llm.set(5 * time.Second)
	before = judgeMetric(t, s, "timeout")
	tid := flagVerdict(t, s, owner, "judged-bot")
	eventually(t, catchUp, func() (bool, string) {
		return judgeMetric(t, s, "timeout") > before, "no judge timeout yet"
	})
	// The timeout is counted when the judge gives up, which can be before
	// the verdict's projection reaches ClickHouse: wait for the listing.
	var tv judgedVerdict
	eventually(t, catchUp, func() (bool, string) {
		var ok bool
		tv, ok = verdictByID(t, s, owner, tid)
		return ok, "verdict " + tid + " not listed yet"
	})
	if tv.Confidence != nil || tv.Outcome != "warn" {
		t.Errorf("verdict after a judge timeout: %+v", tv)
	}
	llm.set(0)

	// Budget: lower it below today's usage; the next flags call nobody.
	// The rest of the configuration (and the key) is kept.
	r = s.post(owner, "/v1/llm-config", map[string]any{"dailyTokenBudget": 100})
	expect(t, r, http.StatusOK, "lower the budget")
	if !strings.Contains(string(r.body), `"apiKeySet":true`) {
		t.Errorf("a partial update dropped the key: %s", r)
	}
	eventually(t, catchUp, func() (bool, string) {
		s.get(owner, "/v1/judge/usage").decode(t, &u)
		return u.Exhausted, fmt.Sprintf("usage %+v", u)
	})
	before = judgeMetric(t, s, "budget_exhausted")
	// The policy service sees the new budget through CONTROL; flag until
	// it is refused for the budget (every flag after that too).
	var bid string
	eventually(t, catchUp, func() (bool, string) {
		bid = flagVerdict(t, s, owner, "judged-bot")
		time.Sleep(100 * time.Millisecond)
		return judgeMetric(t, s, "budget_exhausted") > before, "budget not enforced yet"
	})
	// Let calls that passed the budget check before the new budget
	// reached the policy service finish; then no call may happen any more.
	last := -1
	eventually(t, catchUp, func() (bool, string) {
		llm.mu.Lock()
		n, busy := llm.calls, llm.inflight
		llm.mu.Unlock()
		settled := busy == 0 && n == last
		last = n
		return settled, fmt.Sprintf("%d calls, %d in flight", n, busy)
	})
	calls = llm.count()
	before = judgeMetric(t, s, "budget_exhausted")
	bid = flagVerdict(t, s, owner, "judged-bot")
	eventually(t, catchUp, func() (bool, string) {
		_, listed := verdictByID(t, s, owner, bid)
		return listed && judgeMetric(t, s, "budget_exhausted") > before, "second flag over budget not seen"
	})
	if llm.count() != calls {
		t.Errorf("the judge called the model over budget: %d → %d calls", calls, llm.count())
	}
	if bv, _ := verdictByID(t, s, owner, bid); bv.Confidence != nil {
		t.Errorf("verdict over budget was amended: %+v", bv)
	}

	// The key never shows in the logs.
	if strings.Contains(logs.String(), apiKey) || strings.Contains(logs.String(), "SECRET-abcd") {
		t.Error("the LLM API key is in the logs")
	}
}

func TestJudgeConfigErrors(t *testing.T) {
	db := chtest.New(t)
	s := startJudgeStack(t, db.DSN, testLogger(t))
	owner := s.st.BootstrapKey
	for _, tc := range []struct {
		role      auth.Role
		get, post int
	}{
		{auth.RoleAdmin, 200, 400}, {auth.RoleMember, 200, 403}, {auth.RoleViewer, 403, 403}, {auth.RoleAgent, 403, 403},
	} {
		k := s.key("default", tc.role)
		for _, path := range []string{"/v1/llm-config", "/v1/judge/usage"} {
			if got := s.get(k, path).status; got != tc.get {
				t.Errorf("%s GET %s: %d, want %d", tc.role, path, got, tc.get)
			}
		}
		if got := s.post(k, "/v1/llm-config", map[string]any{}).status; got != tc.post {
			t.Errorf("%s POST: %d, want %d", tc.role, got, tc.post)
		}
	}
	for _, tc := range []struct {
		name  string
		body  any
		paths []string
	}{
		{"not JSON", "{", []string{""}},
		// Unknown fields are ignored (with a Warning); the known ones are
		// still checked.
		{"unknown field beside an invalid one", map[string]any{"baseUrl": "http://127.0.0.1:1/v1", "model": "", "key": "x"}, []string{"model"}},
		// No baseUrl: the default provider's applies; the model is required.
		{"empty", map[string]any{}, []string{"model"}},
		{"unknown provider", map[string]any{"provider": "acme-llm", "model": "m"}, []string{"provider"}},
		{"both spellings", map[string]any{"baseUrl": "http://127.0.0.1:1/v1", "base_url": "http://127.0.0.1:1/v1", "model": "m"}, []string{"base_url"}},
		{"snake_case checked too", map[string]any{"baseUrl": "http://127.0.0.1:1/v1", "model": "m", "daily_token_budget": -1}, []string{"dailyTokenBudget"}},
		{"scheme", map[string]any{"baseUrl": "ftp://127.0.0.1/v1", "model": "m"}, []string{"baseUrl"}},
		{"private address", map[string]any{"baseUrl": "http://10.1.2.3/v1", "model": "m"}, []string{"baseUrl"}},
		{"metadata address", map[string]any{"baseUrl": "http://169.254.169.254/v1", "model": "m"}, []string{"baseUrl"}},
		{"credentials in URL", map[string]any{"baseUrl": "http://u:p@127.0.0.1/v1", "model": "m"}, []string{"baseUrl"}},
		{"ranges", map[string]any{"baseUrl": "http://127.0.0.1:1/v1", "model": "m", "dailyTokenBudget": -1, "confidenceThreshold": 1.5}, []string{"dailyTokenBudget", "confidenceThreshold"}},
		{"types", map[string]any{"baseUrl": 5, "model": "m"}, []string{""}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := checkEnvelope(t, s.post(owner, "/v1/llm-config", tc.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", nil)
			var got []string
			for _, d := range e.Error.Details {
				got = append(got, d.Path)
			}
			if strings.Join(got, ",") != strings.Join(tc.paths, ",") {
				t.Errorf("paths %v, want %v", got, tc.paths)
			}
		})
	}
	checkEnvelope(t, s.get(owner, "/v1/judge/usage?day=yesterday"), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", []pair{{"day", "invalid_format"}})
	// Nothing was stored by the failed writes.
	var v struct {
		Configured bool `json:"configured"`
	}
	s.get(owner, "/v1/llm-config").decode(t, &v)
	if v.Configured {
		t.Error("a rejected configuration was stored")
	}
}

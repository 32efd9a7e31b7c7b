package judge_test

import (
	"bytes"
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/ssrf"
)

func TestParseAnswer(t *testing.T) {
	cases := []struct {
		name, in string
		ok       bool
		conf     float64
		assess   string
	}{
		{"plain", `{"confidence":0.4,"assessment":"false_positive","evidence":["a"],"summary":"s"}`, true, 0.4, "false_positive"},
		{"fenced", "```json\n{\"confidence\":1,\"assessment\":\"true_positive\"}\n```", true, 1, "true_positive"},
		{"unknown assessment", `{"confidence":0.5,"assessment":"maybe"}`, true, 0.5, "uncertain"},
		{"confidence too high", `{"confidence":1.5}`, false, 0, ""},
		{"negative", `{"confidence":-0.1}`, false, 0, ""},
		{"not JSON", `I think it is bad`, false, 0, ""},
		{"wrong type", `{"confidence":"high"}`, false, 0, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := judge.ParseAnswer(tc.in)
			if (err == nil) != tc.ok {
				t.Fatalf("err = %v, want ok=%v", err, tc.ok)
			}
			if tc.ok && (a.Confidence != tc.conf || a.Assessment != tc.assess) {
				t.Errorf("got %+v", a)
			}
		})
	}
	long := `{"confidence":0.5,"evidence":[` + strings.Repeat(`"`+strings.Repeat("é", 400)+`",`, 20) + `"x"]}`
	a, err := judge.ParseAnswer(long)
	if err != nil || len(a.Evidence) != 10 || len(a.Evidence[0]) > 510 {
		t.Fatalf("bounds: %v, %d items, first %d bytes", err, len(a.Evidence), len(a.Evidence[0]))
	}
}

func FuzzParseAnswer(f *testing.F) {
	f.Add(`{"confidence":0.4,"assessment":"false_positive","evidence":["a"],"summary":"s"}`)
	f.Add("```{\"confidence\":1}```")
	f.Add(`{"evidence":[""," ","x"]}`)
	f.Fuzz(func(t *testing.T, s string) {
		a, err := judge.ParseAnswer(s)
		if err != nil {
			return
		}
		if a.Confidence < 0 || a.Confidence > 1 || len(a.Evidence) > 10 || len(a.Summary) > 1004 {
			t.Fatalf("unbounded answer: %+v", a)
		}
		for _, e := range a.Evidence {
			if e == "" || len(e) > 504 {
				t.Fatalf("evidence %q", e)
			}
		}
	})
}

func TestApply(t *testing.T) {
	box, err := judge.NewBox(bytes.Repeat([]byte{1}, 32))
	if err != nil {
		t.Fatal(err)
	}
	guard := ssrf.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	ctx := context.Background()
	cur := judge.ConfigRecord{Tenant: "acme"}
	next, err := judge.Apply(ctx, cur, []byte(`{"baseUrl":"http://127.0.0.1:8080/v1/","model":"m","apiKey":"sk-abcdefghijklmnop"}`), box, guard, nil)
	if err != nil {
		t.Fatal(err)
	}
	if next.BaseURL != "http://127.0.0.1:8080/v1" || next.KeyHint != "…mnop" || next.DailyTokenBudget != judge.DefaultDailyBudget ||
		next.ConfidenceThreshold != judge.DefaultThreshold || strings.Contains(next.SealedKey, "abcdefgh") {
		t.Fatalf("first config: %+v", next)
	}
	if k, err := next.OpenKey(box); err != nil || k != "sk-abcdefghijklmnop" {
		t.Fatalf("open: %q %v", k, err)
	}
	// Bound to the tenant: copied onto another tenant's record it fails.
	stolen := next
	stolen.Tenant = "globex"
	if _, err := stolen.OpenKey(box); err == nil {
		t.Fatal("a sealed key opened for another tenant")
	}
	// Partial update keeps the rest; apiKey "" removes the key.
	upd, err := judge.Apply(ctx, next, []byte(`{"dailyTokenBudget":5}`), box, guard, nil)
	if err != nil || upd.SealedKey != next.SealedKey || upd.DailyTokenBudget != 5 || upd.Model != "m" {
		t.Fatalf("partial: %+v %v", upd, err)
	}
	upd, err = judge.Apply(ctx, upd, []byte(`{"apiKey":""}`), box, guard, nil)
	if err != nil || upd.SealedKey != "" || upd.KeyHint != "" {
		t.Fatalf("remove key: %+v %v", upd, err)
	}
	for _, tc := range []struct{ body, path string }{
		{`{"baseUrl":"http://10.0.0.1/v1","model":"m"}`, "baseUrl"},
		{`{"baseUrl":"http://127.0.0.1/v1?x=1","model":"m"}`, "baseUrl"},
		{`{"baseUrl":"http://127.0.0.1/v1","model":"","dailyTokenBudget":1}`, "model"},
		{`{"baseUrl":"http://127.0.0.1/v1","model":"m","apiKey":"a\nb"}`, "apiKey"},
		{`{"baseUrl":"http://127.0.0.1/v1","model":"m","confidenceThreshold":-1}`, "confidenceThreshold"},
		{`[]`, ""},
		{`{"provider":"nope","model":"m"}`, "provider"},
		{`{"base_url":"http://127.0.0.1/v1","baseUrl":"http://127.0.0.1/v1","model":"m"}`, "base_url"},
		{`{"base_url":"http://127.0.0.1/v1","model":"m","confidence_threshold":2}`, "confidenceThreshold"},
	} {
		_, err := judge.Apply(ctx, cur, []byte(tc.body), box, guard, nil)
		var ae *apperr.Error
		if !asErr(err, &ae) || len(ae.Details) == 0 || ae.Details[0].Path != tc.path {
			t.Errorf("%s: %v", tc.body, err)
		}
	}
}

// TestApplyProvidersAndSnakeCase: Kaizen's snake_case spellings set the
// same fields, and a configuration without baseUrl takes its provider's
// (named, or implied by the model) without resolving it ahead.
func TestApplyProvidersAndSnakeCase(t *testing.T) {
	ctx := context.Background()
	box, err := judge.NewBox(bytes.Repeat([]byte("k"), 32))
	if err != nil {
		t.Fatal(err)
	}
	guard := ssrf.New([]netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")})
	for _, tc := range []struct {
		name, body, url, provider string
		budget                    int64
		threshold                 float64
	}{
		{"openai implied", `{"model":"gpt-4o-mini","api_key":"sk-0123456789abcd","daily_token_budget":5000,"confidence_threshold":0.5}`, "https://api.openai.com/v1", "openai", 5000, 0.5},
		{"anthropic implied by a claude model", `{"model":"claude-3-5-haiku"}`, "https://api.anthropic.com/v1", "anthropic", judge.DefaultDailyBudget, judge.DefaultThreshold},
		{"provider named", `{"provider":"groq","model":"llama"}`, "https://api.groq.com/openai/v1", "groq", judge.DefaultDailyBudget, judge.DefaultThreshold},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := judge.Apply(ctx, judge.ConfigRecord{Tenant: "t"}, []byte(tc.body), box, guard, nil)
			if err != nil {
				t.Fatal(err)
			}
			if got.BaseURL != tc.url || got.Provider != tc.provider || got.DailyTokenBudget != tc.budget || got.ConfidenceThreshold != tc.threshold {
				t.Errorf("got %+v", got)
			}
		})
	}
	// An existing configuration keeps its base URL when an update names
	// neither a URL nor a provider.
	cur := judge.ConfigRecord{Tenant: "t", BaseURL: "http://127.0.0.1:9/v1", Model: "m", DailyTokenBudget: 1}
	got, err := judge.Apply(ctx, cur, []byte(`{"daily_token_budget":7}`), box, guard, nil)
	if err != nil || got.BaseURL != cur.BaseURL || got.DailyTokenBudget != 7 {
		t.Errorf("update: %+v %v", got, err)
	}
}

func TestHint(t *testing.T) {
	for in, want := range map[string]string{"": "", "short-key": "", "sk-0123456789wxyz": "…wxyz"} {
		if got := judge.Hint(in); got != want {
			t.Errorf("Hint(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestPromptBounded(t *testing.T) {
	c := judge.Case{Verdict: map[string]any{"tool": "x"}}
	for i := 0; i < 2000; i++ {
		c.Session = append(c.Session, judge.Step{Tool: strings.Repeat("t", 50), Outcome: "allow"})
	}
	msgs := judge.Prompt(c)
	if len(msgs) != 2 || msgs[0].Role != "system" || len(msgs[1].Content) > 24<<10 {
		t.Fatalf("prompt: %d messages, user %d bytes", len(msgs), len(msgs[1].Content))
	}
}

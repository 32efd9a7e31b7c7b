package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/judge"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/secretbox"
)

// safety holds what the redaction and judge routes need beyond the
// service's own dependencies.
type safety struct {
	view   *judge.View
	ledger *judge.Ledger
	// box seals LLM API keys under the configured Judge.SealSecret.
	box *secretbox.Box
}

// LLMConfigView is the response of GET/POST /v1/llm-config. The API key
// is never returned; apiKeyHint shows its last four characters.
type LLMConfigView struct {
	Configured          bool       `json:"configured"`
	Provider            string     `json:"provider,omitempty"`
	BaseURL             string     `json:"baseUrl"`
	Model               string     `json:"model"`
	APIKeySet           bool       `json:"apiKeySet"`
	APIKeyHint          string     `json:"apiKeyHint"`
	DailyTokenBudget    int64      `json:"dailyTokenBudget"`
	ConfidenceThreshold float64    `json:"confidenceThreshold"`
	UpdatedAt           *time.Time `json:"updatedAt,omitempty"`
	UpdatedBy           string     `json:"updatedBy,omitempty"`
	Revision            uint64     `json:"revision"`
}

func llmView(r judge.ConfigRecord, rev uint64) LLMConfigView {
	v := LLMConfigView{
		Configured: r.BaseURL != "", Provider: r.Provider, BaseURL: r.BaseURL, Model: r.Model, APIKeySet: r.SealedKey != "", APIKeyHint: r.KeyHint,
		DailyTokenBudget: r.DailyTokenBudget, ConfidenceThreshold: r.ConfidenceThreshold, UpdatedBy: r.By, Revision: rev,
	}
	if !v.Configured {
		v.DailyTokenBudget, v.ConfidenceThreshold = judge.DefaultDailyBudget, judge.DefaultThreshold
	}
	if !r.UpdatedAt.IsZero() {
		v.UpdatedAt = &r.UpdatedAt
	}
	return v
}

func (s *Service) llmRecord(ctx context.Context, tenant string) (judge.ConfigRecord, uint64, error) {
	var r judge.ConfigRecord
	seq, err := s.deps.Store.LLMConfig(ctx, tenant, &r)
	if errors.Is(err, control.ErrNotFound) {
		return judge.ConfigRecord{Tenant: tenant}, 0, nil
	}
	return r, seq, err
}

// getLLMConfig answers GET /v1/llm-config.
func (s *Service) getLLMConfig(c echo.Context) error {
	r, seq, err := s.llmRecord(c.Request().Context(), httpkit.Principal(c).Tenant)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, llmView(r, seq))
}

// setLLMConfig answers POST /v1/llm-config: fields sent replace, absent
// ones keep their value. The base URL must pass the SSRF guard; without
// one, the provider's (judge.ProviderURLs) applies. Fields may be spelled
// in camelCase or Kaizen's snake_case; unknown ones are ignored with a
// Warning.
func (s *Service) setLLMConfig(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	p := httpkit.Principal(c)
	box := s.safety.box
	cur, _, err := s.llmRecord(ctx, p.Tenant)
	if err != nil {
		return err
	}
	cur.Tenant = p.Tenant
	next, err := judge.Apply(ctx, cur, httpkit.IgnoreUnknown(c, body, judge.UpdateFields...), box, s.cfg.Judge.Guard(), nil)
	if err != nil {
		return err
	}
	next.UpdatedAt, next.By = time.Now().UTC(), p.KeyID
	if next.By == "" {
		next.By = p.Member
	}
	seq, err := s.deps.Store.PutLLMConfig(ctx, p.Tenant, next)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, llmView(next, seq))
}

// JudgeUsageView is the response of GET /v1/judge/usage: the day's usage
// (today unless ?day= names another UTC day) and, in week, the seven UTC
// days ending with it (Kaizen: "usage today and this week").
type JudgeUsageView struct {
	Day              string        `json:"day"`
	TokensUsed       int64         `json:"tokensUsed"`
	PromptTokens     int64         `json:"promptTokens"`
	CompletionTokens int64         `json:"completionTokens"`
	Calls            int64         `json:"calls"`
	Failures         int64         `json:"failures"`
	DailyTokenBudget int64         `json:"dailyTokenBudget"`
	Remaining        int64         `json:"remaining"`
	Exhausted        bool          `json:"exhausted"`
	UpdatedAt        *time.Time    `json:"updatedAt,omitempty"`
	Week             JudgeWeekView `json:"week"`
}

// JudgeUsageTotals are token and call counts over a period.
type JudgeUsageTotals struct {
	TokensUsed       int64 `json:"tokensUsed"`
	PromptTokens     int64 `json:"promptTokens"`
	CompletionTokens int64 `json:"completionTokens"`
	Calls            int64 `json:"calls"`
	Failures         int64 `json:"failures"`
}

// JudgeWeekView is the usage of seven UTC days, from and to inclusive,
// in total and per day (oldest first).
type JudgeWeekView struct {
	From string `json:"from"`
	To   string `json:"to"`
	JudgeUsageTotals
	Days []JudgeDayView `json:"days"`
}

// JudgeDayView is one day of a week's usage.
type JudgeDayView struct {
	Day string `json:"day"`
	JudgeUsageTotals
}

// getJudgeUsage answers GET /v1/judge/usage[?day=YYYY-MM-DD] (UTC days).
func (s *Service) getJudgeUsage(c echo.Context) error {
	at := time.Now().UTC()
	if d := c.QueryParam("day"); d != "" {
		t, err := time.Parse(time.DateOnly, d)
		if err != nil {
			return apperr.Validation("day is not valid", apperr.FieldError{Path: "day", Code: "invalid_format", Message: "day must be a date such as 2026-01-31"})
		}
		at = t
	}
	day := judge.Day(at)
	ctx := c.Request().Context()
	tenant := httpkit.Principal(c).Tenant
	r, _, err := s.llmRecord(ctx, tenant)
	if err != nil {
		return err
	}
	week := JudgeWeekView{From: judge.Day(at.AddDate(0, 0, -6)), To: day, Days: make([]JudgeDayView, 0, 7)}
	var u judge.Usage
	for i := 6; i >= 0; i-- {
		d := judge.Day(at.AddDate(0, 0, -i))
		du, _, err := s.safety.ledger.Get(ctx, tenant, d)
		if err != nil {
			return apperr.Unavailable("judge usage unavailable; retry", time.Second, err)
		}
		t := JudgeUsageTotals{TokensUsed: du.TotalTokens, PromptTokens: du.PromptTokens, CompletionTokens: du.CompletionTokens, Calls: du.Calls, Failures: du.Failures}
		week.Days = append(week.Days, JudgeDayView{Day: d, JudgeUsageTotals: t})
		week.TokensUsed += t.TokensUsed
		week.PromptTokens += t.PromptTokens
		week.CompletionTokens += t.CompletionTokens
		week.Calls += t.Calls
		week.Failures += t.Failures
		u = du // the last is the day asked for
	}
	budget := r.DailyTokenBudget
	if r.BaseURL == "" {
		budget = 0
	}
	v := JudgeUsageView{
		Day: day, TokensUsed: u.TotalTokens, PromptTokens: u.PromptTokens, CompletionTokens: u.CompletionTokens,
		Calls: u.Calls, Failures: u.Failures, DailyTokenBudget: budget, Remaining: max(0, budget-u.TotalTokens),
		Exhausted: u.TotalTokens >= budget, Week: week,
	}
	if !u.UpdatedAt.IsZero() {
		v.UpdatedAt = &u.UpdatedAt
	}
	return c.JSON(http.StatusOK, v)
}

// amendVerdict adds the LLM judge's confidence and evidence to a verdict
// it judged.
func (s *Service) amendVerdict(v *Verdict, rec rules.DecisionRecord) {
	j, ok := s.safety.view.Get(rec.Tenant, rec.ID)
	if !ok {
		return
	}
	conf := j.Confidence
	v.Confidence = &conf
	v.Evidence = append(v.Evidence, judgeMatches(j, rec.Decision.Outcome)...)
}

// amendView adds the judgement to a GET /v1/decisions/:id answer.
func (s *Service) amendView(out map[string]any, rec *rules.DecisionRecord) {
	if rec == nil {
		return
	}
	if j, ok := s.safety.view.Get(rec.Tenant, rec.ID); ok {
		out["confidence"] = j.Confidence
		out["judgement"] = j
	}
}

func judgeMatches(j judge.Judgement, o rules.Outcome) []rules.Match {
	msgs := j.Evidence
	if len(msgs) == 0 && j.Summary != "" {
		msgs = []string{j.Summary}
	}
	out := make([]rules.Match, 0, len(msgs))
	for _, m := range msgs {
		out = append(out, rules.Match{RuleID: "llm-judge", Outcome: o, ReasonCodes: []string{"LLM_JUDGE_" + upperASCII(j.Assessment)}, Message: m})
	}
	return out
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

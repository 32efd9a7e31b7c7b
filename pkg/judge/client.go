package judge

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
)

// Message is one chat message.
type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

// TokenUsage is the "usage" object of a chat completion.
type TokenUsage struct {
	PromptTokens     int64 `json:"prompt_tokens"`
	CompletionTokens int64 `json:"completion_tokens"`
	TotalTokens      int64 `json:"total_tokens"`
}

// Answer is what the model is asked to return.
type Answer struct {
	// Confidence (0–1) that the flag is a real problem.
	Confidence float64 `json:"confidence"`
	// Assessment is true_positive, false_positive or uncertain.
	Assessment string   `json:"assessment"`
	Evidence   []string `json:"evidence"`
	Summary    string   `json:"summary"`
}

// ErrBadAnswer reports a completion the judge cannot use.
var ErrBadAnswer = errors.New("judge: unusable answer")

// maxResponseBytes bounds what is read from the endpoint.
const maxResponseBytes = 1 << 20

// Complete sends messages to POST {baseURL}/chat/completions asking for a
// JSON object, and returns the parsed answer and the token usage. The
// key is sent only as the bearer token; it appears in no error.
func Complete(ctx context.Context, hc *http.Client, baseURL, model, key string, msgs []Message) (Answer, TokenUsage, error) {
	body, err := json.Marshal(map[string]any{
		"model": model, "messages": msgs, "temperature": 0,
		"response_format": map[string]string{"type": "json_object"},
	})
	if err != nil {
		return Answer{}, TokenUsage{}, fmt.Errorf("judge: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+"/chat/completions", bytes.NewReader(body))
	if err != nil {
		return Answer{}, TokenUsage{}, fmt.Errorf("judge: build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := hc.Do(req)
	if err != nil {
		return Answer{}, TokenUsage{}, fmt.Errorf("judge: call endpoint: %w", err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, maxResponseBytes))
	if err != nil {
		return Answer{}, TokenUsage{}, fmt.Errorf("judge: read response: %w", err)
	}
	var out struct {
		Choices []struct {
			Message Message `json:"message"`
		} `json:"choices"`
		Usage TokenUsage `json:"usage"`
	}
	if res.StatusCode/100 != 2 {
		// Even a refused call may have used tokens.
		_ = json.Unmarshal(data, &out)
		return Answer{}, out.Usage.normal(), fmt.Errorf("judge: endpoint answered HTTP %d", res.StatusCode)
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return Answer{}, TokenUsage{}, fmt.Errorf("%w: response is not a chat completion", ErrBadAnswer)
	}
	u := out.Usage.normal()
	if len(out.Choices) == 0 {
		return Answer{}, u, fmt.Errorf("%w: no choices", ErrBadAnswer)
	}
	a, err := ParseAnswer(out.Choices[0].Message.Content)
	return a, u, err
}

func (u TokenUsage) normal() TokenUsage {
	if u.PromptTokens < 0 {
		u.PromptTokens = 0
	}
	if u.CompletionTokens < 0 {
		u.CompletionTokens = 0
	}
	if u.TotalTokens < u.PromptTokens+u.CompletionTokens {
		u.TotalTokens = u.PromptTokens + u.CompletionTokens
	}
	return u
}

// Bounds on what an answer may carry into a verdict.
const (
	maxEvidence      = 10
	maxEvidenceBytes = 500
	maxSummaryBytes  = 1000
)

// ParseAnswer reads the model's JSON answer (a code fence around it is
// tolerated) and bounds it: confidence in [0, 1], at most 10 pieces of
// evidence of 500 bytes.
func ParseAnswer(content string) (Answer, error) {
	c := strings.TrimSpace(content)
	if i := strings.IndexByte(c, '{'); i >= 0 {
		if j := strings.LastIndexByte(c, '}'); j > i {
			c = c[i : j+1]
		}
	}
	var a Answer
	if err := json.Unmarshal([]byte(c), &a); err != nil {
		return Answer{}, fmt.Errorf("%w: content is not the requested JSON", ErrBadAnswer)
	}
	if a.Confidence < 0 || a.Confidence > 1 || a.Confidence != a.Confidence {
		return Answer{}, fmt.Errorf("%w: confidence %v is outside [0, 1]", ErrBadAnswer, a.Confidence)
	}
	switch a.Assessment {
	case "true_positive", "false_positive", "uncertain":
	default:
		a.Assessment = "uncertain"
	}
	if len(a.Evidence) > maxEvidence {
		a.Evidence = a.Evidence[:maxEvidence]
	}
	ev := a.Evidence[:0]
	for _, e := range a.Evidence {
		if e = strings.TrimSpace(e); e != "" {
			ev = append(ev, truncate(e, maxEvidenceBytes))
		}
	}
	a.Evidence = ev
	a.Summary = truncate(strings.TrimSpace(a.Summary), maxSummaryBytes)
	return a, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 { // do not split a UTF-8 sequence
		n--
	}
	return s[:n] + "…"
}

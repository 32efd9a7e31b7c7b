package judge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Usage is a tenant's judge consumption on one UTC day (payload of
// streams.JudgeUsed). Each message carries the running totals, written
// compare-and-set on the day's subject, so the last message is the day's
// usage however many policy replicas call the judge.
type Usage struct {
	Tenant           string    `json:"tenant"`
	Day              string    `json:"day"`
	PromptTokens     int64     `json:"promptTokens"`
	CompletionTokens int64     `json:"completionTokens"`
	TotalTokens      int64     `json:"totalTokens"`
	Calls            int64     `json:"calls"`
	Failures         int64     `json:"failures"`
	UpdatedAt        time.Time `json:"updatedAt"`
}

// Day is the UTC day of t, as usage is keyed.
func Day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Ledger reads and adds to the daily usage on POLICY.
type Ledger struct{ js jetstream.JetStream }

// NewLedger returns a ledger over js; POLICY must exist.
func NewLedger(js jetstream.JetStream) *Ledger { return &Ledger{js: js} }

// Get returns the tenant's usage on day and the subject's sequence (0
// when nothing was used).
func (l *Ledger) Get(ctx context.Context, tenant, day string) (Usage, uint64, error) {
	st, err := l.js.Stream(ctx, streams.Policy)
	if err != nil {
		return Usage{}, 0, fmt.Errorf("judge usage: %w", err)
	}
	m, err := st.GetLastMsgForSubject(ctx, streams.JudgeUsageSubject(tenant, day))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Usage{Tenant: tenant, Day: day}, 0, nil
	}
	if err != nil {
		return Usage{}, 0, fmt.Errorf("judge usage: %w", err)
	}
	var u Usage
	if err := json.Unmarshal(m.Data, &u); err != nil {
		return Usage{}, 0, fmt.Errorf("judge usage: decode: %w", err)
	}
	return u, m.Sequence, nil
}

// Add records one call's usage (failed calls count their tokens too)
// and returns the new totals. Concurrent adders retry on conflict.
func (l *Ledger) Add(ctx context.Context, tenant string, now time.Time, tok TokenUsage, failed bool) (Usage, error) {
	day := Day(now)
	for attempt := 0; ; attempt++ {
		u, seq, err := l.Get(ctx, tenant, day)
		if err != nil {
			return Usage{}, err
		}
		u.PromptTokens += tok.PromptTokens
		u.CompletionTokens += tok.CompletionTokens
		u.TotalTokens += tok.TotalTokens
		u.Calls++
		if failed {
			u.Failures++
		}
		u.UpdatedAt = now.UTC()
		data, err := json.Marshal(u)
		if err != nil {
			return Usage{}, err
		}
		msg := nats.NewMsg(streams.JudgeUsageSubject(tenant, day))
		msg.Data = data
		_, err = l.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(seq))
		if err == nil {
			return u, nil
		}
		if !natsx.IsWrongLastSequence(err) || attempt >= 20 {
			return Usage{}, fmt.Errorf("judge usage: record: %w", err)
		}
	}
}

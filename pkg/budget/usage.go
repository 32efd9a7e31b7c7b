// Package budget counts what budgets measure. Counters live on the
// BUDGETS JetStream counter stream (see pkg/streams): every policy
// replica adds to and reads the same counters, they survive restarts,
// and an increment repeated with the same message id (a redelivered
// event) is counted once. The package also reads GenAI token counts
// from event payloads and prices them with a per-model table.
package budget

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/streams"
)

// Counters adds to and reads budget counters on BUDGETS.
type Counters struct {
	js jetstream.JetStream

	mu sync.Mutex
	st jetstream.Stream // cached: looking a stream up is a round trip
}

// NewCounters reads and writes the BUDGETS stream through js.
func NewCounters(js jetstream.JetStream) *Counters { return &Counters{js: js} }

func (c *Counters) stream(ctx context.Context) (jetstream.Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.st != nil {
		return c.st, nil
	}
	st, err := c.js.Stream(ctx, streams.Budgets)
	if err != nil {
		return nil, fmt.Errorf("budget counters: %w", err)
	}
	c.st = st
	return st, nil
}

// Add adds units to the counter on subject and returns its new total.
// msgID makes the increment idempotent within the stream's duplicate
// window: a repeat is not counted, reports dup and returns the current
// total. scope (the agent or session id) is kept in a header so that a
// listing can name whose counter it is.
func (c *Counters) Add(ctx context.Context, subject string, units int64, msgID, scope string) (total int64, dup bool, err error) {
	m := nats.NewMsg(subject)
	m.Header.Set("Nats-Incr", strconv.FormatInt(units, 10))
	if scope != "" {
		m.Header.Set(streams.HeaderBudgetScope, scope)
	}
	ack, err := c.js.PublishMsg(ctx, m, jetstream.WithMsgID(msgID))
	if err != nil {
		return 0, false, fmt.Errorf("count %s: %w", subject, err)
	}
	if ack.Duplicate {
		// A duplicate's ack carries no total (it was counted before).
		total, err := c.Get(ctx, subject)
		return total, true, err
	}
	total, err = parseTotal(ack.Value)
	return total, false, err
}

// Get returns the counter's total; a counter never added to is 0.
func (c *Counters) Get(ctx context.Context, subject string) (int64, error) {
	st, err := c.stream(ctx)
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", subject, err)
	}
	return decodeTotal(m.Data)
}

// Scoped is one scope's counter in a window.
type Scoped struct {
	// Scope is the agent or session id ("" for a tenant budget).
	Scope string
	Units int64
}

// List returns the counters under filter (one budget's window), largest
// first, at most max of them, and how many there are. It reads the last
// message of every subject in one pass (an ordered consumer delivering
// the last message per subject), so a session budget with many sessions
// costs one stream, not one request per session.
func (c *Counters) List(ctx context.Context, filter string, max int) ([]Scoped, int, error) {
	oc, err := c.js.OrderedConsumer(ctx, streams.Budgets, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverLastPerSubjectPolicy,
		InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", filter, err)
	}
	var out []Scoped
	if oc.CachedInfo().NumPending > 0 {
		it, err := oc.Messages(jetstream.PullMaxMessages(500))
		if err != nil {
			return nil, 0, fmt.Errorf("list %s: %w", filter, err)
		}
		defer it.Stop()
		for {
			m, err := it.Next(jetstream.NextContext(ctx))
			if err != nil {
				return nil, 0, fmt.Errorf("list %s: %w", filter, err)
			}
			n, err := decodeTotal(m.Data())
			if err != nil {
				return nil, 0, err
			}
			out = append(out, Scoped{Scope: m.Headers().Get(streams.HeaderBudgetScope), Units: n})
			meta, err := m.Metadata()
			if err != nil {
				return nil, 0, fmt.Errorf("list %s: %w", filter, err)
			}
			if meta.NumPending == 0 {
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b Scoped) int {
		if a.Units != b.Units {
			return cmp.Compare(b.Units, a.Units)
		}
		return strings.Compare(a.Scope, b.Scope)
	})
	total := len(out)
	if len(out) > max {
		out = out[:max]
	}
	return out, total, nil
}

// decodeTotal reads a counter message's body: {"val":"<integer>"}.
func decodeTotal(data []byte) (int64, error) {
	var v struct {
		Val string `json:"val"`
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return 0, fmt.Errorf("budget counter: %w", err)
	}
	return parseTotal(v.Val)
}

func parseTotal(s string) (int64, error) {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("budget counter total %q: %w", s, err)
	}
	return n, nil
}

// Tokens is what an event payload reports of GenAI usage.
type Tokens struct {
	Input, Output int64
	Model         string
}

// Total is input plus output tokens.
func (t Tokens) Total() int64 { return t.Input + t.Output }

// TokensFromPayload reads GenAI token counts from an event payload. It
// accepts the OpenTelemetry GenAI semantic convention attribute names,
// flat (`"gen_ai.usage.input_tokens": 12`), nested (`"gen_ai": {"usage":
// {...}}`) or under "attributes"; a "usage" object with input_tokens /
// output_tokens or prompt_tokens / completion_tokens (the providers'
// response shapes); and inputTokens / outputTokens. The model is
// gen_ai.response.model, gen_ai.request.model or model. Negative or
// non-numeric counts are ignored.
func TokensFromPayload(p map[string]any) Tokens {
	var t Tokens
	if p == nil {
		return t
	}
	scopes := []map[string]any{p}
	if a, ok := p["attributes"].(map[string]any); ok {
		scopes = append(scopes, a)
	}
	for _, m := range scopes {
		t.Input = firstCount(t.Input, m, "gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "usage.input_tokens", "usage.prompt_tokens", "inputTokens")
		t.Output = firstCount(t.Output, m, "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens", "usage.output_tokens", "usage.completion_tokens", "outputTokens")
		if t.Model == "" {
			for _, k := range []string{"gen_ai.response.model", "gen_ai.request.model", "model"} {
				if s, ok := lookup(m, k).(string); ok && s != "" {
					t.Model = s
					break
				}
			}
		}
	}
	return t
}

func firstCount(have int64, m map[string]any, keys ...string) int64 {
	if have > 0 {
		return have
	}
	for _, k := range keys {
		switch v := lookup(m, k).(type) {
		case float64:
			if v > 0 && v < math.MaxInt64/2 {
				return int64(v)
			}
		case string:
			if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
				return n
			}
		}
	}
	return 0
}

// lookup finds a dotted key as a flat key or as nested objects.
func lookup(m map[string]any, key string) any {
	if v, ok := m[key]; ok {
		return v
	}
	head, rest, ok := strings.Cut(key, ".")
	if !ok {
		return nil
	}
	inner, _ := m[head].(map[string]any)
	if inner == nil {
		return nil
	}
	return lookup(inner, rest)
}

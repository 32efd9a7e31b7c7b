package judge

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Judgement amends a verdict with the judge's answer (payload of
// streams.VerdictJudged). The verdict's outcome is never changed; the
// judgement adds a confidence and evidence to it.
type Judgement struct {
	Tenant     string `json:"tenant"`
	DecisionID string `json:"decisionId"`
	// Source is the verdict's source: decision, check, verdict, event or
	// baseline (an anomaly).
	Source     string   `json:"source"`
	Confidence float64  `json:"confidence"`
	Assessment string   `json:"assessment"`
	Evidence   []string `json:"evidence"`
	Summary    string   `json:"summary,omitempty"`
	// Confirmed is confidence ≥ the tenant's threshold at judging time.
	Confirmed bool      `json:"confirmed"`
	Threshold float64   `json:"threshold"`
	Model     string    `json:"model"`
	Tokens    int64     `json:"tokens"`
	At        time.Time `json:"at"`
}

// View is the in-memory index of judgements that the API joins onto the
// verdicts it returns. Judgements are few (the daily budget bounds them)
// and POLICY's retention bounds their history.
type View struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu sync.RWMutex
	by map[string]map[string]Judgement // tenant → decision id → judgement
}

// NewView returns an empty view; Run fills it.
func NewView(js jetstream.JetStream, log *slog.Logger) *View {
	return &View{js: js, log: log, by: map[string]map[string]Judgement{}}
}

// Run follows the judgements on POLICY until ctx ends, starting once the
// stream exists. It returns at once.
func (v *View) Run(ctx context.Context) {
	go func() {
		for ctx.Err() == nil {
			err := v.follow(ctx)
			if err == nil || ctx.Err() != nil {
				return
			}
			v.log.Warn("judge view: following POLICY failed; retrying", slog.String("error", err.Error()))
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

func (v *View) follow(ctx context.Context) error {
	if err := natsx.WaitForStream(ctx, v.js, streams.Policy, v.log); err != nil {
		return err
	}
	_, err := natsx.Follow(ctx, v.js, streams.Policy, []string{"policy.v1." + streams.VerdictJudged + ".>"}, func(m jetstream.Msg) {
		var j Judgement
		if err := json.Unmarshal(m.Data(), &j); err != nil {
			v.log.Error("judge view: bad judgement", slog.String("subject", m.Subject()))
			return
		}
		v.mu.Lock()
		t := v.by[j.Tenant]
		if t == nil {
			t = map[string]Judgement{}
			v.by[j.Tenant] = t
		}
		t[j.DecisionID] = j
		v.mu.Unlock()
	})
	if err != nil {
		return fmt.Errorf("judge view: %w", err)
	}
	<-ctx.Done()
	return nil
}

// Get returns the judgement of a tenant's decision.
func (v *View) Get(tenant, decisionID string) (Judgement, bool) {
	if v == nil {
		return Judgement{}, false
	}
	v.mu.RLock()
	defer v.mu.RUnlock()
	j, ok := v.by[tenant][decisionID]
	return j, ok
}

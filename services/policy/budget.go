package policy

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/vigilhq/vigil/pkg/budget"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// budgetUsage counts a decision against the tenant's budgets covering it
// and returns each one's state as the decision sees it.
//
// Counting comes before deciding, so that concurrent decisions on every
// replica see distinct totals: the counter's increment is atomic on the
// server and answers the new total, and the action that takes an
// actions or tool_calls budget past its limit is the first one refused.
// Every decision counts, whatever its outcome: a budget caps what is
// asked for, and a refused action that kept asking is still asking.
// Tokens and cost are counted from what an ingested event reports, since
// an ask carries none; an ask is over such a budget once it is used up.
//
// dedupe is the decision's own dedupe id (an event's id for event
// verdicts), so a redelivered event is not counted again.
//
// Fail closed: a budget whose counter cannot be read or added to is
// taken as exceeded (Unavailable), never as unused. For an ingested
// event that could not be counted, err is set: the event is retried
// rather than judged with its usage lost.
func (s *Service) budgetUsage(ctx context.Context, req rules.EvaluateRequest, bs []rules.Budget, dedupe string, now time.Time) ([]rules.BudgetState, error) {
	var tokens budget.Tokens
	if req.Source == rules.SourceEvent {
		tokens = budget.TokensFromPayload(req.Context)
	}
	type job struct {
		b        rules.Budget
		key      string
		applies  bool
		units    int64
		subject  string
		state    rules.BudgetState
		countErr error
	}
	jobs := make([]job, 0, len(bs))
	for _, b := range bs {
		key, ok := b.ScopeKey(req.AgentID, req.SessionID)
		if !ok {
			continue
		}
		j := job{b: b, key: key, applies: b.Counts(req.Action),
			subject: streams.BudgetUsageSubject(req.Tenant, b.ID, b.WindowStart(now), key)}
		if j.applies {
			switch b.Metric {
			case rules.MetricActions, rules.MetricToolCalls:
				j.units = 1
			case rules.MetricTokens:
				j.units = tokens.Total()
			case rules.MetricCostUSD:
				if tokens.Total() > 0 {
					j.units = s.cfg.BudgetPrices.MicroUSD(tokens)
				}
			}
		}
		jobs = append(jobs, j)
	}
	if len(jobs) == 0 {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	run := func(j *job) {
		var total int64
		var err error
		if j.units > 0 {
			total, _, err = s.counters.Add(cctx, j.subject, j.units, j.b.ID+":"+dedupe, j.key)
			j.countErr = err
		} else {
			total, err = s.counters.Get(cctx, j.subject)
		}
		limit := j.b.LimitUnits()
		j.state = rules.BudgetState{ID: j.b.ID, Name: j.b.Name, Metric: j.b.Metric, Window: j.b.Window,
			Used: j.b.Value(total), Limit: j.b.Limit, Outcome: j.b.Outcome}
		switch {
		case err != nil:
			s.budgetErrors.Inc()
			s.log.Warn("budget usage unavailable; taken as exceeded", slog.String("tenant", req.Tenant), slog.String("budget", j.b.ID), slog.String("error", err.Error()))
			j.state.Used, j.state.Unavailable, j.state.Exceeded = 0, true, j.applies
		case j.units > 0:
			j.state.Exceeded = total > limit
		default:
			j.state.Exceeded = j.applies && total >= limit
		}
	}
	if len(jobs) == 1 {
		run(&jobs[0])
	} else {
		var wg sync.WaitGroup
		for i := range jobs {
			wg.Add(1)
			go func() { defer wg.Done(); run(&jobs[i]) }()
		}
		wg.Wait()
	}
	out := make([]rules.BudgetState, len(jobs))
	for i, j := range jobs {
		if j.countErr != nil && req.Source == rules.SourceEvent {
			return nil, j.countErr
		}
		out[i] = j.state
		if j.state.Exceeded {
			s.budgetExceeded.WithLabelValues(j.b.Outcome.String()).Inc()
		}
	}
	return out, nil
}

// checkPrices validates a configured price table.
func checkPrices(p budget.Prices) error {
	if p == nil {
		return nil
	}
	return p.Validate()
}

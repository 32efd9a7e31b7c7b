package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/judge"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Durable consumers of the LLM judge.
const (
	JudgeDecisions = "policy-judge"
	JudgeAnomalies = "policy-judge-anomalies"
)

// Judge outcomes (label of vigil_judge_calls_total).
const (
	judgeOK           = "ok"
	judgeTimeout      = "timeout"
	judgeError        = "error"
	judgeBadAnswer    = "bad_answer"
	judgeBudget       = "budget_exhausted"
	judgeUnconfigured = "unconfigured"
)

// judgeRunner holds what the judge needs; built by startSettings.
type judgeRunner struct {
	box     *secretbox.Box
	hc      *http.Client
	ledger  *judge.Ledger
	calls   *prometheus.CounterVec
	tokens  prometheus.Counter
	timeout time.Duration
	workers int
	maxAge  time.Duration
}

func (s *Service) newJudge(ctx context.Context) (*judgeRunner, error) {
	box, err := judge.NewBox(s.cfg.Judge.SealSecret)
	if err != nil {
		return nil, err
	}
	j := &judgeRunner{
		box: box, ledger: judge.NewLedger(s.deps.JS),
		timeout: s.cfg.JudgeTimeout, workers: s.cfg.JudgeWorkers, maxAge: time.Hour,
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_judge_calls_total", Help: "LLM judge attempts on flagged verdicts, by outcome.",
		}, []string{"outcome"}),
		tokens: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_judge_tokens_total", Help: "Tokens the LLM judge consumed (from the responses' usage).",
		}),
	}
	if j.timeout <= 0 {
		j.timeout = 20 * time.Second
	}
	if j.workers <= 0 {
		j.workers = 4
	}
	j.hc = s.cfg.Judge.Guard().Client(j.timeout)
	for _, c := range []prometheus.Collector{j.calls, j.tokens} {
		if err := s.deps.Registerer.Register(c); err != nil {
			return nil, fmt.Errorf("judge metrics: %w", err)
		}
	}
	return j, nil
}

// flagged is a verdict the judge may look at.
type flagged struct {
	tenant, id, source, agentID, sessionID string
	at                                     time.Time
	verdict                                any
}

// runJudge sends flagged verdicts of judge-enabled agents to the tenant's
// LLM, asynchronously: it reads recorded decisions (and the risk
// service's anomalies) from the streams, so the decision path never waits
// for it, and a failure only means no amendment.
func (s *Service) runJudge(ctx context.Context) error {
	if s.judge == nil {
		return nil
	}
	sem := make(chan struct{}, s.judge.workers)
	var wg sync.WaitGroup
	handle := func(m jetstream.Msg, f *flagged) {
		if f == nil {
			_ = m.Ack()
			return
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.judgeOne(ctx, *f)
			_ = m.Ack()
		}()
	}
	cfg := func(name string, filters ...string) jetstream.ConsumerConfig {
		return jetstream.ConsumerConfig{
			Durable: name, Description: "flagged verdicts → LLM judge", FilterSubjects: filters,
			AckPolicy: jetstream.AckExplicitPolicy, AckWait: s.judge.timeout + 30*time.Second,
			MaxDeliver: 3, MaxAckPending: 4 * s.judge.workers,
		}
	}
	errc := make(chan error, 2)
	follow := func(stream string, c jetstream.ConsumerConfig, pick func([]byte) *flagged) {
		cons, err := s.consumer(ctx, stream, c)
		if err != nil {
			errc <- err
			return
		}
		cc, err := cons.Consume(func(m jetstream.Msg) { handle(m, pick(m.Data())) }, jetstream.PullMaxMessages(s.judge.workers))
		if err != nil {
			errc <- fmt.Errorf("judge: consume %s: %w", c.Durable, err)
			return
		}
		<-ctx.Done()
		cc.Drain()
		<-cc.Closed()
		errc <- nil
	}
	// Only warn decisions are judged: the server delivers no others
	// (except those recorded before the outcome was in the subject).
	go follow(streams.Policy, cfg(JudgeDecisions, streams.DecisionsWithOutcome(rules.Warn.String())...), s.pickDecision)
	go follow(streams.Risk, cfg(JudgeAnomalies, streams.AllAnomalies), s.pickAnomaly)
	err := errors.Join(<-errc, <-errc)
	wg.Wait()
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

func (s *Service) pickDecision(data []byte) *flagged {
	if !judgeCandidate(data) {
		return nil
	}
	var rec rules.DecisionRecord
	if json.Unmarshal(data, &rec) != nil || rec.Decision.Outcome != rules.Warn || !rec.Input.Agent.JudgeEnabled {
		return nil
	}
	if time.Since(rec.At) > s.judge.maxAge {
		return nil // a stale flag (history on first start) is not worth tokens
	}
	return &flagged{tenant: rec.Tenant, id: rec.ID, source: rec.Source, agentID: rec.AgentID, sessionID: rec.SessionID, at: rec.At,
		verdict: map[string]any{
			"outcome": rec.Decision.Outcome.String(), "reasonCodes": rec.Decision.ReasonCodes, "matches": rec.Decision.Matches,
			"action": rec.Input.Action, "context": rec.Input.Context, "session": rec.Input.Session, "at": rec.At,
		}}
}

// judgeCandidate reports whether the record in data may be flagged: a
// warning of an agent whose judge is on. Most warnings are not (the judge
// is opt-in per agent), and decoding only these two fields skips the rest
// of the record (input context, matches), which was most of what this
// consumer cost per decision (perf-alloc2). The tags are DecisionRecord's,
// so the same keys match the same fields with the same types: a record
// the full decode would flag passes here too, and the full decode still
// decides (TestJudgeCandidate).
func judgeCandidate(data []byte) bool {
	var r struct {
		Input struct {
			Agent struct {
				JudgeEnabled bool `json:"judgeEnabled"`
			} `json:"agent"`
		} `json:"input"`
		Decision struct {
			Outcome rules.Outcome `json:"decision"`
		} `json:"result"`
	}
	return json.Unmarshal(data, &r) == nil && r.Decision.Outcome == rules.Warn && r.Input.Agent.JudgeEnabled
}

func (s *Service) pickAnomaly(data []byte) *flagged {
	var a struct {
		ID         string         `json:"id"`
		Tenant     string         `json:"tenant"`
		AgentID    string         `json:"agentId"`
		SessionID  string         `json:"sessionId"`
		Summary    string         `json:"summary"`
		Type       string         `json:"type"`
		Severity   string         `json:"severity"`
		OccurredAt time.Time      `json:"occurredAt"`
		Evidence   map[string]any `json:"evidence"`
		Action     rules.Action   `json:"action"`
	}
	if json.Unmarshal(data, &a) != nil || a.ID == "" || time.Since(a.OccurredAt) > s.judge.maxAge {
		return nil
	}
	if ag, ok := s.deps.Catalog.Agent(a.Tenant, a.AgentID); !ok || !ag.Settings.JudgeEnabled {
		return nil
	}
	return &flagged{tenant: a.Tenant, id: a.ID, source: "baseline", agentID: a.AgentID, sessionID: a.SessionID, at: a.OccurredAt,
		verdict: map[string]any{"anomaly": a.Type, "severity": a.Severity, "summary": a.Summary, "evidence": a.Evidence, "action": a.Action, "at": a.OccurredAt}}
}

// judgeOne asks the tenant's LLM about one flagged verdict and records
// the amendment. Every failure is logged, counted and otherwise ignored:
// the verdict stands as the rules made it.
func (s *Service) judgeOne(ctx context.Context, f flagged) {
	j := s.judge
	log := s.log.With(slog.String("tenant", f.tenant), slog.String("decisionId", f.id))
	raw, ok := s.settings.LLMConfig(f.tenant)
	var cfg judge.ConfigRecord
	if !ok || json.Unmarshal(raw, &cfg) != nil || cfg.BaseURL == "" {
		j.calls.WithLabelValues(judgeUnconfigured).Inc()
		return
	}
	now := time.Now()
	used, _, err := j.ledger.Get(ctx, f.tenant, judge.Day(now))
	if err != nil {
		j.calls.WithLabelValues(judgeError).Inc()
		log.Warn("judge: usage unavailable; skipped", slog.String("error", err.Error()))
		return
	}
	if used.TotalTokens >= cfg.DailyTokenBudget {
		j.calls.WithLabelValues(judgeBudget).Inc()
		return
	}
	key, err := cfg.OpenKey(j.box)
	if err != nil {
		j.calls.WithLabelValues(judgeError).Inc()
		log.Error("judge: stored api key does not open (was the sealing secret changed?)")
		return
	}
	c := s.judgeCase(ctx, f)
	cctx, cancel := context.WithTimeout(ctx, j.timeout)
	ans, tok, err := judge.Complete(cctx, j.hc, cfg.BaseURL, cfg.Model, key, judge.Prompt(c))
	// The context's deadline or the client's own (header) timeout.
	var ne net.Error
	timedOut := cctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()
	cancel()
	j.tokens.Add(float64(tok.TotalTokens))
	if _, uerr := j.ledger.Add(ctx, f.tenant, now, tok, err != nil); uerr != nil {
		log.Warn("judge: usage not recorded", slog.String("error", uerr.Error()))
	}
	switch {
	case err != nil && timedOut:
		j.calls.WithLabelValues(judgeTimeout).Inc()
		log.Warn("judge: timed out; verdict unchanged", slog.Duration("timeout", j.timeout))
		return
	case errors.Is(err, judge.ErrBadAnswer):
		j.calls.WithLabelValues(judgeBadAnswer).Inc()
		log.Warn("judge: unusable answer; verdict unchanged", slog.String("error", err.Error()))
		return
	case err != nil:
		j.calls.WithLabelValues(judgeError).Inc()
		log.Warn("judge: call failed; verdict unchanged", slog.String("error", err.Error()))
		return
	}
	jg := judge.Judgement{
		Tenant: f.tenant, DecisionID: f.id, Source: f.source, Confidence: ans.Confidence, Assessment: ans.Assessment,
		Evidence: ans.Evidence, Summary: ans.Summary, Confirmed: ans.Confidence >= cfg.ConfidenceThreshold,
		Threshold: cfg.ConfidenceThreshold, Model: cfg.Model, Tokens: tok.TotalTokens, At: time.Now().UTC(),
	}
	if jg.Evidence == nil {
		jg.Evidence = []string{}
	}
	data, _ := json.Marshal(jg)
	msg := nats.NewMsg(streams.JudgementSubject(f.tenant, f.id))
	msg.Data = data
	pctx, pcancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer pcancel()
	if _, err := s.deps.JS.PublishMsg(pctx, msg, jetstream.WithMsgID("judge:"+f.tenant+":"+f.id)); err != nil {
		j.calls.WithLabelValues(judgeError).Inc()
		log.Warn("judge: amendment not recorded", slog.String("error", err.Error()))
		return
	}
	j.calls.WithLabelValues(judgeOK).Inc()
}

// judgeCase gathers the session's recent steps and the agent's baseline
// from the decisions table, and its declaration from the catalog.
func (s *Service) judgeCase(ctx context.Context, f flagged) judge.Case {
	c := judge.Case{Verdict: f.verdict, Session: []judge.Step{}}
	if a, ok := s.deps.Catalog.Agent(f.tenant, f.agentID); ok && a.Declaration != nil {
		c.Declaration = a.Declaration
	}
	if s.deps.CH == nil {
		return c
	}
	qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	since := f.at.Add(-7 * 24 * time.Hour).Truncate(time.Second)
	if f.sessionID != "" {
		rows, err := s.deps.CH.Query(qctx, "SELECT record FROM decisions WHERE tenant_id = ? AND session_id = ? AND at_time >= ? AND decision_id != ? ORDER BY at_ms DESC LIMIT 1 BY decision_id LIMIT 20",
			f.tenant, f.sessionID, since, f.id)
		if err == nil {
			for rows.Next() {
				var raw string
				var r rules.DecisionRecord
				if rows.Scan(&raw) != nil || json.Unmarshal([]byte(raw), &r) != nil {
					continue
				}
				c.Session = append([]judge.Step{{At: r.At.Format(time.RFC3339Nano), Kind: r.Input.Action.Kind, Tool: r.Input.Action.Tool,
					Target: r.Input.Action.Target, Outcome: r.Decision.Outcome.String(), Reasons: r.Decision.ReasonCodes, Argument: r.Input.Action.Arguments}}, c.Session...)
			}
			rows.Close()
		}
	}
	rows, err := s.deps.CH.Query(qctx, "SELECT tool, toUInt64(count()) AS n FROM decisions WHERE tenant_id = ? AND agent_id = ? AND at_time >= ? GROUP BY tool ORDER BY n DESC LIMIT 20",
		f.tenant, f.agentID, since)
	if err == nil {
		type seen struct {
			Tool  string `json:"tool"`
			Count uint64 `json:"count"`
		}
		var base []seen
		for rows.Next() {
			var x seen
			if rows.Scan(&x.Tool, &x.Count) == nil {
				base = append(base, x)
			}
		}
		rows.Close()
		c.Baseline = map[string]any{"window": "7d", "toolsByDecisions": base}
	}
	return c
}

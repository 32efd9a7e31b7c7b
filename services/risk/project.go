package risk

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/anomaly"
	"github.com/vigilhq/vigil/pkg/chx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

type sinkSpec struct {
	stream, filter, durable, desc string
	sink                          *chx.Sink
}

func (s *Service) newSinks() ([]sinkSpec, error) {
	specs := []struct {
		stream, filter, durable, table, desc string
		cols                                 []string
		project                              func(jetstream.Msg) (chx.Rows, error)
	}{
		{streams.Risk, streams.AllAnomalies, AnomaliesProjector, "risk_anomalies", "RISK anomalies → ClickHouse risk_anomalies", anomalyColumns, projectAnomaly},
		{streams.Risk, streams.AllAnomalies, VerdictsProjector, "decisions", "RISK anomalies → ClickHouse decisions (verdicts with source baseline)", verdictColumns, projectVerdict},
		{streams.Risk, streams.AllSessionScores, ScoresProjector, "risk_session_scores", "RISK session scores → ClickHouse risk_session_scores", scoreColumns, projectScore},
		{streams.Control, streams.AllTriage, ReviewsProjector, "risk_reviews", "CONTROL triage → ClickHouse risk_reviews (review metrics)", reviewColumns, projectReview},
	}
	out := make([]sinkSpec, 0, len(specs))
	for _, sp := range specs {
		sk, err := chx.NewSink(chx.SinkConfig{Name: sp.durable, Table: sp.table, Columns: sp.cols, Project: sp.project,
			MaxRows: 2000, Linger: 100 * time.Millisecond}, s.deps.CH, s.log, s.deps.Registerer)
		if err != nil {
			return nil, err
		}
		out = append(out, sinkSpec{stream: sp.stream, filter: sp.filter, durable: sp.durable, desc: sp.desc, sink: sk})
	}
	return out, nil
}

func (s *Service) runSink(ctx context.Context, sp sinkSpec) error {
	if err := s.waitStream(ctx, sp.stream); err != nil {
		return err
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, sp.stream, chx.ConsumerConfig(sp.durable, sp.desc, sp.filter, 10000))
	if err != nil {
		return fmt.Errorf("consumer %s: %w", sp.durable, err)
	}
	return sp.sink.Run(ctx, cons)
}

var anomalyColumns = []string{"tenant_id", "anomaly_id", "agent_id", "session_id", "type", "value", "severity", "signature",
	"decision_id", "at_time", "at_ms", "record"}

func projectAnomaly(m jetstream.Msg) (chx.Rows, error) {
	var a Anomaly
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.ID == "" {
		return nil, fmt.Errorf("%w: decode anomaly: %v", chx.ErrPoison, err)
	}
	return chx.Rows{{a.Tenant, a.ID, a.AgentID, a.SessionID, a.Type, a.Value, a.Severity, a.Signature, a.DecisionID,
		a.OccurredAt.Truncate(time.Second), a.OccurredAt.UnixMilli(), string(m.Data())}}, nil
}

// verdictColumns are the policy service's decisions table columns: an
// anomaly is listed among verdicts with source "baseline".
var verdictColumns = []string{
	"tenant_id", "decision_id", "agent_id", "session_id", "source", "event_id", "outcome", "reason_codes",
	"pack_hash", "action_kind", "tool", "target", "publisher", "signature", "at_time", "at_ms", "record",
}

// projectVerdict stores the record the ledger seals for this anomaly
// (anomaly.VerdictRecord), so the row is one `vigil ledger audit` can
// recompute and GET /v1/lineage can anchor.
func projectVerdict(m jetstream.Msg) (chx.Rows, error) {
	r, record, err := anomaly.VerdictRecord(m.Data())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", chx.ErrPoison, err)
	}
	a := r.Input.Action
	return chx.Rows{{r.Tenant, r.ID, r.AgentID, r.SessionID, r.Source, r.EventID, r.Decision.Outcome.String(), r.Decision.ReasonCodes,
		"", a.Kind, a.Tool, a.Target, a.Publisher, r.Signature, r.At.Truncate(time.Second), r.At.UnixMilli(), string(record)}}, nil
}

var scoreColumns = []string{"tenant_id", "session_id", "agent_id", "score", "severity", "version", "score_id", "at_ms", "record"}

func projectScore(m jetstream.Msg) (chx.Rows, error) {
	var sc SessionScore
	if err := json.Unmarshal(m.Data(), &sc); err != nil || sc.ID == "" {
		return nil, fmt.Errorf("%w: decode session score: %v", chx.ErrPoison, err)
	}
	return chx.Rows{{sc.Tenant, sc.SessionID, sc.AgentID, uint8(sc.Score), sc.Severity, sc.PolicySeq, sc.ID, sc.OccurredAt.UnixMilli(), string(m.Data())}}, nil
}

var reviewColumns = []string{"tenant_id", "review_id", "decision_id", "status", "at_time", "at_ms"}

func projectReview(m jetstream.Msg) (chx.Rows, error) {
	var t rules.Triage
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.DecisionID == "" {
		return nil, fmt.Errorf("%w: decode triage: %v", chx.ErrPoison, err)
	}
	id := fmt.Sprintf("%s/%s/%d", t.DecisionID, t.Status, t.At.UnixMilli())
	return chx.Rows{{t.Tenant, id, t.DecisionID, t.Status, t.At.Truncate(time.Second), t.At.UnixMilli()}}, nil
}

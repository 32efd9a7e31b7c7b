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
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
)

type sinkSpec struct {
	stream, filter, durable, desc string
	sink                          *chx.Sink
}

func (s *Service) newSinks() ([]sinkSpec, error) {
	specs := []struct {
		stream, filter, durable, desc string
		table                         readmodel.Table
		project                       func(jetstream.Msg) (chx.Rows, error)
	}{
		{streams.Risk, streams.AllAnomalies, AnomaliesProjector, "RISK anomalies → ClickHouse risk_anomalies", readmodel.RiskAnomalies, projectAnomaly},
		{streams.Risk, streams.AllAnomalies, VerdictsProjector, "RISK anomalies → ClickHouse decisions (verdicts with source baseline)", readmodel.Decisions, projectVerdict},
		{streams.Risk, streams.AllSessionScores, ScoresProjector, "RISK session scores → ClickHouse risk_session_scores", readmodel.RiskSessionScores, projectScore},
		{streams.Control, streams.AllTriage, ReviewsProjector, "CONTROL triage → ClickHouse risk_reviews (review metrics)", readmodel.RiskReviews, projectReview},
	}
	out := make([]sinkSpec, 0, len(specs))
	for _, sp := range specs {
		sk, err := chx.NewSink(chx.SinkConfig{Name: sp.durable, Table: sp.table, Project: sp.project,
			MaxRows: 2000, Linger: 100 * time.Millisecond, MinInterval: chx.MinInsertInterval, Gate: s.deps.Gate}, s.deps.CH, s.log, s.deps.Registerer)
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

func projectAnomaly(m jetstream.Msg) (chx.Rows, error) {
	var a Anomaly
	if err := json.Unmarshal(m.Data(), &a); err != nil || a.ID == "" {
		return nil, fmt.Errorf("%w: decode anomaly: %v", chx.ErrPoison, err)
	}
	return chx.Rows{{a.Tenant, a.ID, a.AgentID, a.SessionID, a.Type, a.Value, a.Severity, a.Signature, a.DecisionID,
		a.OccurredAt.Truncate(time.Second), a.OccurredAt.UnixMilli(), string(m.Data())}}, nil
}

// projectVerdict stores the record the ledger seals for this anomaly
// (anomaly.VerdictRecord), so the row is one `vigil ledger audit` can
// recompute and GET /v1/lineage can anchor.
func projectVerdict(m jetstream.Msg) (chx.Rows, error) {
	r, record, err := anomaly.VerdictRecord(m.Data())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", chx.ErrPoison, err)
	}
	return chx.Rows{rules.DecisionRow(r, record)}, nil
}

func projectScore(m jetstream.Msg) (chx.Rows, error) {
	var sc SessionScore
	if err := json.Unmarshal(m.Data(), &sc); err != nil || sc.ID == "" {
		return nil, fmt.Errorf("%w: decode session score: %v", chx.ErrPoison, err)
	}
	return chx.Rows{{sc.Tenant, sc.SessionID, sc.AgentID, uint8(sc.Score), sc.Severity, sc.PolicySeq, sc.ID, sc.OccurredAt.UnixMilli(), string(m.Data())}}, nil
}

func projectReview(m jetstream.Msg) (chx.Rows, error) {
	var t rules.Triage
	if err := json.Unmarshal(m.Data(), &t); err != nil || t.DecisionID == "" {
		return nil, fmt.Errorf("%w: decode triage: %v", chx.ErrPoison, err)
	}
	id := fmt.Sprintf("%s/%s/%d", t.DecisionID, t.Status, t.At.UnixMilli())
	return chx.Rows{{t.Tenant, id, t.DecisionID, t.Status, t.At.Truncate(time.Second), t.At.UnixMilli()}}, nil
}

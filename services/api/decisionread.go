package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// maxStreamScan bounds how many recorded decisions (headers only) one read
// looks through on POLICY when the ClickHouse projection is behind. In
// normal operation the projection lags by well under a second, so a scan
// sees a handful; past the bound (a long ClickHouse outage) the read
// answers 503 rather than walking the whole backlog.
const maxStreamScan = 50000

// decisionIDRe matches the ids the policy service gives decisions; only
// those can be on POLICY, so anything else skips the stream.
var decisionIDRe = regexp.MustCompile(`^dec_[0-9a-f]{20}$`)

// decisionByID returns a decision of tenant, read-your-writes: an id any
// decision door returned can be read at once, from any api instance.
//
// The ClickHouse projection answers first. When it does not have the id,
// the decision may be recorded on POLICY but not projected yet. The
// projector acks a message only after ClickHouse stored it, so its ack
// floor splits the stream: at or below it every decision is in the table;
// above it the stream is read (headers only, the tenant's decisions only)
// for the id, and the record is then fetched by sequence. The table is
// read again after the floor is known, because the decision may have been
// projected between the first read and the floor.
func (s *Service) decisionByID(ctx context.Context, tenant, id string) (rules.DecisionRecord, error) {
	rec, err := s.projectedDecision(ctx, tenant, id)
	if !apperr.Is(err, apperr.KindNotFound) || !decisionIDRe.MatchString(id) {
		if err == nil {
			s.decisionReads.WithLabelValues("projection").Inc()
		}
		return rec, err
	}
	floor, err := s.projectedFloor(ctx)
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	rec, err = s.projectedDecision(ctx, tenant, id)
	if !apperr.Is(err, apperr.KindNotFound) {
		if err == nil {
			s.decisionReads.WithLabelValues("projection").Inc()
		}
		return rec, err
	}
	rec, err = s.streamDecision(ctx, tenant, id, floor)
	if err == nil {
		s.decisionReads.WithLabelValues("stream").Inc()
	}
	return rec, err
}

// projectedDecision reads a decision from the ClickHouse projection.
func (s *Service) projectedDecision(ctx context.Context, tenant, id string) (rules.DecisionRecord, error) {
	rows, err := s.deps.CH.Query(ctx, "SELECT record FROM decisions WHERE tenant_id = ? AND decision_id = ? LIMIT 1", tenant, id)
	if err != nil {
		return rules.DecisionRecord{}, chx.ReadError("decision store", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return rules.DecisionRecord{}, chx.ReadError("decision store", err)
		}
		return rules.DecisionRecord{}, apperr.NotFound("decision %q not found", id)
	}
	var raw string
	if err := rows.Scan(&raw); err != nil {
		return rules.DecisionRecord{}, fmt.Errorf("scan decision: %w", err)
	}
	var rec rules.DecisionRecord
	if err := json.Unmarshal([]byte(raw), &rec); err != nil {
		return rules.DecisionRecord{}, fmt.Errorf("decode decision: %w", err)
	}
	return rec, nil
}

// projectedFloor is the POLICY sequence at or below which every decision
// is in ClickHouse: the decisions projector's ack floor (0 when the
// projector does not exist yet).
func (s *Service) projectedFloor(ctx context.Context) (uint64, error) {
	cons, err := s.deps.JS.Consumer(ctx, streams.Policy, streams.DecisionsProjector)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound), errors.Is(err, jetstream.ErrStreamNotFound):
		return 0, nil
	case err != nil:
		return 0, apperr.Unavailable("decision stream unavailable; retry", time.Second, fmt.Errorf("projector position: %w", err))
	}
	return cons.CachedInfo().AckFloor.Stream, nil
}

// streamDecision looks for a decision on POLICY above the projector's
// floor.
func (s *Service) streamDecision(ctx context.Context, tenant, id string, floor uint64) (rules.DecisionRecord, error) {
	notFound := apperr.NotFound("decision %q not found", id)
	unavailable := func(err error) error {
		return apperr.Unavailable("decision stream unavailable; retry", time.Second, err)
	}
	str, err := s.policyStream(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return rules.DecisionRecord{}, notFound
	}
	if err != nil {
		return rules.DecisionRecord{}, unavailable(err)
	}
	filter := streams.TenantDecisions(tenant)
	// The tenant's newest decision bounds the scan, and is the one a read
	// right after a write usually wants.
	last, err := str.GetLastMsgForSubject(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return rules.DecisionRecord{}, notFound
	}
	if err != nil {
		return rules.DecisionRecord{}, unavailable(err)
	}
	if last.Sequence <= floor {
		return rules.DecisionRecord{}, notFound
	}
	if last.Header.Get(streams.HeaderDecisionID) == id || last.Header.Get(nats.MsgIdHdr) == id {
		return decodeStreamDecision(last.Data, tenant, id)
	}
	oc, err := s.deps.JS.OrderedConsumer(ctx, streams.Policy, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq: floor + 1, HeadersOnly: true, InactiveThreshold: 10 * time.Second,
	})
	if err != nil {
		return rules.DecisionRecord{}, unavailable(err)
	}
	it, err := oc.Messages(jetstream.PullMaxMessages(500))
	if err != nil {
		return rules.DecisionRecord{}, unavailable(err)
	}
	defer it.Stop()
	for scanned := 0; ; scanned++ {
		if scanned == maxStreamScan {
			return rules.DecisionRecord{}, apperr.Unavailable("the decision store is catching up; retry", 5*time.Second,
				fmt.Errorf("decision %s not within %d recorded decisions past the projection", id, maxStreamScan))
		}
		m, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return rules.DecisionRecord{}, unavailable(err)
		}
		meta, err := m.Metadata()
		if err != nil {
			return rules.DecisionRecord{}, unavailable(err)
		}
		// Records written before the header existed carry the id as their
		// message id (decision doors only).
		if h := m.Headers(); h.Get(streams.HeaderDecisionID) == id || h.Get(nats.MsgIdHdr) == id {
			raw, err := str.GetMsg(ctx, meta.Sequence.Stream)
			if err != nil {
				return rules.DecisionRecord{}, unavailable(err)
			}
			return decodeStreamDecision(raw.Data, tenant, id)
		}
		if meta.Sequence.Stream >= last.Sequence {
			return rules.DecisionRecord{}, notFound
		}
	}
}

// decodeStreamDecision decodes a record read from POLICY and checks it is
// the one asked for, of the caller's tenant.
func decodeStreamDecision(data []byte, tenant, id string) (rules.DecisionRecord, error) {
	var rec rules.DecisionRecord
	if err := json.Unmarshal(data, &rec); err != nil {
		return rules.DecisionRecord{}, fmt.Errorf("decode decision: %w", err)
	}
	if rec.Tenant != tenant || rec.ID != id {
		return rules.DecisionRecord{}, apperr.NotFound("decision %q not found", id)
	}
	return rec, nil
}

// policyStream returns a handle on POLICY, looked up once: the handle
// only names the stream, so it stays valid.
func (s *Service) policyStream(ctx context.Context) (jetstream.Stream, error) {
	s.policyMu.Lock()
	defer s.policyMu.Unlock()
	if s.policy != nil {
		return s.policy, nil
	}
	str, err := s.deps.JS.Stream(ctx, streams.Policy)
	if err != nil {
		return nil, err
	}
	s.policy = str
	return str, nil
}

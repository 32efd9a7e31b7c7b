package policy

import (
	"bytes"
	"container/list"
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/apperr"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// Decide evaluates a request against the tenant's pack, org policy and
// the agent's declaration and settings, records the decision on POLICY,
// and returns it. Nothing is returned that was not recorded.
//
// Traced (a span in ctx), it is a "policy.decide" span with a child per
// step that may take time (catalog wait, budgets, evaluate, record), and
// the decision an event on it (DecisionEvent).
func (s *Service) Decide(ctx context.Context, req rules.EvaluateRequest) (rec rules.DecisionRecord, err error) {
	ctx, span := telemetry.Child(ctx, "policy.decide", attribute.String("vigil.decision.source", req.Source))
	defer func() {
		if err != nil {
			span.SetStatus(codes.Error, err.Error())
		} else if span.IsRecording() {
			span.AddEvent(DecisionEvent, trace.WithAttributes(decisionAttrs(rec)...))
		}
		span.End()
	}()
	return s.decide(ctx, req)
}

// DecisionEvent names the span event that carries a decision's outcome
// and reason codes (decisionAttrs).
const DecisionEvent = "vigil.decision"

// decisionAttrs describe a decision on its span event: what an operator
// needs to tell decisions apart and find the record, nothing of the
// action's arguments or the tenant's names.
func decisionAttrs(rec rules.DecisionRecord) []attribute.KeyValue {
	return []attribute.KeyValue{
		attribute.String("vigil.decision.id", rec.ID),
		attribute.String("vigil.decision.outcome", rec.Decision.Outcome.String()),
		attribute.StringSlice("vigil.decision.reason_codes", rec.Decision.ReasonCodes),
		attribute.String("vigil.decision.source", rec.Source),
		attribute.String("vigil.policy.pack_hash", rec.Decision.PackHash),
		attribute.Int64("vigil.policy.stream_seq", int64(rec.StreamSeq)),
	}
}

// step runs fn as a child span of ctx's span named name.
func step(ctx context.Context, name string, fn func(context.Context) error) error {
	ctx, span := telemetry.Child(ctx, name)
	err := fn(ctx)
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
	return err
}

func (s *Service) decide(ctx context.Context, req rules.EvaluateRequest) (rules.DecisionRecord, error) {
	start := time.Now()
	if !tenant.Valid(req.Tenant) {
		return rules.DecisionRecord{}, apperr.Validation("tenant is not valid")
	}
	if req.ControlSeq > 0 {
		// Read-your-writes across processes: never decide on state older
		// than what the caller has already been told is stored.
		err := step(ctx, "policy.catalog_wait", func(ctx context.Context) error {
			wctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
			defer cancel()
			return s.deps.Catalog.WaitFor(wctx, req.ControlSeq)
		})
		if err != nil {
			return rules.DecisionRecord{}, err
		}
	}
	pack, err := s.Pack(req.Tenant)
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	in := rules.Input{
		Tenant: req.Tenant, Principal: req.Principal, Action: req.Action, Context: req.Context,
		Agent: rules.AgentState{ID: req.AgentID},
	}
	if a, ok := s.deps.Catalog.Agent(req.Tenant, req.AgentID); ok {
		in.Agent.Paused, in.Agent.JudgeEnabled = a.Settings.Paused, a.Settings.JudgeEnabled
		if a.Declaration != nil {
			in.Agent.Declared, in.Agent.Tools, in.Agent.Destinations = true, a.Declaration.Tools, a.Declaration.Destinations
			in.Agent.Sources = a.Declaration.Sources
		}
	}
	var seen labelsRead
	if req.SessionID != "" {
		in.Session = s.sessions.get(req.Tenant, req.SessionID)
		seen = s.sessionLabelsFor(ctx, pack, req.Tenant, &in.Session)
	}
	// Halts come from the same catalog as policies, which this service
	// has fully loaded before it answers its first request (see Run's
	// callers), so no decision is made blind to a halt stored before it.
	if h, ok := s.deps.Catalog.HaltFor(req.Tenant, req.AgentID, req.SessionID); ok {
		in.Halt = h.State()
	}
	bad := pack.CheckInput(in)
	if len(bad) > 0 && req.Source != rules.SourceEvent {
		// Refused before deciding: nothing is recorded as a decision, but
		// the refusal is kept for the audit log.
		if err := s.recordRejection(ctx, req, pack.Hash, bad); err != nil {
			return rules.DecisionRecord{}, err
		}
		s.rejected.WithLabelValues(req.Source).Inc()
		return rules.DecisionRecord{}, rules.InputError(bad)
	}
	id := rules.NewDecisionID()
	msgID := id
	if req.Source == rules.SourceEvent && req.EventID != "" {
		// A redelivered event must not be judged, or counted, twice.
		msgID = "event:" + req.Tenant + ":" + req.EventID
	}
	if bs := s.deps.Catalog.ActiveBudgets(req.Tenant); len(bs) > 0 {
		// After the input check: a refused request is no action and
		// uses no budget.
		now := start
		if s.cfg.Clock != nil {
			now = s.cfg.Clock()
		}
		err := step(ctx, "policy.budgets", func(ctx context.Context) (err error) {
			in.Budgets, err = s.budgetUsage(ctx, req, bs, msgID, now.UTC())
			return err
		})
		if err != nil {
			return rules.DecisionRecord{}, err
		}
	}
	_, evalSpan := telemetry.Child(ctx, "policy.evaluate")
	d := pack.Evaluate(in, s.deps.Catalog.Org(req.Tenant).Org)
	evalSpan.End()
	if req.SessionID == "" || (d.Outcome == rules.Block && req.Source != rules.SourceEvent) {
		// Labels belong to sessions; and a refused action read nothing
		// (an ingested event already happened, so it labels even so).
		d.Labels = nil
	}
	// An ingested event already happened and cannot be refused: it is
	// judged (failing closed) and its violations explain the verdict.
	for _, fe := range bad {
		d.Errors = append(d.Errors, "input "+fe.Path+": "+fe.Message)
	}
	sig := rules.Signature(req.AgentID, req.Action, d.ReasonCodes)
	if d.Suppressible() && s.deps.Catalog.Suppressed(req.Tenant, sig) {
		d.Suppress()
	}
	rec := rules.DecisionRecord{
		ID: id, Tenant: req.Tenant, AgentID: req.AgentID, SessionID: req.SessionID,
		Source: req.Source, EventID: req.EventID, Input: in, Decision: d, Signature: sig, At: time.Now().UTC(),
		PackSignature: pack.Signature, KeyID: pack.KeyID,
	}
	if err := s.redactDecision(ctx, &rec); err != nil {
		return rules.DecisionRecord{}, err
	}
	seq, err := s.record(ctx, rec, msgID)
	if err != nil {
		return rules.DecisionRecord{}, err
	}
	if err := s.storeLabels(ctx, rec, seen); err != nil {
		return rules.DecisionRecord{}, err
	}
	// Only the answer carries it (the record was stored without).
	rec.StreamSeq = seq
	if req.SessionID != "" {
		s.sessions.add(req.Tenant, req.SessionID, d.Outcome)
	}
	s.decisions.WithLabelValues(req.Source, d.Outcome.String()).Inc()
	s.latency.Observe(time.Since(start).Seconds())
	return rec, nil
}

func (s *Service) record(ctx context.Context, rec rules.DecisionRecord, msgID string) (uint64, error) {
	return s.publish(ctx, streams.DecisionSubject(rec.Tenant, agentToken(rec.AgentID), rec.Decision.Outcome.String()), rec, rec.ID, msgID, rec.Decision.Outcome.String(), "could not record the decision")
}

// recordRejection keeps a refused request on POLICY. If it cannot be
// kept the caller gets a 503, not the 400: no refusal goes unrecorded.
func (s *Service) recordRejection(ctx context.Context, req rules.EvaluateRequest, packHash string, bad []apperr.FieldError) error {
	rej := rules.RejectedRequest{
		ID: rules.NewDecisionID(), Op: "rejected", Tenant: req.Tenant, AgentID: req.AgentID, SessionID: req.SessionID,
		Source: req.Source, Tool: req.Action.Tool, By: principalActor(req.Principal), Reason: bad[0].Message,
		Fields: bad, PackHash: packHash, At: time.Now().UTC(),
	}
	_, err := s.publish(ctx, streams.RejectionSubject(req.Tenant, agentToken(req.AgentID)), rej, rej.ID, rej.ID, "", "could not record the rejected request")
	return err
}

// principalActor names who asked the way the audit log names actors.
func principalActor(p rules.Principal) string {
	if p.KeyID == "" {
		return "system"
	}
	return "key:" + p.KeyID
}

func agentToken(agentID string) string {
	if agentID == "" {
		return "~"
	}
	return agentID
}

// publish records v on POLICY and returns its sequence (the original's,
// for a duplicate). id goes in the Vigil-Decision-Id header, so a reader
// finds the record from headers alone; msgID dedupes. A decision's
// outcome goes in the Vigil-Outcome header (none for other records).
func (s *Service) publish(ctx context.Context, subject string, v any, id, msgID, outcome, failure string) (uint64, error) {
	buf := encoders.Get().(*bytes.Buffer)
	defer putEncoder(buf)
	data, err := encodeRecord(buf, v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", subject, err)
	}
	// The commit point. Over RPC, ctx ends a margin before the caller
	// gives up; a caller that gave up answers "no decision was made", so
	// nothing may be recorded once it has.
	if err := ctx.Err(); err != nil {
		return 0, apperr.Unavailable(failure+": the caller stopped waiting", time.Second, err)
	}
	m := nats.NewMsg(subject)
	m.Data = data
	m.Header.Set(streams.HeaderDecisionID, id)
	if outcome != "" {
		m.Header.Set(streams.HeaderOutcome, outcome)
	}
	// The record carries the trace on: its consumers (projection, risk,
	// ledger) can continue it.
	var attrs []attribute.KeyValue
	if trace.SpanContextFromContext(ctx).IsValid() {
		attrs = telemetry.Messaging(streams.Policy) // only a traced call has a span to put them on
	}
	ctx, span := telemetry.Outgoing(ctx, m.Header, "publish "+streams.Policy, trace.SpanKindProducer, attrs...)
	defer span.End()
	ctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	ack, err := s.deps.JS.PublishMsg(ctx, m, jetstream.WithMsgID(msgID))
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
		return 0, apperr.Unavailable(failure, time.Second, err)
	}
	span.SetAttributes(attribute.Int64("messaging.nats.stream_sequence", int64(ack.Sequence)))
	return ack.Sequence, nil
}

// encoders are the buffers publish encodes records in. A record is
// encoded once per decision and copied by nats.go into its connection's
// buffer as it is published, so the buffer is free again once publish
// returns: json.Marshal's own copy of every record was the largest
// allocation of the policy service's decide path (perf-alloc2).
var encoders = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledEncoder bounds the buffers kept: one huge record does not pin
// its buffer in the pool.
const maxPooledEncoder = 64 << 10

func putEncoder(buf *bytes.Buffer) {
	if buf.Cap() <= maxPooledEncoder {
		encoders.Put(buf)
	}
}

// encodeRecord is json.Marshal(v) written into buf (the same bytes,
// TestEncodeRecordIsMarshal: json.Encoder runs the same encoder with the
// same HTML escaping and adds a newline, dropped here). The bytes are
// buf's: valid until buf is reused.
func encodeRecord(buf *bytes.Buffer, v any) ([]byte, error) {
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return b[:len(b)-1], nil
}

// sessionStats counts outcomes per session so that rules can look at the
// session so far (session.blocks, session.warnings, session.events). It
// is bounded (least recently used sessions are forgotten) and kept by the
// replica that decides; it starts empty after a restart.
type sessionStats struct {
	mu    sync.Mutex
	max   int
	order *list.List
	byKey map[string]*list.Element
}

type sessionEntry struct {
	key string
	s   rules.Session
}

func newSessionStats(max int) *sessionStats {
	return &sessionStats{max: max, order: list.New(), byKey: map[string]*list.Element{}}
}

func (st *sessionStats) get(tenant, id string) rules.Session {
	st.mu.Lock()
	defer st.mu.Unlock()
	if e, ok := st.byKey[tenant+"\x00"+id]; ok {
		return e.Value.(*sessionEntry).s
	}
	return rules.Session{ID: id}
}

func (st *sessionStats) add(tenant, id string, o rules.Outcome) {
	key := tenant + "\x00" + id
	st.mu.Lock()
	defer st.mu.Unlock()
	e, ok := st.byKey[key]
	if !ok {
		e = st.order.PushFront(&sessionEntry{key: key, s: rules.Session{ID: id}})
		st.byKey[key] = e
		if st.order.Len() > st.max {
			old := st.order.Back()
			st.order.Remove(old)
			delete(st.byKey, old.Value.(*sessionEntry).key)
		}
	} else {
		st.order.MoveToFront(e)
	}
	s := &e.Value.(*sessionEntry).s
	s.Events++
	switch o {
	case rules.Block:
		s.Blocks++
	case rules.Warn:
		s.Warnings++
	}
}

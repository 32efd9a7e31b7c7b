// Package guardian is Vigil's Decision Desk service. It turns every
// require_approval decision into a pending action, decides each exactly
// once on a person's word (compare-and-set on the action's own subject),
// and expires what nobody decided in time — also what fell due while the
// guardian was stopped.
package guardian

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/priority"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Intake is the durable consumer that reads decisions.
const Intake = "guardian-intake"

// Config tunes the guardian.
type Config struct {
	Streams streams.Options
	// SweepEvery is how often overdue actions are expired.
	SweepEvery time.Duration
}

// DefaultConfig returns defaults.
func DefaultConfig() Config {
	return Config{Streams: streams.DefaultOptions, SweepEvery: 500 * time.Millisecond}
}

// Validate reports every invalid setting.
func (c Config) Validate() error {
	if c.SweepEvery <= 0 {
		return errors.New("guardian: SweepEvery must be positive")
	}
	return nil
}

// Deps are the guardian's collaborators.
type Deps struct {
	NC         *nats.Conn
	JS         jetstream.JetStream
	Board      *approval.Board
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Tracer traces the decide and redeem RPCs (pkg/telemetry); nil
	// traces nothing.
	Tracer trace.TracerProvider
	// Gate, when set, is the process's priority gate (pkg/priority):
	// this service's stream consumers decode and fold records as
	// background work that gives way to decisions in flight. Optional.
	Gate *priority.Gate
}

// Service is the guardian.
type Service struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	changes *prometheus.CounterVec

	rpcOnce sync.Once
	rpc     micro.Service
	rpcErr  error
}

// New validates cfg and deps.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.NC == nil || deps.JS == nil || deps.Board == nil || deps.Log == nil || deps.Registerer == nil {
		return nil, errors.New("guardian: NC, JS, Board, Log and Registerer are required")
	}
	s := &Service{cfg: cfg, deps: deps, log: deps.Log.With(slog.String("service", "guardian")),
		changes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_guardian_changes_total", Help: "Pending action changes, by operation and status.",
		}, []string{"op", "status"})}
	if err := deps.Registerer.Register(s.changes); err != nil {
		return nil, fmt.Errorf("guardian metrics: %w", err)
	}
	return s, nil
}

// EnsureStreams creates or updates GUARDIAN, the stream it owns.
func (s *Service) EnsureStreams(ctx context.Context) error {
	return natsx.EnsureStreams(ctx, s.deps.JS, streams.GuardianConfig(s.cfg.Streams))
}

// ErrConflict means the action changed since it was read (decided,
// expired or rerouted by someone else).
var ErrConflict = errors.New("pending action changed concurrently")

// put records by's change if the action's subject is still at expect.
func (s *Service) put(ctx context.Context, op, by string, a approval.Action, expect uint64) (approval.Action, error) {
	data, err := json.Marshal(approval.Change{Op: op, By: by, Action: a, At: time.Now().UTC()})
	if err != nil {
		return a, fmt.Errorf("encode approval: %w", err)
	}
	// The commit point: over RPC, ctx ends a margin before the caller
	// gives up, and a caller that gave up reports the action undecided.
	if err := ctx.Err(); err != nil {
		return a, apperr.Unavailable("approval not recorded: the caller stopped waiting", time.Second, err)
	}
	m := nats.NewMsg(streams.ApprovalSubject(a.Tenant, a.ID))
	m.Data = data
	ack, err := s.deps.JS.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(expect))
	if natsx.IsWrongLastSequence(err) {
		return a, ErrConflict
	}
	if err != nil {
		return a, apperr.Unavailable("approval store did not acknowledge", time.Second, err)
	}
	a.Revision = ack.Sequence
	s.changes.WithLabelValues(op, string(a.Status)).Inc()
	return a, nil
}

// current reads an action's latest state from its subject.
func (s *Service) current(ctx context.Context, tenant, id string) (approval.Action, error) {
	st, err := s.deps.JS.Stream(ctx, streams.Guardian)
	if err != nil {
		return approval.Action{}, err
	}
	msg, err := st.GetLastMsgForSubject(ctx, streams.ApprovalSubject(tenant, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return approval.Action{}, apperr.NotFound("pending action %q not found", id)
	}
	if err != nil {
		return approval.Action{}, apperr.Unavailable("approval store unavailable", time.Second, err)
	}
	var ch approval.Change
	if err := json.Unmarshal(msg.Data, &ch); err != nil {
		return approval.Action{}, fmt.Errorf("decode approval: %w", err)
	}
	ch.Action.Revision = msg.Sequence
	return ch.Action, nil
}

// casRetries bounds how often Decide and Redeem re-read and re-check an
// action that changed under them (another approver's vote, an
// escalation) before answering 409.
const casRetries = 4

// Decide applies a person's decision exactly once: every attempt reads
// the action's latest state, checks the decision against it and records
// the result only if the action is still at that state.
func (s *Service) Decide(ctx context.Context, req approval.DecideRequest) (approval.Action, error) {
	for attempt := 1; ; attempt++ {
		a, err := s.current(ctx, req.Tenant, req.ID)
		if err != nil {
			return a, err
		}
		now := time.Now().UTC()
		if a.Overdue(now) {
			// Due but not yet swept: expire it now, then refuse.
			if _, err := s.expire(ctx, a); err != nil && !errors.Is(err, ErrConflict) {
				return a, err
			}
			return a, apperr.Conflict("pending action %s expired at %s", a.ID, a.ExpiresAt.Format(time.RFC3339))
		}
		if a.Status != approval.Pending {
			return a, apperr.Conflict("pending action %s is already %s", a.ID, a.Status)
		}
		op, err := decide(&a, req, now)
		if err != nil {
			return a, err
		}
		out, err := s.put(ctx, op, req.By, a, a.Revision)
		if errors.Is(err, ErrConflict) {
			if attempt < casRetries {
				continue
			}
			return a, apperr.Conflict("pending action %s was decided concurrently", a.ID)
		}
		return out, err
	}
}

// decide applies req to the pending action a and returns the operation
// to record.
func decide(a *approval.Action, req approval.DecideRequest, now time.Time) (string, error) {
	switch req.Decision {
	case "approve":
		if req.System {
			return "", apperr.Forbidden("Vigil does not approve actions on its own")
		}
		approved, err := a.Approve(req.By, req.Groups, req.Comment, now)
		if err != nil {
			return "", err
		}
		if !approved {
			return approval.OpVoted, nil
		}
		a.Status = approval.Approved
	case "reject":
		// Any reviewer rejects; so may the one who asked (withdrawing is
		// never more permissive), and Vigil itself (a halt).
		if !req.System && req.By != a.RequestedBy && !a.Reviewer(req.Groups) {
			return "", apperr.Forbidden(fmt.Sprintf("%s is in none of the reviewer groups of pending action %s", req.By, a.ID))
		}
		a.Status = approval.Rejected
	case "reroute":
		if req.ReviewerGroup == "" {
			return "", apperr.Validation("reroute needs a reviewerGroup", apperr.FieldError{Path: "reviewerGroup", Code: "required", Message: "reviewerGroup is required to reroute"})
		}
		// The group routes the action on the Desk; who may approve it
		// stays what its rules say.
		a.ReviewerGroup, a.Comment = req.ReviewerGroup, req.Comment
		return approval.OpRerouted, nil
	default:
		return "", apperr.Validation("decision must be approve, reject or reroute", apperr.FieldError{Path: "decision", Code: "invalid_format", Message: "decision must be approve, reject or reroute"})
	}
	a.Comment, a.DecidedBy, a.DecidedAt = req.Comment, req.By, &now
	return approval.OpResolved, nil
}

// Redeem records, exactly once, that an approved decision is being run
// with the arguments approved for it.
func (s *Service) Redeem(ctx context.Context, req approval.RedeemRequest) (approval.Action, error) {
	for attempt := 1; ; attempt++ {
		a, err := s.current(ctx, req.Tenant, approval.IDFor(req.DecisionID))
		if err != nil {
			return a, err
		}
		if err := a.Redeem(req.By, req.ArgumentsDigest, time.Now().UTC()); err != nil {
			return a, err
		}
		out, err := s.put(ctx, approval.OpRedeemed, req.By, a, a.Revision)
		if errors.Is(err, ErrConflict) && attempt < casRetries {
			// The next read sees the redemption that won, or whatever
			// else changed, and answers from it.
			continue
		}
		if errors.Is(err, ErrConflict) {
			return a, apperr.Conflict("decision %s was redeemed concurrently", req.DecisionID)
		}
		return out, err
	}
}

// escalate widens the reviewers of an action whose escalation is due.
func (s *Service) escalate(ctx context.Context, a approval.Action, now time.Time) (approval.Action, error) {
	a.Escalate(now)
	return s.put(ctx, approval.OpEscalated, "guardian:escalation", a, a.Revision)
}

func (s *Service) expire(ctx context.Context, a approval.Action) (approval.Action, error) {
	a.Status = approval.Expired
	now := time.Now().UTC()
	a.DecidedAt, a.DecidedBy = &now, "guardian:expiry"
	return s.put(ctx, approval.OpExpired, "guardian:expiry", a, a.Revision)
}

// Run takes in decisions, serves decide requests and expires overdue
// actions until ctx ends.
func (s *Service) Run(ctx context.Context) error {
	if err := s.deps.Board.Sync(ctx); err != nil {
		return err
	}
	srv, err := s.StartRPC()
	if err != nil {
		return err
	}
	return daemon.RunAll(ctx, s.intake,
		func(ctx context.Context) error { s.sweep(ctx); return nil },
		func(ctx context.Context) error { <-ctx.Done(); return srv.Stop() })
}

// Component is the guardian's share of a process: GUARDIAN, the decide
// responder (started once the earlier views are loaded) and Run. The
// approval board it reads is a component of its own, shared with the api.
func (s *Service) Component() daemon.Component {
	return daemon.Component{Name: "guardian", Provision: s.EnsureStreams, Workers: []daemon.Worker{s.Run},
		Start: func(context.Context) error { _, err := s.StartRPC(); return err }}
}

// StartRPC registers the decide endpoint (once). Call it before the HTTP
// API takes traffic; Run calls it too and stops it at shutdown.
func (s *Service) StartRPC() (micro.Service, error) {
	s.rpcOnce.Do(func() {
		srv, err := rpc.Serve(s.deps.NC, "vigil-guardian", "Pending actions: decide and redeem", func(svc micro.Service) error {
			if err := approval.DecideEndpoint.Handle(svc, s.log, s.Decide); err != nil {
				return err
			}
			return approval.RedeemEndpoint.Handle(svc, s.log, s.Redeem)
		}, rpc.Tracing(s.deps.Tracer))
		if err != nil {
			s.rpcErr = err
			return
		}
		s.rpc = srv
	})
	return s.rpc, s.rpcErr
}

// intake turns require_approval decisions into pending actions. The
// action id derives from the decision id and the first write expects an
// empty subject, so a redelivered decision is a no-op.
func (s *Service) intake(ctx context.Context) error {
	if err := natsx.WaitForStream(ctx, s.deps.JS, streams.Policy, s.log); err != nil {
		return err
	}
	cons, err := s.deps.JS.CreateOrUpdateConsumer(ctx, streams.Policy, jetstream.ConsumerConfig{
		Durable: Intake, Description: "POLICY require_approval decisions → pending actions",
		// Only require_approval decisions (and those recorded before the
		// outcome was in the subject): the server never delivers the
		// others, which is most decisions. Updating an existing durable's
		// filter keeps its position.
		FilterSubjects: streams.DecisionsWithOutcome(policy.RequireApproval.String()), AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 1000,
	})
	if err != nil {
		return fmt.Errorf("guardian intake: %w", err)
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if o := m.Headers().Get(streams.HeaderOutcome); o != "" && o != policy.RequireApproval.String() {
			// Nothing to hold (a record from before the outcome was in
			// the subject): passed over without decoding it.
			_ = m.Ack()
			return
		}
		var rec policy.DecisionRecord
		s.deps.Gate.Yield()
		if err := json.Unmarshal(m.Data(), &rec); err != nil {
			s.log.Error("intake: undecodable decision", slog.String("subject", m.Subject()), slog.String("error", err.Error()))
			_ = m.TermWithReason("undecodable decision")
			return
		}
		if rec.Decision.Outcome != policy.RequireApproval {
			_ = m.Ack()
			return
		}
		pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		a := approval.FromDecision(rec)
		if _, err := s.put(pctx, approval.OpRequested, a.RequestedBy, a, 0); err != nil && !errors.Is(err, ErrConflict) {
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("guardian intake: consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// sweep expires overdue actions and escalates those whose escalation is
// due. Several replicas may sweep at once; the
// compare-and-set lets exactly one expiry land.
func (s *Service) sweep(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepEvery)
	defer t.Stop()
	for {
		now := time.Now()
		for _, a := range s.deps.Board.Due(now) {
			var err error
			switch {
			case a.Overdue(now):
				_, err = s.expire(ctx, a)
			case a.EscalationDue(now):
				_, err = s.escalate(ctx, a, now)
			}
			if err != nil && !errors.Is(err, ErrConflict) && ctx.Err() == nil {
				s.log.Warn("sweep", slog.String("id", a.ID), slog.String("error", err.Error()))
			}
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
	}
}

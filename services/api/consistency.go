package api

import (
	"context"
	"errors"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// readWaits are, per kind of read, the projections a consistency token
// makes it wait for (docs/api.md#consistency-tokens).
type readWaits struct {
	// sessions: the events table (and decisions, for ?include=policy).
	sessions consistency.Waits
	// verdicts: the decisions table, including the verdicts of events
	// (an INGEST sequence waits for the policy service to judge the
	// event, then for the projector to store the verdict).
	verdicts consistency.Waits
	// control: the CONTROL catalog (agents, policies, keys, settings).
	control consistency.Waits
	// audit: the audit log's projectors.
	audit consistency.Waits
}

func (s *Service) newReadWaits() readWaits {
	js, cat := s.deps.JS, s.deps.Catalog
	decisions := natsx.NewConsumerFloor(js, streams.Policy, streams.DecisionsProjector)
	judged := consistency.Then(natsx.NewConsumerFloor(js, streams.Ingest, streams.EventVerdicts), s.policyLast, decisions)
	return readWaits{
		sessions: consistency.Waits{
			streams.Ingest:  {natsx.NewConsumerFloor(js, streams.Ingest, streams.EventsProjector)},
			streams.Policy:  {decisions},
			streams.Control: {cat},
		},
		verdicts: consistency.Waits{streams.Ingest: {judged}, streams.Policy: {decisions}, streams.Control: {cat}},
		control:  consistency.Waits{streams.Control: {cat}},
		audit: consistency.Waits{
			streams.Control:  {cat, natsx.NewConsumerFloor(js, streams.Control, AuditControlProjector)},
			streams.Guardian: {natsx.NewConsumerFloor(js, streams.Guardian, AuditGuardianProjector)},
			streams.Policy:   {natsx.NewConsumerFloor(js, streams.Policy, AuditPolicyProjector)},
		},
	}
}

// policyLast is POLICY's last sequence (0 before the stream exists).
func (s *Service) policyLast(ctx context.Context) (uint64, error) {
	st, err := s.policyStream(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return natsx.LastSequence(ctx, st)
}

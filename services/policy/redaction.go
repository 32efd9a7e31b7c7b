package policy

import (
	"context"
	"fmt"

	"github.com/vigilhq/vigil/pkg/control"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// startSettings builds the redactor and the judge and follows the
// tenants' settings until ctx ends.
func (s *Service) startSettings(ctx context.Context) error {
	if s.settings != nil {
		return nil
	}
	st, err := control.StartSettings(ctx, s.deps.JS, s.cfg.RedactionKey, s.log)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	if s.judge, err = s.newJudge(ctx); err != nil {
		return err
	}
	s.settings = st
	return nil
}

// redactDecision replaces personal data and secrets in what the decision
// was made on (action target, arguments, metadata and context) before it
// is recorded. Rules saw the raw values; nothing stored or returned does.
func (s *Service) redactDecision(ctx context.Context, rec *rules.DecisionRecord) error {
	pol, err := s.settings.RedactionWithin(ctx, rec.Tenant, s.cfg.PublishTimeout)
	if err != nil {
		return err
	}
	in := &rec.Input
	in.Action.Target, _ = pol.String(rec.Tenant, in.Action.Target)
	in.Action.Arguments, _ = pol.Map(rec.Tenant, in.Action.Arguments)
	in.Action.Metadata, _ = pol.Map(rec.Tenant, in.Action.Metadata)
	in.Context, _ = pol.Map(rec.Tenant, in.Context)
	return nil
}

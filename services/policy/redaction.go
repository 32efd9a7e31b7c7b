package policy

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/redact"
)

// startSettings builds the redactor and follows the tenants' settings.
// The view lives as long as the NATS connection.
func (s *Service) startSettings(ctx context.Context) error {
	if s.settings != nil {
		return nil
	}
	key := s.cfg.RedactionKey
	if len(key) == 0 {
		var err error
		if key, err = control.DeploymentKey(ctx, s.deps.JS, "redaction", s.cfg.Streams.Replicas); err != nil {
			return fmt.Errorf("policy: redaction key: %w", err)
		}
	}
	red, err := redact.New(key)
	if err != nil {
		return fmt.Errorf("policy: %w", err)
	}
	st := control.NewSettings(s.deps.JS, red, s.log)
	if err := st.Run(context.WithoutCancel(ctx)); err != nil {
		return err
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
	if s.settings == nil {
		return apperr.Unavailable("redaction is not started", time.Second, fmt.Errorf("policy: EnsureStreams was not called"))
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	pol, err := s.settings.Redaction(wctx, rec.Tenant)
	cancel()
	if err != nil {
		return apperr.Unavailable("redaction settings are loading; retry", time.Second, err)
	}
	in := &rec.Input
	in.Action.Target, _ = pol.String(rec.Tenant, in.Action.Target)
	in.Action.Arguments, _ = pol.Map(rec.Tenant, in.Action.Arguments)
	in.Action.Metadata, _ = pol.Map(rec.Tenant, in.Action.Metadata)
	in.Context, _ = pol.Map(rec.Tenant, in.Context)
	return nil
}

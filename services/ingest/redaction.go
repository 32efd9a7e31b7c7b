package ingest

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/redact"
)

// startRedaction builds the redactor and starts following the tenants'
// redaction settings. The view lives as long as the NATS connection:
// handlers need it from the first request to the last.
func (s *Service) startRedaction(ctx context.Context) error {
	if s.settings != nil {
		return nil
	}
	key := s.cfg.RedactionKey
	if len(key) == 0 {
		var err error
		if key, err = control.DeploymentKey(ctx, s.deps.JS, "redaction", s.cfg.Streams.Replicas); err != nil {
			return fmt.Errorf("ingest: redaction key: %w", err)
		}
	}
	red, err := redact.New(key)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	st := control.NewSettings(s.deps.JS, red, s.log)
	if err := st.Run(context.WithoutCancel(ctx)); err != nil {
		return err
	}
	s.settings = st
	return nil
}

// redactPayload replaces personal data and secrets in the event's payload
// before it is published: nothing downstream (the stream, ClickHouse,
// logs, other services) ever sees the raw values.
func (s *Service) redactPayload(ctx context.Context, tenant string, ev *event.Event) (int, error) {
	if s.settings == nil {
		return 0, apperr.Unavailable("redaction is not started", time.Second, fmt.Errorf("ingest: EnsureStreams was not called"))
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	pol, err := s.settings.Redaction(wctx, tenant)
	cancel()
	if err != nil {
		return 0, apperr.Unavailable("redaction settings are loading; retry", time.Second, err)
	}
	out, n, err := pol.JSON(tenant, ev.Payload)
	if err != nil {
		// Decode validated and compacted the payload already.
		return 0, fmt.Errorf("redact payload: %w", err)
	}
	ev.Payload = out
	return n, nil
}

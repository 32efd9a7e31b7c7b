package ingest

import (
	"context"
	"fmt"

	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
)

// startRedaction builds the redactor and follows the tenants' redaction
// settings until ctx ends.
func (s *Service) startRedaction(ctx context.Context) error {
	if s.settings != nil {
		return nil
	}
	st, err := control.StartSettings(ctx, s.deps.JS, s.cfg.RedactionKey, s.log)
	if err != nil {
		return fmt.Errorf("ingest: %w", err)
	}
	s.settings = st
	return nil
}

// redactPayload replaces personal data and secrets in the event's payload
// before it is published: nothing downstream (the stream, ClickHouse,
// logs, other services) ever sees the raw values.
func (s *Service) redactPayload(ctx context.Context, tenant string, ev *event.Event) (int, error) {
	pol, err := s.settings.RedactionWithin(ctx, tenant, s.cfg.PublishTimeout)
	if err != nil {
		return 0, err
	}
	out, n, err := pol.JSON(tenant, ev.Payload)
	if err != nil {
		// Decode validated and compacted the payload already.
		return 0, fmt.Errorf("redact payload: %w", err)
	}
	ev.Payload = out
	return n, nil
}

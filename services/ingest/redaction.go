package ingest

import (
	"context"
	"fmt"

	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/redact"
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

// redactionFor is tenant's redaction policy, waiting at most
// PublishTimeout for the settings view: a request looks it up once, not
// once per event (the wait's timer and context cost more than the rest
// of the lookup).
func (s *Service) redactionFor(ctx context.Context, tenant string) (*redact.Policy, error) {
	return s.settings.RedactionWithin(ctx, tenant, s.cfg.PublishTimeout)
}

// redactPayload replaces personal data and secrets in the event's payload
// by pol (the tenant's, from redactionFor) before it is published:
// nothing downstream (the stream, ClickHouse, logs, other services) ever
// sees the raw values.
func redactPayload(pol *redact.Policy, tenant string, ev *event.Event) (int, error) {
	out, n, err := pol.JSON(tenant, ev.Payload)
	if err != nil {
		// Decode validated and compacted the payload already.
		return 0, fmt.Errorf("redact payload: %w", err)
	}
	ev.Payload = out
	return n, nil
}

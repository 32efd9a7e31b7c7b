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
// sees the raw values. Decode validated and compacted the payload
// already, so it is not validated again.
func redactPayload(pol *redact.Policy, tenant string, ev *event.Event) int {
	out, n := pol.ValidJSON(tenant, ev.Payload)
	ev.Payload = out
	return n
}

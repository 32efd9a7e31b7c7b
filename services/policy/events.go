package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/event"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// runEventVerdicts evaluates every ingested event (source "event").
func (s *Service) runEventVerdicts(ctx context.Context) error {
	cons, err := s.consumer(ctx, streams.Ingest, jetstream.ConsumerConfig{
		Durable: EventVerdicts, Description: "INGEST events → policy verdicts on POLICY",
		FilterSubject: streams.AllEventsReceived, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 2000,
	})
	if err != nil {
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		// An event's verdict continues the trace of the request that
		// ingested it (and is not traced when that request was not).
		mctx, span := telemetry.Continued(ctx, s.deps.Tracer, m.Headers(), "process "+streams.Ingest, trace.SpanKindConsumer,
			telemetry.Messaging(streams.AllEventsReceived)...)
		defer span.End()
		var r event.Record
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			s.log.Error("event verdicts: undecodable event", slog.String("subject", m.Subject()), slog.String("error", err.Error()))
			_ = m.TermWithReason("undecodable event record")
			return
		}
		if _, err := s.Decide(mctx, EventRequest(r)); err != nil {
			span.SetStatus(codes.Error, err.Error())
			_ = m.NakWithDelay(time.Second)
			return
		}
		_ = m.Ack()
	}, jetstream.PullMaxMessages(500))
	if err != nil {
		return fmt.Errorf("event verdicts: consume: %w", err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

// EventRequest maps an ingested event onto an action: the category is the
// kind, payload.toolName the tool, payload.target (or url, host,
// destination) the target, payload.arguments the arguments.
func EventRequest(r event.Record) rules.EvaluateRequest {
	var p map[string]any
	_ = json.Unmarshal(r.Event.Payload, &p)
	str := func(keys ...string) string {
		for _, k := range keys {
			if v, ok := p[k].(string); ok && v != "" {
				return v
			}
		}
		return ""
	}
	args, _ := p["arguments"].(map[string]any)
	if args == nil {
		args, _ = p["args"].(map[string]any)
	}
	kind := r.Event.Category
	if kind == "tool_api" {
		kind = "tool_call"
	}
	return rules.EvaluateRequest{
		Tenant: r.Tenant, AgentID: r.Event.AgentID, SessionID: r.Event.SessionID, EventID: r.Event.EventID,
		Source:    rules.SourceEvent,
		Principal: rules.Principal{KeyID: r.KeyID},
		Action: rules.Action{
			Kind: kind, Tool: str("toolName", "tool"), Target: str("target", "url", "host", "destination"),
			Publisher: str("publisher"), Operation: str("operation"), ToolType: str("toolType"),
			TargetSystem: str("targetSystem"), InitiatorType: strings.TrimSpace(str("initiatorType")),
			Arguments: args, Metadata: map[string]any{"source": "event", "category": r.Event.Category},
		},
		Context: p,
	}
}

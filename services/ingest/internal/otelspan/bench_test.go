package otelspan

import (
	"testing"
	"time"

	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"

	"github.com/vigilhq/vigil/pkg/event"
)

// benchSpan is a typical GenAI execute_tool span, as vigil bench otlp sends.
func benchSpan() Span {
	return Span{
		Resource: res(kv("service.name", "support-bot"), kv("gen_ai.agent.id", "agent-03.support-bot"), kv("telemetry.sdk.language", "python")),
		Scope:    &commonv1.InstrumentationScope{Name: "opentelemetry.instrumentation.openai_agents", Version: "0.1.0"},
		Span: span(kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "http_request"), kv("gen_ai.tool.call.id", "9f86d081884c7d659a2feaa0"),
			kv("gen_ai.conversation.id", "sess-03-0007"), kv("gen_ai.request.model", "claude-3-5-sonnet"), kv("gen_ai.usage.input_tokens", 1834),
			kv("gen_ai.usage.output_tokens", 211), kv("url.full", "https://crm.internal.example.net/v1/items/482913?expand=owner"), kv("http.response.status_code", 200)),
	}
}

// BenchmarkEvent is the mapping of one span; BenchmarkEventDecode adds
// the validation every event gets, which is what a span costs ingest
// beyond an event posted as JSON.
func BenchmarkEvent(b *testing.B) {
	s := benchSpan()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Event(s, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventDecode(b *testing.B) {
	s := benchSpan()
	raw, _ := Event(s, "")
	b.ReportMetric(float64(len(raw)), "bytes/event")
	b.ReportAllocs()
	now := time.Now()
	for b.Loop() {
		if _, _, err := event.Decode(raw, event.DefaultLimits, now, ""); err != nil {
			b.Fatal(err)
		}
	}
}

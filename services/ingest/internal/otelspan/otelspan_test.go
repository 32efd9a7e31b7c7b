package otelspan

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/budget"
	"github.com/vigilhq/vigil/pkg/event"
)

func kv(k string, v any) *commonv1.KeyValue {
	var av *commonv1.AnyValue
	switch t := v.(type) {
	case string:
		av = &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: t}}
	case int:
		av = &commonv1.AnyValue{Value: &commonv1.AnyValue_IntValue{IntValue: int64(t)}}
	case float64:
		av = &commonv1.AnyValue{Value: &commonv1.AnyValue_DoubleValue{DoubleValue: t}}
	case bool:
		av = &commonv1.AnyValue{Value: &commonv1.AnyValue_BoolValue{BoolValue: t}}
	}
	return &commonv1.KeyValue{Key: k, Value: av}
}

var (
	traceID = mustHex("4bf92f3577b34da6a3ce929d0e0e4736")
	spanID  = mustHex("00f067aa0ba902b7")
	t0      = uint64(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func span(attrs ...*commonv1.KeyValue) *tracev1.Span {
	return &tracev1.Span{TraceId: traceID, SpanId: spanID, Name: "execute_tool refund", StartTimeUnixNano: t0, EndTimeUnixNano: t0 + 1_500_000, Attributes: attrs, Kind: tracev1.Span_SPAN_KIND_INTERNAL}
}

func res(attrs ...*commonv1.KeyValue) *resourcev1.Resource {
	return &resourcev1.Resource{Attributes: attrs}
}

// decoded maps s and decodes the result the way ingest does, so every
// case also proves the mapping yields a valid event.
func decoded(t *testing.T, s Span, def string) (event.Event, map[string]any) {
	t.Helper()
	raw, err := Event(s, def)
	if err != nil {
		t.Fatalf("Event: %v", err)
	}
	ev, _, err := event.Decode(raw, event.DefaultLimits, time.Now(), "")
	if err != nil {
		t.Fatalf("mapped event does not validate: %v\n%s", err, raw)
	}
	var p map[string]any
	if err := json.Unmarshal(ev.Payload, &p); err != nil {
		t.Fatal(err)
	}
	return ev, p
}

func TestEventMapping(t *testing.T) {
	tests := []struct {
		name     string
		s        Span
		def      string
		agent    string
		session  string
		category string
		payload  map[string]any // keys that must be present with these values
		tokens   budget.Tokens  // what budgets count for the event
	}{
		{
			name: "execute_tool with everything",
			s: Span{Resource: res(kv("service.name", "billing-svc")), Scope: &commonv1.InstrumentationScope{Name: "openai-agents", Version: "0.3"}, Span: span(
				kv("gen_ai.operation.name", "execute_tool"), kv("gen_ai.tool.name", "refund"), kv("gen_ai.tool.call.id", "call_1"),
				kv("gen_ai.tool.call.arguments", `{"amount": 120}`), kv("gen_ai.agent.id", "agent-7"), kv("gen_ai.agent.name", "Refund Bot"),
				kv("gen_ai.conversation.id", "conv_42"), kv("error.type", "timeout"), kv("x.custom", true))},
			agent: "agent-7", session: "conv_42", category: CategoryTool,
			payload: map[string]any{"source": "otlp", "operation": "execute_tool", "toolName": "refund", "toolCallId": "call_1",
				"arguments": map[string]any{"amount": 120.0}, "agentName": "Refund Bot", "errorType": "timeout",
				"traceId": "4bf92f3577b34da6a3ce929d0e0e4736", "spanId": "00f067aa0ba902b7", "durationMs": 1.5, "spanKind": "internal", "status": "unset",
				"scope":      map[string]any{"name": "openai-agents", "version": "0.3"},
				"attributes": map[string]any{"x.custom": true}, "resource": map[string]any{"service.name": "billing-svc"}},
		},
		{
			name: "chat usage feeds the budget fields",
			s: Span{Resource: res(kv("service.name", "svc"), kv("gen_ai.agent.id", "res-agent")), Span: span(
				kv("gen_ai.operation.name", "chat"), kv("gen_ai.request.model", "gpt-4o"), kv("gen_ai.response.model", "gpt-4o-2024-08-06"),
				kv("gen_ai.usage.input_tokens", 1200), kv("gen_ai.usage.output_tokens", 80.0), kv("gen_ai.provider.name", "openai"))},
			agent: "res-agent", session: "4bf92f3577b34da6a3ce929d0e0e4736", category: CategoryLLM,
			payload: map[string]any{"model": "gpt-4o-2024-08-06", "requestModel": "gpt-4o", "inputTokens": 1200.0, "outputTokens": 80.0, "provider": "openai"},
			tokens:  budget.Tokens{Input: 1200, Output: 80, Model: "gpt-4o-2024-08-06"},
		},
		{
			name:  "agent name that is an id, old gen_ai.system",
			s:     Span{Resource: res(kv("service.name", "svc")), Span: span(kv("gen_ai.operation.name", "invoke_agent"), kv("gen_ai.agent.name", "planner"), kv("gen_ai.system", "anthropic"))},
			agent: "planner", session: "4bf92f3577b34da6a3ce929d0e0e4736", category: CategoryAgent,
			payload: map[string]any{"provider": "anthropic"},
		},
		{
			name:  "key's agent before service.name; display name skipped",
			s:     Span{Resource: res(kv("service.name", "svc")), Span: span(kv("gen_ai.agent.name", "Math Tutor"))},
			def:   "tutor-1",
			agent: "tutor-1", session: "4bf92f3577b34da6a3ce929d0e0e4736", category: CategorySpan,
			payload: map[string]any{"agentName": "Math Tutor"},
		},
		{
			name:  "service.name fallback; a conversation id that is no id falls back to the trace",
			s:     Span{Resource: res(kv("service.name", "unknown_service:agent")), Span: span(kv("gen_ai.conversation.id", "has spaces"), kv("http.response.status_code", 502), kv("url.full", "https://api.example.com/x"))},
			agent: "unknown_service:agent", session: "4bf92f3577b34da6a3ce929d0e0e4736", category: CategorySpan,
			payload: map[string]any{"conversationId": "has spaces", "responseStatus": 502.0, "target": "https://api.example.com/x"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev, p := decoded(t, tt.s, tt.def)
			if ev.AgentID != tt.agent || ev.SessionID != tt.session || ev.Category != tt.category {
				t.Fatalf("agent %q session %q category %q; want %q %q %q", ev.AgentID, ev.SessionID, ev.Category, tt.agent, tt.session, tt.category)
			}
			if ev.EventID != EventID(traceID, spanID) {
				t.Fatalf("eventId %s is not the span's", ev.EventID)
			}
			if ev.SourceTimestamp != "2026-03-01T12:00:00Z" {
				t.Fatalf("sourceTimestamp %s", ev.SourceTimestamp)
			}
			for k, want := range tt.payload {
				got, _ := json.Marshal(p[k])
				w, _ := json.Marshal(want)
				if !bytes.Equal(got, w) {
					t.Errorf("payload.%s = %s, want %s", k, got, w)
				}
			}
			if got := budget.TokensFromPayload(p); got != tt.tokens {
				t.Errorf("budget tokens %+v, want %+v", got, tt.tokens)
			}
			// No attribute is lost: each is a named field or in attributes.
			attrs, _ := p["attributes"].(map[string]any)
			for _, a := range tt.s.Span.Attributes {
				if _, ok := attrs[a.Key]; !ok && !mappedKeys[a.Key] {
					t.Errorf("attribute %s is neither mapped nor kept: %v", a.Key, p)
				}
			}

		})
	}
}

// mappedKeys are the attributes that become named payload fields.
var mappedKeys = map[string]bool{
	attrOperation: true, attrToolName: true, attrToolCallID: true, attrToolArgs: true, attrAgentID: true, attrAgentName: true,
	attrConversationID: true, attrRequestModel: true, attrResponseModel: true, attrInputTokens: true, attrOutputTokens: true,
	attrProvider: true, attrSystem: true, attrErrorType: true, attrHTTPStatus: true, attrURL: true, attrServerAddress: true,
}

func TestEventRejects(t *testing.T) {
	tests := []struct {
		name string
		s    Span
		want string
	}{
		{"short trace id", Span{Span: &tracev1.Span{TraceId: []byte{1}, SpanId: spanID, StartTimeUnixNano: t0}}, "traceId"},
		{"zero trace id", Span{Span: &tracev1.Span{TraceId: make([]byte, 16), SpanId: spanID, StartTimeUnixNano: t0}}, "traceId"},
		{"zero span id", Span{Span: &tracev1.Span{TraceId: traceID, SpanId: make([]byte, 8), StartTimeUnixNano: t0}}, "spanId"},
		{"no time", Span{Resource: res(kv("service.name", "s")), Span: &tracev1.Span{TraceId: traceID, SpanId: spanID}}, "startTimeUnixNano"},
		{"no agent", Span{Span: span()}, "names no agent"},
		{"bad agent id is not skipped", Span{Resource: res(kv("service.name", "ok")), Span: span(kv("gen_ai.agent.id", "a/b"))}, "gen_ai.agent.id"},
		{"bad service name, valid span", Span{Resource: res(kv("service.name", "my service")), Span: span()}, "service.name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Event(tt.s, "")
			var me *MappingError
			if !errors.As(err, &me) || !strings.Contains(me.Msg, tt.want) {
				t.Fatalf("err = %v, want a mapping error about %s", err, tt.want)
			}
		})
	}
	if _, err := Event(Span{}, ""); err == nil {
		t.Fatal("an empty span mapped")
	}
}

func TestEventIDDeterministic(t *testing.T) {
	a, b := EventID(traceID, spanID), EventID(traceID, mustHex("00f067aa0ba902b8"))
	if a != EventID(traceID, spanID) || a == b {
		t.Fatalf("ids %s %s", a, b)
	}
	if a[14] != '8' || !strings.ContainsAny(a[19:20], "89ab") {
		t.Fatalf("%s is not a version 8 RFC 9562 UUID", a)
	}
}

// TestDecodeSpecExample: the OTLP JSON example (hex ids, string
// nanoseconds, an integer enum) decodes to the same ids a protobuf body
// carries, and maps to a valid event.
func TestDecodeSpecExample(t *testing.T) {
	body, err := os.ReadFile("testdata/spec_example.json")
	if err != nil {
		t.Fatal(err)
	}
	req, err := Decode(JSON, body)
	if err != nil {
		t.Fatal(err)
	}
	if Spans(req) != 1 {
		t.Fatalf("%d spans", Spans(req))
	}
	var got Span
	Each(req, func(path string, s Span) {
		if path != "resourceSpans[0].scopeSpans[0].spans[0]." {
			t.Errorf("path %s", path)
		}
		got = s
	})
	if hex.EncodeToString(got.Span.TraceId) != "5b8efff798038103d269b633813fc60c" || hex.EncodeToString(got.Span.ParentSpanId) != "eee19b7ec3c1b173" || got.Span.Kind != tracev1.Span_SPAN_KIND_SERVER {
		t.Fatalf("decoded %v", got.Span)
	}
	ev, p := decoded(t, got, "")
	if ev.AgentID != "my.service" || ev.SessionID != "5b8efff798038103d269b633813fc60c" || ev.SourceTimestamp != "2018-12-13T14:51:00Z" || p["durationMs"] != 1000.0 {
		t.Fatalf("event %+v payload %v", ev, p)
	}
	// The protobuf encoding of the same request decodes identically.
	pb, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	again, err := Decode(Protobuf, pb)
	if err != nil || !proto.Equal(req, again) {
		t.Fatalf("protobuf round trip: %v", err)
	}
}

func TestDecodeRejects(t *testing.T) {
	for name, c := range map[string]struct{ enc, body string }{
		"not json":        {JSON, `{"resourceSpans":`},
		"trailing":        {JSON, `{} {}`},
		"base64 ids":      {JSON, `{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}`},
		"wrong type":      {JSON, `{"resourceSpans":{"a":1}}`},
		"not protobuf":    {Protobuf, "\xff\xff\xff"},
		"other encodings": {"text/plain", "x"},
	} {
		if _, err := Decode(c.enc, []byte(c.body)); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
	// Unknown JSON fields are ignored, as the OTLP JSON mapping asks.
	if _, err := Decode(JSON, []byte(`{"resourceSpans":[],"futureField":1}`)); err != nil {
		t.Fatalf("unknown field: %v", err)
	}
}

// FuzzSpanEvent: whatever a request holds, mapping never panics, and a
// span it maps is a valid event (ids, agent, session, time all pass
// ingest's validation) whose id is the span's. The seeds run as a
// regular test.
func FuzzSpanEvent(f *testing.F) {
	seed := func(s Span) {
		req := &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{Resource: s.Resource, ScopeSpans: []*tracev1.ScopeSpans{{Scope: s.Scope, Spans: []*tracev1.Span{s.Span}}}}}}
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, false)
	}
	seed(Span{Resource: res(kv("service.name", "svc")), Span: span(kv("gen_ai.operation.name", "chat"), kv("gen_ai.usage.input_tokens", 3), kv("x", 1.5), kv("b", true))})
	seed(Span{Resource: res(kv("gen_ai.agent.id", "a")), Span: span(kv("gen_ai.tool.call.arguments", `{"a":[1,2]}`), kv("gen_ai.conversation.id", "c"))})
	seed(Span{Span: span(kv("gen_ai.agent.id", "bad id"))})
	body, err := os.ReadFile("testdata/spec_example.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body, true)
	f.Add([]byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"00","spanId":"","startTimeUnixNano":1}]}]}]}`), true)
	f.Fuzz(func(t *testing.T, body []byte, isJSON bool) {
		enc := Protobuf
		if isJSON {
			enc = JSON
		}
		req, err := Decode(enc, body)
		if err != nil {
			return
		}
		Each(req, func(_ string, s Span) {
			raw, err := Event(s, "")
			if err != nil {
				var me *MappingError
				if !errors.As(err, &me) {
					t.Fatalf("unclassified error %v", err)
				}
				return
			}
			ev, _, err := event.Decode(raw, event.Limits{}, time.Now(), "")
			if err != nil {
				var ae *apperr.Error
				if errors.As(err, &ae) && len(ae.Details) == 1 && ae.Details[0].Path == "sourceTimestamp" && ae.Details[0].Code == event.CodeOutOfRange {
					return // times before 2000 or far ahead are ingest's to refuse
				}
				t.Fatalf("mapped span is not a valid event: %v\n%s", err, raw)
			}
			if ev.EventID != EventID(s.Span.TraceId, s.Span.SpanId) {
				t.Fatalf("event id %s", ev.EventID)
			}
		})
	})
}

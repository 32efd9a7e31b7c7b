package telemetry_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/telemetry/otlptest"
)

func TestConfig(t *testing.T) {
	for _, tt := range []struct {
		endpoint string
		ratio    float64
		wantURL  string
		wantErr  string
	}{
		{"", 1, "", ""},
		{"http://collector:4318", 1, "http://collector:4318/v1/traces", ""},
		{"http://collector:4318/", 0, "http://collector:4318/v1/traces", ""},
		{"https://otel.example/prefix", 0.5, "https://otel.example/prefix/v1/traces", ""},
		{"https://otel.example/v1/traces", 1, "https://otel.example/v1/traces", ""},
		{"collector:4318", 1, "", "is not an http(s) URL"},
		{"grpc://collector:4317", 1, "", "is not an http(s) URL"},
		{"http://c:4318", 1.5, "", "between 0 and 1"},
		{"", -0.1, "", "between 0 and 1"},
	} {
		err := telemetry.Config{Endpoint: tt.endpoint, SampleRatio: tt.ratio}.Validate()
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%q %g: error %v, want %q", tt.endpoint, tt.ratio, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q %g: %v", tt.endpoint, tt.ratio, err)
		}
		if tt.endpoint != "" {
			if got, _ := telemetry.TracesURL(tt.endpoint); got != tt.wantURL {
				t.Errorf("TracesURL(%q) = %q, want %q", tt.endpoint, got, tt.wantURL)
			}
		}
	}
}

// TestOffTracesNothing: with no endpoint the provider is the no-op one,
// and the NATS seams neither start spans nor write headers.
func TestOffTracesNothing(t *testing.T) {
	tr, err := telemetry.Start(context.Background(), telemetry.Config{SampleRatio: 1}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if telemetry.Enabled(tr.Provider) || telemetry.Enabled(nil) {
		t.Fatal("tracing is on without an endpoint")
	}
	ctx, span := tr.Provider.Tracer("t").Start(context.Background(), "request")
	h := nats.Header{}
	_, out := telemetry.Outgoing(ctx, h, "rpc.x", trace.SpanKindClient)
	_, in := telemetry.Incoming(ctx, tr.Provider, nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}, "rpc.x", trace.SpanKindServer)
	if len(h) != 0 || span.IsRecording() || out.IsRecording() || in.SpanContext().IsValid() {
		t.Errorf("off: headers %v, recording %v %v, incoming span %v", h, span.IsRecording(), out.IsRecording(), in.SpanContext())
	}
}

// TestContinued: a consumer's span continues a traced message and starts
// nothing for an untraced one.
func TestContinued(t *testing.T) {
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	_, none := telemetry.Continued(context.Background(), tp, nats.Header{}, "process", trace.SpanKindConsumer)
	if none.SpanContext().IsValid() || none.IsRecording() {
		t.Errorf("an untraced message started a span: %v", none.SpanContext())
	}
	h := nats.Header{"traceparent": {"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}}
	_, span := telemetry.Continued(context.Background(), tp, h, "process", trace.SpanKindConsumer)
	if !span.IsRecording() || span.SpanContext().TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("a traced message: span %v recording %v", span.SpanContext(), span.IsRecording())
	}
}

// TestInjectExtract: trace context survives a trip through NATS headers.
func TestInjectExtract(t *testing.T) {
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	ctx := telemetry.Extract(context.Background(), nats.Header{"traceparent": {tp}})
	h := nats.Header{}
	telemetry.Inject(ctx, h)
	if h.Get("traceparent") != tp {
		t.Errorf("traceparent %q, want %q", h.Get("traceparent"), tp)
	}
}

// BenchmarkSeams is what tracing costs the seams one decision crosses
// (a request span, an RPC call and its handler, the decide span with
// three steps and the decision event, a publish: eight spans), with
// tracing off (the no-op provider: nothing is started) and on, every
// trace sampled and exported in the background to an in-process OTLP
// receiver (whose decoding shares the machine), and recorded but not
// exported.
func BenchmarkSeams(b *testing.B) {
	recv := otlptest.Start(b)
	on, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: recv.URL, SampleRatio: 1, Service: "bench"}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = on.Shutdown(context.Background()) })
	for _, tt := range []struct {
		name string
		tp   trace.TracerProvider
	}{
		{"off", telemetry.Off().Provider},
		// Spans recorded but exported nowhere: their cost alone.
		{"recorded", sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))},
		{"sampled", on.Provider},
	} {
		b.Run(tt.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				ctx := context.Background()
				var root trace.Span = trace.SpanFromContext(ctx)
				if telemetry.Enabled(tt.tp) {
					ctx, root = tt.tp.Tracer("bench").Start(ctx, "POST /v1/decisions.evaluate")
				}
				h := nats.Header{}
				c, client := telemetry.Outgoing(ctx, h, "rpc.policy.v1.evaluate", trace.SpanKindClient)
				sc, server := telemetry.Incoming(context.Background(), tt.tp, h, "rpc.policy.v1.evaluate", trace.SpanKindServer)
				dc, decide := telemetry.Child(sc, "policy.decide")
				for range 3 {
					_, st := telemetry.Child(dc, "policy.step")
					st.End()
				}
				_, p := telemetry.Outgoing(dc, nats.Header{}, "publish POLICY", trace.SpanKindProducer)
				p.End()
				if decide.IsRecording() {
					decide.AddEvent("vigil.decision", trace.WithAttributes(attribute.String("vigil.decision.outcome", "allow"),
						attribute.StringSlice("vigil.decision.reason_codes", []string{"DEFAULT_ALLOW"})))
				}
				decide.End()
				server.End()
				client.End()
				_ = c
				root.End()
			}
		})
	}
}

// Package telemetry is Vigil's own tracing: OpenTelemetry spans of the
// work a process does (an HTTP request, the NATS hop to the policy
// service, the decision, its record on POLICY), exported over OTLP/HTTP
// to the collector an operator configures (--otel-endpoint). Off by
// default, and then nothing is traced at all: Start returns a no-op
// provider and every seam checks for it first (Enabled), so the decision
// path pays one context lookup.
//
// The provider is passed explicitly (daemon.Process, the supervisor,
// services' Deps), never set as OpenTelemetry's global, so that several
// stacks in one test process each trace to their own receiver. Within a
// request the provider travels with the span in the context: a seam that
// has a context (an RPC call, a publish) starts its span from the
// context's span and its provider, and does nothing when there is none.
//
// Trace context crosses NATS as W3C trace context (the traceparent and
// tracestate headers) in nats.Header: Inject on publish and request,
// Extract on consume and handle (Outgoing and Incoming below).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// Scope is the instrumentation scope of every Vigil span.
const Scope = "github.com/vigilhq/vigil"

// Config says where a process's spans go.
type Config struct {
	// Endpoint is the collector's OTLP/HTTP URL: a base URL
	// ("http://collector:4318", traces go to its /v1/traces) or the full
	// traces URL (a path ending in /v1/traces). Empty turns tracing off.
	Endpoint string
	// SampleRatio is the share of new traces recorded, in [0, 1]; a
	// request that arrives with a trace context follows its caller's
	// sampling decision (parent-based).
	SampleRatio float64
	// Service is the resource's service.name ("vigil-policy", "vigil-dev").
	Service string
	// Instance is service.instance.id (--instance-id), optional.
	Instance string
}

// Validate checks the endpoint and the ratio.
func (c Config) Validate() error {
	if c.SampleRatio < 0 || c.SampleRatio > 1 {
		return fmt.Errorf("--otel-sample-ratio must be between 0 and 1, not %g", c.SampleRatio)
	}
	if c.Endpoint == "" {
		return nil
	}
	if _, err := TracesURL(c.Endpoint); err != nil {
		return err
	}
	return nil
}

// TracesURL is where spans are posted for endpoint: its own path when it
// ends in /v1/traces, else endpoint + /v1/traces (as the OTLP exporter
// specification treats OTEL_EXPORTER_OTLP_ENDPOINT).
func TracesURL(endpoint string) (string, error) {
	u, err := url.Parse(endpoint)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("--otel-endpoint %q is not an http(s) URL", endpoint)
	}
	if !strings.HasSuffix(u.Path, "/v1/traces") {
		u.Path = strings.TrimSuffix(u.Path, "/") + "/v1/traces"
	}
	return u.String(), nil
}

// Tracing is a process's tracer provider and what stops it.
type Tracing struct {
	// Provider starts spans; a no-op provider when tracing is off.
	Provider trace.TracerProvider
	sdk      *sdktrace.TracerProvider
}

// Off is tracing turned off.
func Off() *Tracing { return &Tracing{Provider: noop.NewTracerProvider()} }

// exportTimeout bounds one export; retries give up after exportRetry.
// Both are short of the SDK's defaults (10 s, 1 min) so that a collector
// that is down costs a process little at shutdown.
const (
	exportTimeout = 5 * time.Second
	exportRetry   = 15 * time.Second
)

// Start builds the provider cfg describes: Off when cfg.Endpoint is
// empty, else a batching OTLP/HTTP exporter with a parent-based ratio
// sampler. Spans are exported in the background: an exporter that is
// slow or down never delays the work it traces (a full queue drops
// spans, never blocks), and its errors are logged to log at warn.
// The exporter honours the standard OTEL_EXPORTER_OTLP_HEADERS,
// _TIMEOUT, _COMPRESSION and _CERTIFICATE variables.
func Start(ctx context.Context, cfg Config, log *slog.Logger) (*Tracing, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Endpoint == "" {
		return Off(), nil
	}
	target, err := TracesURL(cfg.Endpoint)
	if err != nil {
		return nil, err
	}
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(target), otlptracehttp.WithTimeout(exportTimeout),
		otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: true, InitialInterval: time.Second, MaxInterval: 5 * time.Second, MaxElapsedTime: exportRetry}))
	if err != nil {
		return nil, fmt.Errorf("otlp exporter %s: %w", target, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", cfg.Service), attribute.String("service.namespace", "vigil")}
	if cfg.Instance != "" {
		attrs = append(attrs, attribute.String("service.instance.id", cfg.Instance))
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(attrs...))
	if err != nil {
		return nil, fmt.Errorf("otel resource: %w", err)
	}
	// The SDK reports export failures through OpenTelemetry's one global
	// error handler; route them to the process log rather than stderr.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
		log.Warn("otel export", slog.String("endpoint", target), slog.String("error", err.Error()))
	}))
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(cfg.SampleRatio))),
	)
	log.Info("tracing to OTLP", slog.String("endpoint", target), slog.Float64("sample_ratio", cfg.SampleRatio))
	return &Tracing{Provider: tp, sdk: tp}, nil
}

// Flush exports every span ended so far (tests, before reading a
// receiver).
func (t *Tracing) Flush(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	return t.sdk.ForceFlush(ctx)
}

// Shutdown exports what is queued and stops the exporter, waiting at
// most 5 s (a collector that is down does not hold up a shutdown).
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil || t.sdk == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	if err := t.sdk.Shutdown(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("otel shutdown: %w", err)
	}
	return nil
}

// Enabled reports whether tp records anything: false for nil and for
// the no-op provider, so a seam can skip its work entirely when off.
func Enabled(tp trace.TracerProvider) bool {
	if tp == nil {
		return false
	}
	_, off := tp.(noop.TracerProvider)
	return !off
}

// propagator is W3C trace context, fixed rather than OpenTelemetry's
// global propagator (see the package comment).
var propagator = propagation.TraceContext{}

// natsCarrier reads and writes trace context in NATS headers, whose keys
// are case-sensitive (unlike HTTP's): the propagator's keys are
// lower-case, "traceparent" and "tracestate".
type natsCarrier nats.Header

func (c natsCarrier) Get(key string) string { return nats.Header(c).Get(key) }
func (c natsCarrier) Set(key, value string) { nats.Header(c).Set(key, value) }
func (c natsCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Inject writes ctx's span context into h (nothing when ctx has none).
func Inject(ctx context.Context, h nats.Header) {
	propagator.Inject(ctx, natsCarrier(h))
}

// Extract returns ctx with the remote span context h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	return propagator.Extract(ctx, natsCarrier(h))
}

// HTTP returns the propagator for HTTP headers (the httpkit middleware).
func HTTP() propagation.TextMapPropagator { return propagator }

// Outgoing starts a span of kind (client, producer) for a message about to
// go to NATS, as a child of ctx's span, and writes its context into h so
// the receiver continues the trace. When ctx holds no span (nothing traces
// this work, or tracing is off) it does nothing and returns a no-op span:
// the cost is one context lookup.
func Outgoing(ctx context.Context, h nats.Header, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, parent
	}
	ctx, span := parent.TracerProvider().Tracer(Scope).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
	Inject(ctx, h)
	return ctx, span
}

// Incoming starts a span of kind (server, consumer) on tp for a message
// received from NATS, continuing the trace its headers carry (a new trace
// when they carry none). Off (tp not Enabled), it returns ctx and a
// no-op span without reading the headers.
func Incoming(ctx context.Context, tp trace.TracerProvider, h nats.Header, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !Enabled(tp) {
		return ctx, trace.SpanFromContext(context.Background())
	}
	ctx = Extract(ctx, h)
	return tp.Tracer(Scope).Start(ctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Continued is Incoming for work that is traced only as part of a traced
// request: it starts a span only when h carries a span context, and
// otherwise returns ctx and a no-op span. Consumers of streams use it: an
// event stored by an untraced request (an OTLP export to Vigil's own
// receiver among them) does not start a trace of its own, so a stream
// does not become a flood of one-span traces, and Vigil exporting to
// itself does not feed on its own spans.
func Continued(ctx context.Context, tp trace.TracerProvider, h nats.Header, name string, kind trace.SpanKind, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	if !Enabled(tp) {
		return ctx, trace.SpanFromContext(context.Background())
	}
	rctx := Extract(ctx, h)
	if !trace.SpanContextFromContext(rctx).IsValid() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return tp.Tracer(Scope).Start(rctx, name, trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
}

// Child starts a span as a child of ctx's span, on its provider; a no-op
// span when ctx holds none. For the steps of a traced piece of work
// ("evaluate", "record").
func Child(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span) {
	parent := trace.SpanFromContext(ctx)
	if !parent.SpanContext().IsValid() {
		return ctx, parent
	}
	return parent.TracerProvider().Tracer(Scope).Start(ctx, name, trace.WithAttributes(attrs...))
}

// Messaging attributes of a NATS span (OpenTelemetry messaging
// conventions).
func Messaging(subject string) []attribute.KeyValue {
	return []attribute.KeyValue{attribute.String("messaging.system", "nats"), attribute.String("messaging.destination.name", subject)}
}

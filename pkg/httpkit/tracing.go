package httpkit

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/telemetry"
)

// Option adjusts NewServer.
type Option func(*options)

type options struct{ tracer trace.TracerProvider }

// WithTracing traces every request on tp: one server span per request,
// named by its method and route template, continuing the trace of a
// caller that sent W3C trace context (traceparent). With tracing off
// (tp not telemetry.Enabled) no middleware is installed at all.
func WithTracing(tp trace.TracerProvider) Option {
	return func(o *options) { o.tracer = tp }
}

// untraced are the routes of probes and scrapes, which would fill a
// collector with a trace every few seconds and explain nothing, and the
// OTLP trace receiver (services/ingest): a Vigil that exports its own
// spans to itself would otherwise trace each export, store its spans as
// events and export the verdicts' spans again, more every round.
var untraced = map[string]bool{healthPath: true, readyPath: true, metricsPath: true, OTLPTracesPath: true}

// OTLPTracesPath is the OTLP/HTTP trace receiver's route.
const OTLPTracesPath = "/v1/traces"

// Tracing is the request span middleware (what WithTracing installs;
// the gateway uses it too). It must sit outside whatever renders errors,
// so the status it records is the one sent.
func Tracing(tp trace.TracerProvider) echo.MiddlewareFunc {
	tracer := tp.Tracer(telemetry.Scope)
	prop := telemetry.HTTP()
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if untraced[c.Path()] {
				return next(c)
			}
			req := c.Request()
			ctx := prop.Extract(req.Context(), propagation.HeaderCarrier(req.Header))
			route, method := metricRoute(c), MetricMethod(req.Method)
			ctx, span := tracer.Start(ctx, method+" "+route, trace.WithSpanKind(trace.SpanKindServer),
				trace.WithAttributes(attribute.String("http.request.method", method), attribute.String("http.route", route)))
			defer span.End()
			c.SetRequest(req.WithContext(ctx))
			err := next(c)
			status := c.Response().Status
			span.SetAttributes(attribute.Int("http.response.status_code", status))
			if id := c.Response().Header().Get(echo.HeaderXRequestID); id != "" {
				span.SetAttributes(attribute.String("vigil.request_id", id))
			}
			if status >= http.StatusInternalServerError {
				span.SetStatus(codes.Error, strconv.Itoa(status))
			}
			return err
		}
	}
}

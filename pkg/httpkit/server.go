package httpkit

import (
	"context"
	"log/slog"
	"net/http"
	"reflect"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// NewServer returns an echo instance with Vigil's error envelope, panic
// recovery, request ids, access logs and request metrics registered on
// reg, and request spans when WithTracing says where. Services add their
// routes to it.
func NewServer(log *slog.Logger, reg prometheus.Registerer, opts ...Option) (*echo.Echo, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	down := newOutages(log)
	e.HTTPErrorHandler = errorHandler(log, down)
	e.Server.ReadHeaderTimeout = 10 * time.Second
	e.Server.IdleTimeout = 120 * time.Second

	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "vigil_http_requests_total", Help: "HTTP requests by route, method and status.",
	}, []string{"route", "method", "status"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "vigil_http_request_seconds", Help: "HTTP request latency by route.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	}, []string{"route", "method"})
	for _, c := range []prometheus.Collector{requests, latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	metrics := newRouteMetrics(requests, latency)

	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true}))
	e.Use(middleware.RequestIDWithConfig(middleware.RequestIDConfig{Generator: newRequestIDs().next}))
	if telemetry.Enabled(o.tracer) {
		e.Use(Tracing(o.tracer))
	}
	e.Use(func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			start := time.Now()
			err := next(c)
			if err != nil {
				// Render now so the status below is the one sent.
				c.Error(err)
			}
			route, method := metricRoute(c), MetricMethod(c.Request().Method)
			status := c.Response().Status
			if status < 500 {
				down.succeeded(route)
			}
			metrics.observe(route, method, status, time.Since(start))
			// Server errors get an access line, except 503s: an outage is
			// reported once by its state change, not once per request.
			if status >= 500 && status != http.StatusServiceUnavailable || log.Enabled(c.Request().Context(), slog.LevelDebug) {
				attrs := []slog.Attr{slog.String("method", method), slog.String("route", route), slog.Int("status", status),
					slog.Duration("took", time.Since(start)), slog.String("request_id", c.Response().Header().Get(echo.HeaderXRequestID))}
				if sc := trace.SpanContextFromContext(c.Request().Context()); sc.IsValid() {
					// From the log line to the request's trace.
					attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()))
				}
				log.LogAttrs(c.Request().Context(), slog.LevelInfo, "http", attrs...)
			}
			return nil
		}
	})
	// Consistency tokens: a malformed one is a 400 (rendered by the
	// middleware above); every 2xx answers with the sequences it wrote.
	e.Use(consistency.Track())
	return e, nil
}

// Check is one readiness probe.
type Check func(ctx context.Context) error

// The probe and scrape routes HealthRoutes mounts.
const healthPath, readyPath, metricsPath = "/healthz", "/readyz", "/metrics"

// HealthRoutes mounts /healthz (the process is up), /readyz (every check
// passes) and /metrics (Prometheus, from gatherer).
func HealthRoutes(e *echo.Echo, gatherer prometheus.Gatherer, checks map[string]Check) {
	e.GET(healthPath, func(c echo.Context) error {
		return c.JSON(http.StatusOK, map[string]string{"status": "ok"})
	})
	e.GET(readyPath, func(c echo.Context) error {
		ctx, cancel := context.WithTimeout(c.Request().Context(), 2*time.Second)
		defer cancel()
		res := map[string]string{}
		status := http.StatusOK
		for name, check := range checks {
			if err := check(ctx); err != nil {
				res[name] = err.Error()
				status = http.StatusServiceUnavailable
			} else {
				res[name] = "ok"
			}
		}
		return c.JSON(status, map[string]any{"ready": status == http.StatusOK, "checks": res})
	})
	e.GET(metricsPath, echo.WrapHandler(promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
}

// knownMethods are the methods that get their own metric label.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true,
	http.MethodPatch: true, http.MethodDelete: true, http.MethodOptions: true,
	http.MethodConnect: true, http.MethodTrace: true,
}

// MetricMethod maps a request method to its metric label: the standard
// methods as themselves, anything else (a client may send any token) to
// "OTHER", so that made-up methods cannot grow /metrics without bound.
func MetricMethod(m string) string {
	if knownMethods[m] {
		return m
	}
	return "OTHER"
}

// notFound is echo's handler for a request no route matched.
var notFound = reflect.ValueOf(echo.NotFoundHandler).Pointer()

// metricRoute is the registered route template, never the raw path: a
// request that matched no route is labelled "unmatched". The router says
// so by handing it echo's NotFoundHandler; a registered route that answers
// 404 itself (an SSO page with no provider configured) keeps its label.
func metricRoute(c echo.Context) string {
	if c.Path() == "" || c.Handler() == nil || reflect.ValueOf(c.Handler()).Pointer() == notFound {
		return "unmatched"
	}
	return c.Path()
}

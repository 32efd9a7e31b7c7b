package httpkit_test

import (
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// TestRequestSpans: with tracing on, each request is a server span named
// by its route template that continues a caller's traceparent, records
// the status sent (Error for a 5xx rendered from a returned error), and
// the handler's context holds it; the 5xx access line names the trace.
// Probes, scrapes and the OTLP receiver are not traced.
func TestRequestSpans(t *testing.T) {
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	reg := prometheus.NewRegistry()
	log, logs := testkit.Logger(t, slog.LevelInfo)
	e, err := httpkit.NewServer(log, reg, httpkit.WithTracing(tp))
	if err != nil {
		t.Fatal(err)
	}
	httpkit.HealthRoutes(e, reg, nil)
	e.POST(httpkit.OTLPTracesPath, func(c echo.Context) error { return c.NoContent(http.StatusOK) })
	var inHandler trace.SpanContext
	e.GET("/v1/things/:id", func(c echo.Context) error {
		inHandler = trace.SpanContextFromContext(c.Request().Context())
		if c.Param("id") == "broken" {
			return errors.New("disk on fire")
		}
		return c.NoContent(http.StatusNoContent)
	})
	srv := httptest.NewServer(e)
	defer srv.Close()

	const traceID, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	do(t, http.MethodGet, srv.URL+"/v1/things/42", nil, map[string]string{"traceparent": "00-" + traceID + "-" + parent + "-01"})
	do(t, http.MethodGet, srv.URL+"/v1/things/broken", nil, nil)
	for _, p := range []string{"/healthz", "/readyz", "/metrics"} {
		do(t, http.MethodGet, srv.URL+p, nil, nil)
	}
	do(t, http.MethodPost, srv.URL+httpkit.OTLPTracesPath, nil, nil)
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans, want 2 (probes, scrapes and OTLP exports are not traced): %v", len(spans), spans)
	}
	ok, broken := spans[0], spans[1]
	if ok.Name != "GET /v1/things/:id" || ok.SpanKind != trace.SpanKindServer || ok.SpanContext.TraceID().String() != traceID || ok.Parent.SpanID().String() != parent {
		t.Errorf("first span %q kind %s trace %s parent %s", ok.Name, ok.SpanKind, ok.SpanContext.TraceID(), ok.Parent.SpanID())
	}
	if broken.Parent.IsValid() || broken.Status.Code != codes.Error || ok.Status.Code == codes.Error {
		t.Errorf("broken: parent %v status %v; ok status %v", broken.Parent, broken.Status, ok.Status)
	}
	if inHandler.SpanID() != broken.SpanContext.SpanID() {
		t.Errorf("handler's context holds span %s, want %s", inHandler.SpanID(), broken.SpanContext.SpanID())
	}
	for _, want := range []struct {
		s    tracetest.SpanStub
		code int64
	}{{ok, 204}, {broken, 500}} {
		found := false
		for _, a := range want.s.Attributes {
			found = found || a.Key == "http.response.status_code" && a.Value.AsInt64() == want.code
		}
		if !found {
			t.Errorf("%s: no http.response.status_code %d in %v", want.s.Name, want.code, want.s.Attributes)
		}
	}
	if !strings.Contains(logs.String(), "trace_id="+broken.SpanContext.TraceID().String()) {
		t.Errorf("the 5xx access line does not name its trace: %s", logs.String())
	}
}

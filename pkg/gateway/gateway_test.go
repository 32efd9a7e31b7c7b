package gateway_test

import (
	"bufio"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/gateway"
	"github.com/vigilhq/vigil/pkg/routes"
)

// seen is what an upstream received.
type seen struct {
	Service string      `json:"service"`
	Method  string      `json:"method"`
	URI     string      `json:"uri"`
	Header  http.Header `json:"header"`
}

// upstreams starts one fake service per service of the table; each
// answers with what it received, and /stream writes a line, flushes and
// waits for release before the second.
func upstreams(t *testing.T, release chan struct{}) map[string]*url.URL {
	t.Helper()
	out := map[string]*url.URL{}
	for _, s := range routes.Default().Services() {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasSuffix(r.URL.Path, "/export.json") {
				w.Header().Set("Content-Type", "application/x-ndjson")
				io.WriteString(w, "first\n")
				w.(http.Flusher).Flush()
				<-release
				io.WriteString(w, "second\n")
				return
			}
			w.Header().Set("Retry-After", "7")
			w.Header().Set("Connection", "X-Upstream-Hop")
			w.Header().Set("X-Upstream-Hop", "must not reach the client")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTeapot)
			json.NewEncoder(w).Encode(seen{Service: s, Method: r.Method, URI: r.RequestURI, Header: r.Header})
		}))
		t.Cleanup(srv.Close)
		u, _ := url.Parse(srv.URL)
		out[s] = u
	}
	return out
}

func newGateway(t *testing.T, ups map[string]*url.URL) string {
	t.Helper()
	e, err := gateway.New(gateway.Config{Table: routes.Default(), Upstreams: ups, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Reg: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv.URL
}

var param = regexp.MustCompile(`:[A-Za-z]+`)

// TestEveryRouteReachesItsService: each route of the table, with its
// parameters filled in and a query string, reaches its own service with
// method, path and query unchanged.
func TestEveryRouteReachesItsService(t *testing.T) {
	release := make(chan struct{})
	close(release)
	base := newGateway(t, upstreams(t, release))
	for _, r := range routes.Default() {
		uri := param.ReplaceAllString(r.Path, "p-1") + "?limit=5&x=a%2Fb"
		req, _ := http.NewRequest(r.Method, base+uri, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got seen
		err = json.NewDecoder(res.Body).Decode(&got)
		res.Body.Close()
		if strings.HasSuffix(r.Path, "/export.json") {
			continue
		}
		if err != nil || got.Service != r.Service || got.Method != r.Method || got.URI != uri {
			t.Errorf("%s: reached %+v (%v), want %s with %s %s", r, got, err, r.Service, r.Method, uri)
		}
	}
}

// TestHeaders: credentials, tenant, idempotency and request headers pass
// to the service; hop-by-hop headers do not, either way; X-Forwarded-*
// and a request id are set; the service's Retry-After and status come
// back.
func TestHeaders(t *testing.T) {
	release := make(chan struct{})
	close(release)
	base := newGateway(t, upstreams(t, release))
	req, _ := http.NewRequest(http.MethodPost, base+"/v1/decisions.evaluate", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer vk_test")
	req.Header.Set("x-tenant-id", "acme")
	req.Header.Set("Idempotency-Key", "idem-1")
	req.Header.Set("Connection", "X-Client-Hop")
	req.Header.Set("X-Client-Hop", "must not reach the service")
	req.Header.Set("X-Forwarded-For", "203.0.113.9") // spoofed: replaced
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var got seen
	if err := json.NewDecoder(res.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	h := got.Header
	for k, want := range map[string]string{"Authorization": "Bearer vk_test", "X-Tenant-Id": "acme", "Idempotency-Key": "idem-1", "X-Forwarded-For": "127.0.0.1", "X-Forwarded-Proto": "http", "X-Forwarded-Host": strings.TrimPrefix(base, "http://")} {
		if h.Get(k) != want {
			t.Errorf("service got %s: %q, want %q", k, h.Get(k), want)
		}
	}
	if h.Get("X-Client-Hop") != "" || h.Get("X-Request-Id") == "" {
		t.Errorf("service got X-Client-Hop %q and X-Request-Id %q: want none and one", h.Get("X-Client-Hop"), h.Get("X-Request-Id"))
	}
	if res.StatusCode != http.StatusTeapot || res.Header.Get("Retry-After") != "7" || res.Header.Get("X-Upstream-Hop") != "" {
		t.Errorf("client got %d, Retry-After %q, X-Upstream-Hop %q", res.StatusCode, res.Header.Get("Retry-After"), res.Header.Get("X-Upstream-Hop"))
	}
}

// TestStreamsWithoutBuffering: the client reads what the service flushed
// while the service is still writing.
func TestStreamsWithoutBuffering(t *testing.T) {
	release := make(chan struct{})
	base := newGateway(t, upstreams(t, release))
	res, err := http.Get(base + "/v1/sessions/s-1/export.json")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	br := bufio.NewReader(res.Body)
	line, err := br.ReadString('\n')
	if err != nil || line != "first\n" {
		t.Fatalf("first line %q, %v", line, err)
	}
	close(release) // only now may the service finish
	if line, err = br.ReadString('\n'); err != nil || line != "second\n" {
		t.Fatalf("second line %q, %v", line, err)
	}
}

// TestErrors: unknown paths, wrong methods and an unreachable service
// answer in the envelope.
func TestErrors(t *testing.T) {
	release := make(chan struct{})
	close(release)
	ups := upstreams(t, release)
	dead := httptest.NewServer(http.NotFoundHandler())
	deadURL, _ := url.Parse(dead.URL)
	dead.Close()
	ups["risk"] = deadURL
	base := newGateway(t, ups)
	for _, tt := range []struct {
		method, path string
		status       int
		code         string
		retryAfter   bool
	}{
		{"GET", "/v1/nowhere", 404, "not_found", false},
		{"PUT", "/v1/events", 405, "not_found", false},
		{"GET", "/v1/agents/profiles", 503, "internal_error", true},
	} {
		req, _ := http.NewRequest(tt.method, base+tt.path, nil)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var env struct {
			Code  string `json:"code"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
			RequestID string `json:"requestId"`
		}
		err = json.NewDecoder(res.Body).Decode(&env)
		res.Body.Close()
		if err != nil || res.StatusCode != tt.status || env.Code != tt.code || env.Error.Code == "" {
			t.Errorf("%s %s = %d %+v (%v), want %d %s", tt.method, tt.path, res.StatusCode, env, err, tt.status, tt.code)
		}
		if tt.retryAfter && (res.Header.Get("Retry-After") == "" || env.RequestID == "") {
			t.Errorf("%s %s: Retry-After %q, requestId %q", tt.method, tt.path, res.Header.Get("Retry-After"), env.RequestID)
		}
	}
}

// TestValidate: a table whose service has no upstream is refused at
// start, not at the first request.
func TestValidate(t *testing.T) {
	ups := map[string]*url.URL{}
	for _, s := range routes.Default().Services() {
		ups[s], _ = url.Parse("http://" + s + ":8080")
	}
	cfg := gateway.Config{Table: routes.Default(), Upstreams: ups, Log: slog.Default(), Reg: prometheus.NewRegistry()}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("valid config refused: %v", err)
	}
	delete(ups, "risk")
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "--risk-url") {
		t.Fatalf("missing upstream: %v", err)
	}
	ups["risk"], _ = url.Parse("ftp://risk")
	if err := cfg.Validate(); err == nil {
		t.Fatal("ftp upstream accepted")
	}
}

// TestTraceContext: traced, the gateway's request span continues the
// caller's traceparent and the service receives the gateway's span as
// its parent; untraced, the caller's traceparent reaches the service
// unchanged.
func TestTraceContext(t *testing.T) {
	release := make(chan struct{})
	close(release)
	ups := upstreams(t, release)
	const traceID, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	incoming := "00-" + traceID + "-" + caller + "-01"
	exp := tracetest.NewInMemoryExporter()
	for _, tt := range []struct {
		name string
		tp   trace.TracerProvider
	}{{"untraced", nil}, {"traced", sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))}} {
		e, err := gateway.New(gateway.Config{Table: routes.Default(), Upstreams: ups, Log: slog.New(slog.DiscardHandler), Reg: prometheus.NewRegistry(), Tracer: tt.tp})
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(e)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/decisions.evaluate", strings.NewReader(`{}`))
		req.Header.Set("traceparent", incoming)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var got seen
		err = json.NewDecoder(res.Body).Decode(&got)
		res.Body.Close()
		srv.Close()
		if err != nil {
			t.Fatal(err)
		}
		want := incoming
		if tt.tp != nil {
			spans := exp.GetSpans()
			if len(spans) != 1 || spans[0].Name != "POST /v1/decisions.evaluate" || spans[0].Parent.SpanID().String() != caller {
				t.Fatalf("traced: spans %v, want one continuing the caller's", spans)
			}
			want = "00-" + traceID + "-" + spans[0].SpanContext.SpanID().String() + "-01"
		}
		if tp := got.Header.Get("Traceparent"); tp != want {
			t.Errorf("%s: the service got traceparent %q, want %q", tt.name, tp, want)
		}
	}
}

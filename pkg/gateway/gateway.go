// Package gateway is Vigil's front door for a deployment of separate
// services: one HTTP server that sends each request of the route table
// (pkg/routes) to the service that serves it, so that clients see one base
// URL whatever the layout. `vigil gateway` runs it.
//
// Requests are matched by echo's router over the table, as the services
// match them, and proxied by net/http/httputil.ReverseProxy: hop-by-hop
// headers are dropped both ways, X-Forwarded-For/-Host/-Proto are set from
// the client connection, every other header (Authorization, x-tenant-id,
// Idempotency-Key, Retry-After, Location, consistency tokens) passes
// unchanged, and responses are flushed as they are written, so long-polls,
// NDJSON exports and server-sent events stream through without buffering.
// The gateway holds no state and checks no credentials: each service
// authenticates its own requests.
package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/routes"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// Config is what a gateway serves and where it sends it.
type Config struct {
	// Table is the route table; every service it names needs an upstream.
	Table routes.Table
	// Upstreams are each service's base URL (scheme and host, e.g.
	// http://risk:8080).
	Upstreams map[string]*url.URL
	// Log and Reg receive the gateway's logs and metrics.
	Log *slog.Logger
	Reg *prometheus.Registry
	// Transport reaches the upstreams; nil is a transport tuned for many
	// concurrent requests to few hosts.
	Transport http.RoundTripper
	// Tracer traces each request (--otel-endpoint); the service then
	// continues the gateway's span. Nil or a no-op provider traces
	// nothing, and a caller's traceparent passes through unchanged.
	Tracer trace.TracerProvider
}

// Validate checks that every service of the table has an absolute http(s)
// upstream, so that no route of the table can fall through to nowhere.
func (c Config) Validate() error {
	if len(c.Table) == 0 {
		return errors.New("gateway: empty route table")
	}
	for _, s := range c.Table.Services() {
		u, ok := c.Upstreams[s]
		if !ok || u == nil {
			return fmt.Errorf("gateway: no upstream for the %s service (--%s-url)", s, s)
		}
		if u.Scheme != "http" && u.Scheme != "https" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			return fmt.Errorf("gateway: upstream of %s: %q is not an http(s)://host[:port][/prefix] URL", s, u)
		}
	}
	if c.Log == nil || c.Reg == nil {
		return errors.New("gateway: Log and Reg are required")
	}
	return nil
}

// NewTransport is the default upstream transport: keep-alive pools large
// enough that a burst does not open a connection per request, and no
// response timeout (long-polls wait up to a minute; the client's own
// deadline, carried by its request context, bounds every request).
func NewTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 nil,
		DialContext:           (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   256,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     true,
	}
}

// New builds the gateway's HTTP server: every route of the table proxied
// to its service, plus the gateway's own /healthz, /readyz (every upstream
// answers its /healthz) and /metrics. Unknown paths are 404 and known
// paths with another method 405, in the error envelope.
func New(cfg Config) (*echo.Echo, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.Transport == nil {
		cfg.Transport = NewTransport()
	}
	m, err := newMetrics(cfg.Reg)
	if err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = httpkit.ErrorHandler(cfg.Log)
	e.Server.ReadHeaderTimeout = 10 * time.Second
	e.Server.IdleTimeout = 120 * time.Second
	e.Use(middleware.RecoverWithConfig(middleware.RecoverConfig{DisableStackAll: true}))
	e.Use(requestID)
	if telemetry.Enabled(cfg.Tracer) {
		e.Use(httpkit.Tracing(cfg.Tracer))
	}
	proxies := map[string]*httputil.ReverseProxy{}
	checks := map[string]httpkit.Check{}
	for _, s := range cfg.Table.Services() {
		proxies[s] = newProxy(s, cfg.Upstreams[s], cfg.Transport, cfg.Log)
		checks[s] = upstreamCheck(cfg.Upstreams[s], cfg.Transport)
	}
	httpkit.HealthRoutes(e, cfg.Reg, checks)
	cfg.Table.Mount(e, func(r routes.Route) echo.HandlerFunc {
		p, route := proxies[r.Service], r.String()
		return func(c echo.Context) error {
			start := time.Now()
			p.ServeHTTP(c.Response(), c.Request())
			m.observe(r.Service, route, c.Response().Status, time.Since(start))
			return nil
		}
	})
	return e, nil
}

// newProxy is the reverse proxy to one service.
func newProxy(service string, target *url.URL, rt http.RoundTripper, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.SetXForwarded()
			// Traced, the service's span is a child of the gateway's
			// (untraced, the context holds no span and the caller's
			// traceparent passes as it came).
			telemetry.HTTP().Inject(pr.Out.Context(), propagation.HeaderCarrier(pr.Out.Header))
		},
		Transport: rt,
		// Flush every write: long-polls, NDJSON exports and event
		// streams reach the client as the service writes them.
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				// The client went away: nobody is left to answer.
				return
			}
			log.Warn("gateway: upstream unreachable", slog.String("service", service), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
			c := echo.New().NewContext(r, echo.NewResponse(w, nil))
			c.Response().Header().Set(echo.HeaderXRequestID, r.Header.Get(echo.HeaderXRequestID))
			httpkit.ErrorHandler(log)(apperr.Unavailable("the "+service+" service is unreachable", time.Second, err), c)
		},
	}
}

// requestID gives a request without an X-Request-ID one before it is
// proxied, so the service's logs and the client see the same id.
func requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Header.Get(echo.HeaderXRequestID) == "" {
			var b [16]byte
			_, _ = rand.Read(b[:])
			req.Header.Set(echo.HeaderXRequestID, hex.EncodeToString(b[:]))
		}
		return next(c)
	}
}

// upstreamCheck is ready when the service answers its /healthz.
func upstreamCheck(target *url.URL, rt http.RoundTripper) httpkit.Check {
	u := target.JoinPath("/healthz").String()
	client := &http.Client{Transport: rt}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return err
		}
		res, err := client.Do(req)
		if err != nil {
			return err
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: HTTP %d", u, res.StatusCode)
		}
		return nil
	}
}

type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "vigil_gateway_requests_total", Help: "Requests the gateway proxied, by service, route and status.",
		}, []string{"service", "route", "status"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "vigil_gateway_request_seconds", Help: "Time from the gateway receiving a request to the end of its proxied response, by service.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 18),
		}, []string{"service"}),
	}
	for _, c := range []prometheus.Collector{m.requests, m.latency} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func (m *metrics) observe(service, route string, status int, took time.Duration) {
	m.requests.WithLabelValues(service, route, strconv.Itoa(status)).Inc()
	m.latency.WithLabelValues(service).Observe(took.Seconds())
}

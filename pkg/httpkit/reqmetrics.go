package httpkit

import (
	"crypto/rand"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// routeMetrics is the request counter and latency histogram with their
// children cached by label values: WithLabelValues validates, hashes and
// looks up three strings under a lock on every request, which the
// single-event ingest path paid twice per event. The label sets are
// bounded (registered routes or "unmatched", MetricMethod's labels,
// status codes), and so is the cache.
type routeMetrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	counters sync.Map // requestLabels → prometheus.Counter
	timers   sync.Map // latencyLabels → prometheus.Observer
}

type requestLabels struct {
	route, method string
	status        int
}

type latencyLabels struct{ route, method string }

func newRouteMetrics(requests *prometheus.CounterVec, latency *prometheus.HistogramVec) *routeMetrics {
	return &routeMetrics{requests: requests, latency: latency}
}

// observe counts one request and its latency.
func (m *routeMetrics) observe(route, method string, status int, took time.Duration) {
	rk := requestLabels{route, method, status}
	c, ok := m.counters.Load(rk)
	if !ok {
		c, _ = m.counters.LoadOrStore(rk, m.requests.WithLabelValues(route, method, strconv.Itoa(status)))
	}
	c.(prometheus.Counter).Inc()
	lk := latencyLabels{route, method}
	o, ok := m.timers.Load(lk)
	if !ok {
		o, _ = m.timers.LoadOrStore(lk, m.latency.WithLabelValues(route, method))
	}
	o.(prometheus.Observer).Observe(took.Seconds())
}

// requestIDs hands out X-Request-Id values shaped as echo's generator's
// (32 ASCII letters): a random prefix drawn once per process and a
// counter. A request id correlates a request's log lines, error envelope
// and span; it needs to be unique, not secret, and echo's generator read
// crypto/rand and allocated twice on every request.
type requestIDs struct {
	prefix [16]byte
	n      atomic.Uint64
}

const idLetters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func newRequestIDs() *requestIDs {
	var r requestIDs
	var b [16]byte
	rand.Read(b[:]) // since Go 1.24 it never returns an error (it crashes instead)
	for i, v := range b {
		r.prefix[i] = idLetters[int(v)%len(idLetters)]
	}
	return &r
}

// next is the prefix and the counter in base 52, 16 letters (52^16 > 2^64).
func (r *requestIDs) next() string {
	var out [32]byte
	copy(out[:], r.prefix[:])
	v := r.n.Add(1)
	for i := len(out) - 1; i >= len(r.prefix); i-- {
		out[i] = idLetters[v%uint64(len(idLetters))]
		v /= uint64(len(idLetters))
	}
	return string(out[:])
}

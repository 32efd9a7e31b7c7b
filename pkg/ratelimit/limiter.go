package ratelimit

import (
	"context"
	"encoding/json"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Subject carries instances' spending to each other. It is plain NATS,
// not JetStream: spending reports are only useful for a moment.
const Subject = streams.RateLimitGossip

// LimitsSource returns the limits in force for a tenant (the CONTROL
// catalog in production).
type LimitsSource func(tenant string) Limits

// Limiter holds the token buckets of one instance. Allow spends locally,
// without any network round trip; every GossipEvery the instance publishes
// what it spent and subtracts what the others spent, so that n instances
// together admit the configured rate (within one gossip interval's worth of
// over-admission) rather than n times it.
type Limiter struct {
	nc          *nats.Conn
	id          string
	limits      LimitsSource
	log         *slog.Logger
	now         func() time.Time
	gossipEvery time.Duration

	mu      sync.Mutex
	buckets map[bucketKey]*bucket
	spent   map[bucketKey]float64 // since the last report
}

type bucketKey struct {
	Class  Class  `json:"c"`
	Tenant string `json:"t"`
	Key    string `json:"k,omitempty"` // "" is the tenant-wide bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

type report struct {
	From  string  `json:"from"`
	Spent []spend `json:"spent"`
}

type spend struct {
	bucketKey
	N float64 `json:"n"`
}

// New returns a limiter. nc may be nil for a single instance; id must be
// unique per instance.
func New(nc *nats.Conn, id string, limits LimitsSource, log *slog.Logger) *Limiter {
	return &Limiter{
		nc: nc, id: id, limits: limits, log: log, now: time.Now, gossipEvery: 100 * time.Millisecond,
		buckets: map[bucketKey]*bucket{}, spent: map[bucketKey]float64{},
	}
}

// Allow spends n tokens of class from the tenant's bucket and the key's. It
// returns zero if admitted, or how long until the request would be. A cost
// above a bucket's burst is capped at the burst, so a large batch can
// still pass when the bucket is full.
func (l *Limiter) Allow(class Class, tenant, key string, n int) time.Duration {
	tr, kr := l.limits(tenant).For(class)
	if tr.Unlimited() && (kr.Unlimited() || key == "") {
		return 0
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	tk, kk := bucketKey{class, tenant, ""}, bucketKey{class, tenant, key}
	var wait time.Duration
	if !tr.Unlimited() {
		wait = max(wait, l.need(tk, tr, n, now))
	}
	if !kr.Unlimited() && key != "" {
		wait = max(wait, l.need(kk, kr, n, now))
	}
	if wait > 0 {
		return wait
	}
	if !tr.Unlimited() {
		l.take(tk, tr, n)
	}
	if !kr.Unlimited() && key != "" {
		l.take(kk, kr, n)
	}
	return 0
}

// need refills bucket k and returns how long until it holds the cost of n.
func (l *Limiter) need(k bucketKey, r Rate, n int, now time.Time) time.Duration {
	b := l.buckets[k]
	if b == nil {
		b = &bucket{tokens: float64(r.Burst), last: now}
		l.buckets[k] = b
	}
	b.tokens = math.Min(float64(r.Burst), b.tokens+now.Sub(b.last).Seconds()*r.PerSecond)
	b.last = now
	cost := math.Min(float64(n), float64(r.Burst))
	if b.tokens >= cost {
		return 0
	}
	return time.Duration((cost - b.tokens) / r.PerSecond * float64(time.Second))
}

func (l *Limiter) take(k bucketKey, r Rate, n int) {
	cost := math.Min(float64(n), float64(r.Burst))
	l.buckets[k].tokens -= cost
	l.spent[k] += cost
}

// Tokens returns what bucket (class, tenant, key) holds now; key "" is the
// tenant-wide bucket. For tests and diagnostics.
func (l *Limiter) Tokens(class Class, tenant, key string) float64 {
	tr, kr := l.limits(tenant).For(class)
	r := tr
	if key != "" {
		r = kr
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	k := bucketKey{class, tenant, key}
	if l.buckets[k] == nil {
		return float64(r.Burst)
	}
	l.need(k, r, 0, l.now())
	return l.buckets[k].tokens
}

// Component runs the limiter's exchange as a worker of a process.
func (l *Limiter) Component() daemon.Component {
	return daemon.Component{Name: "ratelimit", Workers: []daemon.Worker{l.Run}}
}

// Run exchanges spending with the other instances until ctx ends. Without
// a NATS connection it only evicts idle buckets.
func (l *Limiter) Run(ctx context.Context) error {
	if l.nc != nil {
		sub, err := l.nc.Subscribe(Subject, l.absorb)
		if err != nil {
			return err
		}
		defer func() { _ = sub.Unsubscribe() }()
	}
	tick := time.NewTicker(l.gossipEvery)
	defer tick.Stop()
	evict := time.NewTicker(time.Minute)
	defer evict.Stop()
	for {
		select {
		case <-ctx.Done():
			l.Flush()
			return nil
		case <-tick.C:
			l.Flush()
		case <-evict.C:
			l.evictIdle()
		}
	}
}

// Flush reports this instance's spending since the last report now.
func (l *Limiter) Flush() {
	l.mu.Lock()
	if len(l.spent) == 0 || l.nc == nil {
		l.mu.Unlock()
		return
	}
	r := report{From: l.id, Spent: make([]spend, 0, len(l.spent))}
	for k, n := range l.spent {
		r.Spent = append(r.Spent, spend{k, n})
	}
	clear(l.spent)
	l.mu.Unlock()
	data, _ := json.Marshal(r)
	if err := l.nc.Publish(Subject, data); err != nil {
		l.log.Warn("ratelimit: report spending", slog.String("error", err.Error()))
	}
}

// absorb subtracts another instance's spending from the local buckets;
// a bucket may go below zero, which delays admission until the refill has
// paid the debt.
func (l *Limiter) absorb(m *nats.Msg) {
	var r report
	if err := json.Unmarshal(m.Data, &r); err != nil || r.From == l.id {
		return
	}
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range r.Spent {
		tr, kr := l.limits(s.Tenant).For(s.Class)
		rate := tr
		if s.Key != "" {
			rate = kr
		}
		if rate.Unlimited() || s.N <= 0 {
			continue
		}
		l.need(s.bucketKey, rate, 0, now)
		l.buckets[s.bucketKey].tokens = math.Max(l.buckets[s.bucketKey].tokens-s.N, -float64(rate.Burst))
	}
}

// evictIdle forgets buckets that have refilled completely: they are
// indistinguishable from new ones.
func (l *Limiter) evictIdle() {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	for k, b := range l.buckets {
		tr, kr := l.limits(k.Tenant).For(k.Class)
		r := tr
		if k.Key != "" {
			r = kr
		}
		if r.Unlimited() || b.tokens+now.Sub(b.last).Seconds()*r.PerSecond >= float64(r.Burst) {
			delete(l.buckets, k)
		}
	}
}

// Take admits n units of class for the request's principal or returns the
// 429 error (with Retry-After) to send. Handlers whose cost is known only
// after parsing (batches) call it directly.
func (l *Limiter) Take(c echo.Context, class Class, n int) error {
	if l == nil {
		return nil
	}
	p := httpkit.Principal(c)
	key := p.KeyID
	if key == "" {
		key = "member:" + p.Member
	}
	if wait := l.Allow(class, p.Tenant, key, n); wait > 0 {
		c.Response().Header().Set("X-RateLimit-Class", string(class))
		return apperr.RateLimited(wait)
	}
	return nil
}

// Middleware admits each request at a cost of one unit of class.
func (l *Limiter) Middleware(class Class) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := l.Take(c, class, 1); err != nil {
				return err
			}
			return next(c)
		}
	}
}

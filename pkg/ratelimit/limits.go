// Package ratelimit enforces per-tenant and per-key token buckets on the
// hot write paths (ingest, decisions), shared by every instance of a
// service: each instance spends from its local buckets and tells the others
// what it spent, so the sum over instances stays within the limit.
package ratelimit

import (
	"fmt"
	"time"
)

// Rate is a token bucket: PerSecond tokens refill each second, up to Burst.
// A zero PerSecond means unlimited.
type Rate struct {
	PerSecond float64 `json:"perSecond"`
	Burst     int     `json:"burst"`
}

// Unlimited reports whether the rate imposes no limit.
func (r Rate) Unlimited() bool { return r.PerSecond <= 0 }

func (r Rate) validate(name string) error {
	if r.PerSecond < 0 || r.Burst < 0 {
		return fmt.Errorf("%s: perSecond and burst must not be negative", name)
	}
	if r.PerSecond > 1e7 || r.Burst > 1e8 {
		return fmt.Errorf("%s: perSecond is at most 10,000,000 and burst at most 100,000,000", name)
	}
	if r.PerSecond > 0 && r.Burst < 1 {
		return fmt.Errorf("%s: burst must be at least 1 when perSecond is set", name)
	}
	return nil
}

// Class is what a limit applies to.
type Class string

// Classes of limited work.
const (
	// Ingest counts events (a batch of 100 costs 100).
	Ingest Class = "ingest"
	// Decisions counts evaluation requests.
	Decisions Class = "decisions"
)

// Limits are a tenant's rate limits: each class has a bucket for the whole
// tenant and one for each key.
type Limits struct {
	Tenant          string    `json:"tenant,omitempty"`
	Ingest          Rate      `json:"ingest"`
	IngestPerKey    Rate      `json:"ingestPerKey"`
	Decisions       Rate      `json:"decisions"`
	DecisionsPerKey Rate      `json:"decisionsPerKey"`
	UpdatedAt       time.Time `json:"updatedAt,omitempty"`
	By              string    `json:"by,omitempty"`
}

// DefaultLimits are generous enough for a busy deployment and still stop a
// runaway agent loop from flooding the streams.
var DefaultLimits = Limits{
	Ingest:          Rate{PerSecond: 50000, Burst: 100000},
	IngestPerKey:    Rate{PerSecond: 20000, Burst: 40000},
	Decisions:       Rate{PerSecond: 10000, Burst: 20000},
	DecisionsPerKey: Rate{PerSecond: 5000, Burst: 10000},
}

// Validate checks every rate.
func (l Limits) Validate() error {
	for name, r := range map[string]Rate{"ingest": l.Ingest, "ingestPerKey": l.IngestPerKey, "decisions": l.Decisions, "decisionsPerKey": l.DecisionsPerKey} {
		if err := r.validate(name); err != nil {
			return err
		}
	}
	return nil
}

// For returns the tenant-wide and per-key rates of class c.
func (l Limits) For(c Class) (tenant, perKey Rate) {
	if c == Decisions {
		return l.Decisions, l.DecisionsPerKey
	}
	return l.Ingest, l.IngestPerKey
}

// rates names each of l's rates, in a stable order, as its JSON field.
func (l *Limits) rates() []struct {
	name string
	r    *Rate
} {
	return []struct {
		name string
		r    *Rate
	}{{"ingest", &l.Ingest}, {"ingestPerKey", &l.IngestPerKey}, {"decisions", &l.Decisions}, {"decisionsPerKey", &l.DecisionsPerKey}}
}

// Violation is one rate of a tenant's limits that lies outside the
// deployment's bounds.
type Violation struct {
	Field, Message string
}

// Beyond lists the rates of l that exceed ceiling, the deployment's own
// limits: a tenant may lower a limited rate but neither raise it nor
// remove it (perSecond 0). A rate the deployment leaves unlimited is
// unbounded for tenants too.
func (l Limits) Beyond(ceiling Limits) []Violation {
	var out []Violation
	mine, top := l.rates(), ceiling.rates()
	for i := range mine {
		r, c := *mine[i].r, *top[i].r
		switch {
		case c.Unlimited():
		case r.Unlimited():
			out = append(out, Violation{mine[i].name + ".perSecond", fmt.Sprintf("must be between 0 (exclusive) and the deployment's %g: a tenant cannot remove a limit", c.PerSecond)})
		case r.PerSecond > c.PerSecond || r.Burst > c.Burst:
			out = append(out, Violation{mine[i].name, fmt.Sprintf("at most %g per second with a burst of %d (the deployment's limit)", c.PerSecond, c.Burst)})
		}
	}
	return out
}

// Clamp returns l with every rate brought within ceiling, so that limits
// stored before the bounds existed (or under a since-lowered ceiling)
// never admit more than the deployment allows.
func (l Limits) Clamp(ceiling Limits) Limits {
	mine, top := l.rates(), ceiling.rates()
	for i := range mine {
		r, c := mine[i].r, *top[i].r
		if c.Unlimited() {
			continue
		}
		if r.Unlimited() {
			*r = c
			continue
		}
		r.PerSecond, r.Burst = min(r.PerSecond, c.PerSecond), min(r.Burst, c.Burst)
	}
	return l
}

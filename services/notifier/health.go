package notifier

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/streams"
)

// Health is a channel's delivery health, as recorded on NOTIFIER when it
// flips: unhealthy after UnhealthyAfter consecutive failed attempts,
// healthy again on the first success.
type Health struct {
	Status              string    `json:"status"` // healthy | unhealthy | unknown
	ConsecutiveFailures int       `json:"consecutiveFailures"`
	Since               time.Time `json:"since,omitzero"`
}

type channelHealth struct {
	loaded    bool
	fails     int
	unhealthy bool
}

// healthTracker counts consecutive failures per channel in memory and
// records transitions; it loads a channel's recorded state on first use,
// so a restart does not forget that a channel is unhealthy.
type healthTracker struct {
	s  *Service
	mu sync.Mutex
	by map[string]*channelHealth
}

func newHealthTracker(s *Service) *healthTracker {
	return &healthTracker{s: s, by: map[string]*channelHealth{}}
}

func (h *healthTracker) observe(ctx context.Context, ch Channel, ok bool) {
	key := ch.Tenant + "/" + ch.ID
	h.mu.Lock()
	st := h.by[key]
	if st == nil {
		st = &channelHealth{}
		h.by[key] = st
	}
	loaded := st.loaded
	h.mu.Unlock()
	if !loaded {
		if rec, err := h.s.health(ctx, ch.Tenant, ch.ID); err == nil {
			h.mu.Lock()
			if !st.loaded {
				st.loaded, st.unhealthy, st.fails = true, rec.Status == "unhealthy", rec.ConsecutiveFailures
			}
			h.mu.Unlock()
		}
	}
	h.mu.Lock()
	var flip *Health
	if ok {
		st.fails = 0
		if st.unhealthy {
			st.unhealthy = false
			flip = &Health{Status: "healthy", Since: time.Now().UTC()}
		}
	} else {
		st.fails++
		if !st.unhealthy && st.fails >= h.s.cfg.UnhealthyAfter {
			st.unhealthy = true
			flip = &Health{Status: "unhealthy", ConsecutiveFailures: st.fails, Since: time.Now().UTC()}
		}
	}
	h.mu.Unlock()
	if flip == nil {
		return
	}
	data, _ := json.Marshal(flip)
	msg := nats.NewMsg(streams.ChannelHealthSubject(ch.Tenant, ch.ID))
	msg.Data = data
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if _, err := h.s.deps.JS.PublishMsg(pctx, msg); err != nil {
		h.s.log.Warn("record channel health", slog.String("channel", ch.ID), slog.String("error", err.Error()))
		return
	}
	h.s.log.Info("channel health changed", slog.String("tenant", ch.Tenant), slog.String("channel", ch.ID), slog.String("status", flip.Status))
}

// health reads a channel's recorded health ("unknown" before any flip:
// a channel is presumed healthy until it keeps failing).
func (s *Service) health(ctx context.Context, tenant, id string) (Health, error) {
	st, err := s.deps.JS.Stream(ctx, streams.Notifier)
	if err != nil {
		return Health{Status: "unknown"}, err
	}
	msg, err := st.GetLastMsgForSubject(ctx, streams.ChannelHealthSubject(tenant, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Health{Status: "healthy"}, nil
	}
	if err != nil {
		return Health{Status: "unknown"}, err
	}
	var h Health
	if err := json.Unmarshal(msg.Data, &h); err != nil {
		return Health{Status: "unknown"}, err
	}
	return h, nil
}

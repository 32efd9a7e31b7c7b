package natsx

import (
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Held is every message a consumer process has received and not yet
// settled (acked, terminated or naked), with the last time the server
// heard about it. KeepAlive refreshes them, so a consumer can use a short
// AckWait, which makes redelivery after a crash quick, without a slow
// write or an outage ever letting a held message reach it (and be
// processed twice).
type Held struct {
	mu   sync.Mutex
	last map[jetstream.Msg]time.Time
}

// NewHeld returns an empty set.
func NewHeld() *Held { return &Held{last: map[jetstream.Msg]time.Time{}} }

// Add records a message just received.
func (h *Held) Add(m jetstream.Msg) {
	now := time.Now()
	h.mu.Lock()
	h.last[m] = now
	h.mu.Unlock()
}

// Replace holds m's stand-in d (a Detached) in its place, as last heard
// of when m was; the caller settles d from now on.
func (h *Held) Replace(m, d jetstream.Msg) {
	h.mu.Lock()
	if t, ok := h.last[m]; ok {
		delete(h.last, m)
		h.last[d] = t
	}
	h.mu.Unlock()
}

// Settled forgets a message that was acked, terminated or naked.
func (h *Held) Settled(m jetstream.Msg) {
	h.mu.Lock()
	delete(h.last, m)
	h.mu.Unlock()
}

// Len is how many messages are held.
func (h *Held) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.last)
}

// All returns every held message.
func (h *Held) All() []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := make([]jetstream.Msg, 0, len(h.last))
	for m := range h.last {
		out = append(out, m)
	}
	return out
}

// stale returns the messages last heard of before cutoff and marks them
// heard of now (the caller is about to send them an in-progress ack).
func (h *Held) stale(cutoff, now time.Time) []jetstream.Msg {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []jetstream.Msg
	for m, t := range h.last {
		if t.Before(cutoff) {
			out = append(out, m)
			h.last[m] = now
		}
	}
	return out
}

// KeepAlive sends an in-progress ack, every tick of every, for each held
// message that has gone a tick unheard, until stop is closed; sent is
// called for each one the server was sent. Use KeepAliveEvery for every.
func (h *Held) KeepAlive(stop <-chan struct{}, every time.Duration, sent func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			for _, m := range h.stale(now.Add(-every), now) {
				if err := m.InProgress(); err == nil && sent != nil {
					sent()
				}
			}
		}
	}
}

// KeepAliveEvery is the keep-alive tick for a consumer with the given
// AckWait (the server's default of 30 s when zero): a quarter of it, so a
// held message is refreshed before half its AckWait has passed.
func KeepAliveEvery(ackWait time.Duration) time.Duration {
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	return max(ackWait/4, 10*time.Millisecond)
}

package control

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/vigilhq/vigil/pkg/streams"
)

// Unknown API key ids. A key created on another instance a moment ago is
// not yet in this catalog, so a miss must catch up with CONTROL before it
// answers 401; but a forged key (any id with a valid checksum) must not
// cost a JetStream request each time. Two bounds:
//
//   - missPace: the stream's last sequence is read at most once per
//     missPace, by one caller at a time; every miss that arrived before
//     that read started shares it. A burst of forged ids costs one read
//     per missPace, not one per request; a real key used elsewhere first
//     waits at most that long.
//   - the negative cache: an id still unknown after catching up is
//     remembered for missTTL (at most maxMisses ids), so repeating it
//     costs nothing. Ids are 64 random bits minted by the server, so no
//     key created later can take an id remembered here.
const (
	missPace  = 50 * time.Millisecond
	missTTL   = time.Minute
	maxMisses = 10000
)

type misses struct {
	read chan struct{} // one stream read at a time (a semaphore)

	mu     sync.Mutex
	seq    uint64    // CONTROL's last sequence at the latest read
	readAt time.Time // when that read started
	ids    map[string]time.Time
}

func newMisses() *misses {
	return &misses{read: make(chan struct{}, 1), ids: map[string]time.Time{}}
}

// known reports whether id was recently found unknown after a catch-up.
func (m *misses) known(id string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.ids[id]
	if ok && now.Sub(at) > missTTL {
		delete(m.ids, id)
		return false
	}
	return ok
}

// remember records an unknown id, dropping expired entries (or, if none
// expired, an arbitrary one) when full.
func (m *misses) remember(id string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.ids) >= maxMisses {
		for k, at := range m.ids {
			if now.Sub(at) > missTTL {
				delete(m.ids, k)
			}
		}
		for k := range m.ids {
			if len(m.ids) < maxMisses {
				break
			}
			delete(m.ids, k)
		}
	}
	m.ids[id] = now
}

// MissesRemembered returns how many unknown key ids the catalog currently
// remembers (bounded by maxMisses).
func (c *Catalog) MissesRemembered() int {
	c.misses.mu.Lock()
	defer c.misses.mu.Unlock()
	return len(c.misses.ids)
}

// catchUpSince waits until the catalog has applied everything CONTROL held
// at some moment after since, reading the stream's last sequence at most
// once per missPace across all callers.
func (c *Catalog) catchUpSince(ctx context.Context, since time.Time) error {
	m := c.misses
	select {
	case m.read <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	m.mu.Lock()
	seq, readAt := m.seq, m.readAt
	m.mu.Unlock()
	if !readAt.Before(since) {
		// A read that started after this miss arrived already covers it.
		<-m.read
		return c.WaitFor(ctx, seq)
	}
	if wait := time.Until(readAt.Add(missPace)); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			<-m.read
			return ctx.Err()
		}
	}
	start := time.Now()
	s, err := c.js.Stream(ctx, streams.Control)
	if err != nil {
		<-m.read
		return fmt.Errorf("catalog catch-up: %w", err)
	}
	seq = s.CachedInfo().State.LastSeq
	m.mu.Lock()
	m.seq, m.readAt = seq, start
	m.mu.Unlock()
	<-m.read
	return c.WaitFor(ctx, seq)
}

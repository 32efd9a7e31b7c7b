package vigil

import (
	"sync"
	"time"
)

// BreakerMode is what a call does while the circuit breaker is open.
type BreakerMode int

const (
	// FailClosed (the default) refuses the call with ErrBreakerOpen: the
	// guarded action does not run.
	FailClosed BreakerMode = iota
	// FailOpen lets the guarded action run unchecked; the Decision says
	// FailedOpen. Choose it per call site, for actions whose harm is
	// smaller than that of the agent stopping.
	FailOpen
)

// breaker is a consecutive-failure circuit breaker: failures in a row
// open it; after cooldown one probe is let through (half-open), whose
// success closes it and whose failure opens it again.
type breaker struct {
	failures int
	cooldown time.Duration
	now      func() time.Time

	mu       sync.Mutex
	count    int
	openedAt time.Time
	open     bool
	probing  bool
}

func newBreaker(failures int, cooldown time.Duration) *breaker {
	return &breaker{failures: failures, cooldown: cooldown, now: time.Now}
}

// allow says whether a call may go out now. A true answer in the
// half-open state makes the caller the probe: it must call done.
func (b *breaker) allow() bool {
	if b.failures <= 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return true
	}
	if b.probing || b.now().Sub(b.openedAt) < b.cooldown {
		return false
	}
	b.probing = true
	return true
}

// result records how a call that allow admitted ended: ok (Vigil
// answered), failed (it could not be reached or kept failing), or
// neither (the caller gave up: the probe slot is freed).
type result int

const (
	resultNeutral result = iota
	resultOK
	resultFailed
)

func (b *breaker) done(r result) {
	if b.failures <= 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.probing = false
	switch r {
	case resultOK:
		b.count, b.open = 0, false
	case resultFailed:
		b.count++
		if b.open || b.count >= b.failures {
			b.open, b.openedAt = true, b.now()
		}
	}
}

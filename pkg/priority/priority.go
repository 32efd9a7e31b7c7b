// Package priority lets deferrable background work give way to requests a
// caller is waiting on, within one process.
//
// Every decision is recorded on POLICY and then fanned out to several
// consumers (ledger, projections, risk, guardian intake, notifier) whose
// CPU per decision is larger than the decision's own. Go has no goroutine
// priorities: a decision whose JetStream ack has arrived waits in a run
// queue behind whatever consumers are runnable. A Gate keeps count of the
// foreground requests in flight; a background unit (decoding or preparing
// one message) asks Yield first, which while any is in flight sends the
// consumer's goroutine to the back of the run queue, so the requests
// ready to run go before it. Nothing waits on a slot or a timer: the
// background unit always runs right after, so backlog drains at the rate
// it did (no lag can grow from the gate itself) and, with no request in
// flight, Yield costs one atomic load.
//
// A first version bounded background concurrency with a semaphore; it made
// decisions slower (p50 and p99 both) in alternated runs: every hand-off
// of the semaphore readies the waiting consumer into the P's "run next"
// slot, ahead of the decision goroutines it was meant to let through.
package priority

import (
	"runtime"
	"sync/atomic"
)

// Gate admits background work around foreground requests. The zero value
// is ready to use; a nil *Gate never yields, so services wired without one
// behave as before.
type Gate struct {
	fg atomic.Int64
	// yielded counts background units that gave way (tests, the bench).
	yielded atomic.Uint64
}

// New returns a gate.
func New() *Gate { return &Gate{} }

// Foreground marks a request a caller waits on as in flight until the
// returned func is called.
func (g *Gate) Foreground() (done func()) {
	if g == nil {
		return func() {}
	}
	g.fg.Add(1)
	return func() { g.fg.Add(-1) }
}

// InFlight reports how many foreground requests are in flight.
func (g *Gate) InFlight() int64 {
	if g == nil {
		return 0
	}
	return g.fg.Load()
}

// Yield is called before one unit of deferrable CPU work (decoding and
// preparing a message). With a foreground request in flight it yields the
// processor once, to the back of the run queue; otherwise it returns at
// once. It never blocks.
func (g *Gate) Yield() {
	if g == nil || g.fg.Load() == 0 {
		return
	}
	g.yielded.Add(1)
	runtime.Gosched()
}

// Yielded counts the background units that gave way.
func (g *Gate) Yielded() uint64 {
	if g == nil {
		return 0
	}
	return g.yielded.Load()
}

package natsx

import (
	"testing"
	"time"
)

// Replace puts the stand-in where the message was, as last heard of when
// the message was: the keep-alive refreshes it on the message's schedule.
func TestHeldReplaceKeepsTheTime(t *testing.T) {
	h := NewHeld()
	m, d, other := &Detached{reply: "m"}, &Detached{reply: "d"}, &Detached{reply: "o"}
	h.Add(m)
	at := h.last[m]
	h.Replace(m, d)
	h.Replace(other, &Detached{}) // not held: nothing to replace
	if all := h.All(); len(all) != 1 || all[0] != d || h.last[d] != at {
		t.Fatalf("after Replace: %v", h.last)
	}
	if stale := h.stale(at.Add(time.Nanosecond), at.Add(time.Second)); len(stale) != 1 || stale[0] != d {
		t.Fatalf("stale: %v", stale)
	}
	h.Settled(d)
	if h.Len() != 0 {
		t.Fatalf("after Settled: %d held", h.Len())
	}
}

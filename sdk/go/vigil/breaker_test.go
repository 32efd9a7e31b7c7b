package vigil

import (
	"testing"
	"time"
)

// TestBreaker walks the breaker through closed → open → half-open with
// one probe → closed, and a failed probe back to open.
func TestBreaker(t *testing.T) {
	now := time.Unix(0, 0)
	b := newBreaker(2, time.Second)
	b.now = func() time.Time { return now }
	steps := []struct {
		name    string
		advance time.Duration
		allow   bool
		result  result
	}{
		{"closed", 0, true, resultFailed},
		{"one failure stays closed", 0, true, resultOK},
		{"a success resets the count", 0, true, resultFailed},
		{"second in a row", 0, true, resultFailed},
		{"open", 0, false, 0},
		{"still open before the cooldown", 999 * time.Millisecond, false, 0},
		{"half-open: the probe", time.Millisecond, true, -1},
		{"half-open: others wait for the probe", 0, false, 0},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if got := b.allow(); got != s.allow {
			t.Fatalf("%s: allow %v, want %v", s.name, got, s.allow)
		}
		if s.allow && s.result >= 0 {
			b.done(s.result)
		}
	}
	b.done(resultFailed) // the probe failed: open again, for a new cooldown
	if b.allow() {
		t.Fatal("after a failed probe: allowed")
	}
	now = now.Add(time.Second)
	if !b.allow() {
		t.Fatal("after the second cooldown: no probe")
	}
	b.done(resultNeutral) // the prober gave up: the slot is free again
	if !b.allow() {
		t.Fatal("after a neutral probe: no probe")
	}
	b.done(resultOK)
	if !b.allow() || !b.allow() {
		t.Fatal("after a good probe: not closed")
	}
}

func TestBreakerDisabled(t *testing.T) {
	b := newBreaker(0, time.Second)
	for range 10 {
		if !b.allow() {
			t.Fatal("a disabled breaker refused")
		}
		b.done(resultFailed)
	}
}

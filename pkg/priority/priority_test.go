package priority

import "testing"

func TestNilGateNeverYields(t *testing.T) {
	var g *Gate
	done := g.Foreground()
	g.Yield()
	done()
	if g.InFlight() != 0 || g.Yielded() != 0 {
		t.Fatal("a nil gate counts nothing")
	}
}

func TestYieldOnlyWhileForegroundInFlight(t *testing.T) {
	g := New()
	g.Yield()
	if n := g.Yielded(); n != 0 {
		t.Fatalf("yielded %d times with no foreground in flight", n)
	}
	done1, done2 := g.Foreground(), g.Foreground()
	if g.InFlight() != 2 {
		t.Fatalf("in flight %d, want 2", g.InFlight())
	}
	g.Yield()
	done1()
	g.Yield()
	if n := g.Yielded(); n != 2 {
		t.Fatalf("yielded %d, want 2", n)
	}
	done2()
	g.Yield()
	if g.InFlight() != 0 || g.Yielded() != 2 {
		t.Fatalf("in flight %d, yielded %d after every request ended; want 0, 2", g.InFlight(), g.Yielded())
	}
}

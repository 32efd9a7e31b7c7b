package httpkit

import (
	"strings"
	"sync"
	"testing"
)

// TestRequestIDs: ids keep echo's shape (32 ASCII letters), share the
// process's prefix, and are unique across concurrent callers and across
// generators (processes).
func TestRequestIDs(t *testing.T) {
	a, b := newRequestIDs(), newRequestIDs()
	if a.prefix == b.prefix {
		t.Fatalf("two generators drew the same prefix %q", a.prefix[:])
	}
	seen := map[string]bool{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5000 {
				id := a.next()
				mu.Lock()
				seen[id] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(seen) != 20000 {
		t.Fatalf("%d distinct ids of 20000", len(seen))
	}
	for id := range seen {
		if len(id) != 32 || strings.Trim(id, idLetters) != "" || id[:16] != string(a.prefix[:]) {
			t.Fatalf("id %q: want 32 letters starting with %q", id, a.prefix[:])
		}
	}
}

package natsx

import (
	"testing"
	"time"
)

// SetAttemptTimeout shortens a retried call's attempts for one test, so
// that waiting on a cluster without a leader takes seconds, not minutes.
func SetAttemptTimeout(t testing.TB, d time.Duration) {
	old := attemptTimeout
	attemptTimeout = d
	t.Cleanup(func() { attemptTimeout = old })
}

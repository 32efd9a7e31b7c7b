// Package testkit holds what tests across the workspace share to wait on
// real systems (embedded NATS, ClickHouse, HTTP servers) without fixed
// sleeps.
package testkit

import (
	"testing"
	"time"
)

// Limit bounds every Eventually: the conditions tests wait on normally
// hold within a second, so reaching it means the behaviour is broken, not
// slow.
const Limit = 30 * time.Second

// pollEvery is short enough to add little to a test's run time and long
// enough not to load the shared machine.
const pollEvery = 20 * time.Millisecond

// Eventually polls cond until it reports true and fails the test after
// Limit, quoting what it waited for and the last state cond described.
func Eventually(t testing.TB, what string, cond func() (bool, string)) {
	t.Helper()
	EventuallyWithin(t, Limit, what, cond)
}

// EventuallyWithin is Eventually with its own limit, for conditions that
// legitimately take longer (a retry schedule, a large replay).
func EventuallyWithin(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", within, what, state)
		}
		time.Sleep(pollEvery)
	}
}

// Holds adapts a plain predicate to Eventually's condition.
func Holds(ok func() bool) func() (bool, string) {
	return func() (bool, string) { return ok(), "not yet" }
}

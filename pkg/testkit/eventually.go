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

// Condition is what Eventually waits on: a predicate, or a predicate that
// also describes the state it saw (quoted when the wait fails).
type Condition interface {
	func() bool | func() (bool, string)
}

// Eventually polls cond until it reports true and fails the test after
// Limit, quoting what it waited for and the last state cond described.
func Eventually[C Condition](t testing.TB, what string, cond C) {
	t.Helper()
	EventuallyWithin(t, Limit, what, cond)
}

// EventuallyWithin is Eventually with its own limit, for conditions that
// legitimately take longer (a retry schedule, a large replay) or must hold
// sooner (a bound the behaviour promises).
func EventuallyWithin[C Condition](t testing.TB, within time.Duration, what string, cond C) {
	t.Helper()
	check := func() (bool, string) {
		switch c := any(cond).(type) {
		case func() bool:
			return c(), "not yet"
		case func() (bool, string):
			return c()
		}
		panic("unreachable: Condition has two forms")
	}
	deadline := time.Now().Add(within)
	for {
		ok, state := check()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state: %s", within, what, state)
		}
		time.Sleep(pollEvery)
	}
}

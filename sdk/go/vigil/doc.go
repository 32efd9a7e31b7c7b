// Package vigil is the Go SDK of Vigil, the governance plane for AI
// agents: an agent reports what it does (Report, batched in the
// background) and asks before it acts (Guard, or GuardFunc around a tool
// function).
//
// Guard asks POST /v1/decisions.evaluate. allow and warn proceed; block
// is a *BlockedError carrying the reason codes; require_approval waits on
// the decision's long-poll (bounded by WithApprovalTimeout) until a person
// decides, then redeems the approval with the arguments about to run, so
// that an approval is used once and only for the arguments a person saw.
//
// Every write carries an Idempotency-Key, reused by its retries. Requests
// answered 429, 502, 503 or 504, or lost on the network, are retried with
// jittered exponential backoff (3 retries by default), honouring
// Retry-After. A circuit breaker stops asking a Vigil that keeps failing;
// while it is open a call fails closed with ErrBreakerOpen unless its
// call site chose OnBreakerOpen(FailOpen).
//
// The package depends on the standard library only.
package vigil

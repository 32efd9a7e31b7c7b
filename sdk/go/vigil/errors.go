package vigil

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Sentinel errors; match them with errors.Is. The typed errors below
// carry the details (errors.As).
var (
	// ErrBlocked: a policy blocked the action (a *BlockedError).
	ErrBlocked = errors.New("vigil: action blocked")
	// ErrApprovalRejected: a person rejected the action, or its approval
	// expired as a rejection (an *ApprovalError).
	ErrApprovalRejected = errors.New("vigil: approval rejected")
	// ErrApprovalTimeout: nobody decided within the client's approval
	// timeout; the action did not run (an *ApprovalError).
	ErrApprovalTimeout = errors.New("vigil: approval still pending")
	// ErrArgumentsMismatch: the arguments about to run differ from the
	// approved ones (a *RedeemError). Nothing was consumed.
	ErrArgumentsMismatch = errors.New("vigil: arguments differ from the approved ones")
	// ErrAlreadyRedeemed: the approval was used already (a *RedeemError).
	ErrAlreadyRedeemed = errors.New("vigil: approval already redeemed")
	// ErrNotApproved: the decision is not an approved require_approval
	// (a *RedeemError).
	ErrNotApproved = errors.New("vigil: decision not approved")
	// ErrBreakerOpen: the circuit breaker is open and the call site fails
	// closed; no request was sent.
	ErrBreakerOpen = errors.New("vigil: circuit breaker open")
	// ErrUnavailable: Vigil could not be reached, or kept answering
	// 429/502/503/504, through every retry (an *UnavailableError).
	ErrUnavailable = errors.New("vigil: unavailable")
	// ErrQueueFull: Report under DropWhenFull found the buffer full; the
	// event was dropped.
	ErrQueueFull = errors.New("vigil: report buffer full")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("vigil: client closed")
)

// BlockedError is a block decision. errors.Is(err, ErrBlocked) holds.
type BlockedError struct{ Decision *Decision }

func (e *BlockedError) Error() string {
	return fmt.Sprintf("vigil: action blocked (%s, decision %s)", strings.Join(e.Decision.ReasonCodes, ", "), e.Decision.ID)
}

// Is reports ErrBlocked.
func (e *BlockedError) Is(target error) bool { return target == ErrBlocked }

// ApprovalError is a require_approval that did not end approved: Status
// is "rejected" (errors.Is ErrApprovalRejected) or "timeout" (the client
// stopped waiting; errors.Is ErrApprovalTimeout).
type ApprovalError struct {
	Decision *Decision
	Status   string
}

func (e *ApprovalError) Error() string {
	if e.Status == "timeout" {
		return fmt.Sprintf("vigil: approval of decision %s still pending after the client's approval timeout", e.Decision.ID)
	}
	return fmt.Sprintf("vigil: approval of decision %s %s", e.Decision.ID, e.Status)
}

// Is reports ErrApprovalRejected or ErrApprovalTimeout.
func (e *ApprovalError) Is(target error) bool {
	if e.Status == "timeout" {
		return target == ErrApprovalTimeout
	}
	return target == ErrApprovalRejected
}

// RedeemError is a refused redemption; Code is Vigil's detail code
// (arguments_mismatch, already_redeemed, not_approved).
type RedeemError struct {
	Decision *Decision
	Code     string
	Err      *APIError
}

func (e *RedeemError) Error() string {
	return fmt.Sprintf("vigil: redeem decision %s refused: %s", e.Decision.ID, e.Code)
}

// Is reports the sentinel of Code.
func (e *RedeemError) Is(target error) bool {
	switch e.Code {
	case "arguments_mismatch":
		return target == ErrArgumentsMismatch
	case "already_redeemed":
		return target == ErrAlreadyRedeemed
	case "not_approved":
		return target == ErrNotApproved
	}
	return false
}

// Unwrap returns the HTTP answer.
func (e *RedeemError) Unwrap() error { return e.Err }

// APIError is an answer of Vigil outside 2xx, in its error envelope.
type APIError struct {
	Status int
	// Code is the envelope's error.code (VALIDATION_ERROR, FORBIDDEN, …).
	Code string
	// Detail is the first details[].code, when there is one.
	Detail    string
	Message   string
	RequestID string
	// RetryAfter is the answer's Retry-After, or zero.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	s := fmt.Sprintf("vigil: HTTP %d %s", e.Status, e.Code)
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// UnavailableError is what the last attempt of a request met after every
// retry. errors.Is(err, ErrUnavailable) holds.
type UnavailableError struct {
	Attempts int
	// Err is the last attempt's: an *APIError or a network error.
	Err error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("vigil: unavailable after %d attempts: %v", e.Attempts, e.Err)
}

// Is reports ErrUnavailable.
func (e *UnavailableError) Is(target error) bool { return target == ErrUnavailable }

// Unwrap returns the last attempt's error.
func (e *UnavailableError) Unwrap() error { return e.Err }

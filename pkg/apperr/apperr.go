// Package apperr defines Vigil's typed domain errors. Handlers and services
// return these; one HTTP error handler (pkg/httpkit) maps them to the
// documented envelope, so the mapping from failure to status code lives in
// exactly one place.
package apperr

import (
	"errors"
	"fmt"
	"time"
)

// Kind classifies an error for the transport layer.
type Kind int

// Kinds of error, each with a stable HTTP status and code pair.
const (
	KindInternal Kind = iota
	KindValidation
	KindUnauthenticated
	KindForbidden
	KindNotFound
	KindConflict
	KindTooLarge
	KindRateLimited
	KindUnavailable
)

// FieldError describes one invalid input field. Path uses dotted notation
// ("payload.toolName", "events[3].eventId") so clients can point at it.
type FieldError struct {
	Path    string `json:"path"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (f FieldError) Error() string { return f.Path + ": " + f.Message }

// Error is a classified error. The zero value is not useful; build one with
// the constructors below.
type Error struct {
	Kind    Kind
	Message string
	Details []FieldError
	// RetryAfter is sent as the Retry-After header for rate-limited and
	// unavailable responses when positive.
	RetryAfter time.Duration
	Err        error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// Validation reports invalid input with per-field details.
func Validation(msg string, details ...FieldError) *Error {
	return &Error{Kind: KindValidation, Message: msg, Details: details}
}

// Unauthenticated reports a missing or invalid credential.
func Unauthenticated(msg string) *Error { return &Error{Kind: KindUnauthenticated, Message: msg} }

// Forbidden reports a valid credential that lacks permission.
func Forbidden(msg string) *Error { return &Error{Kind: KindForbidden, Message: msg} }

// NotFound reports an unknown entity. Entities of other tenants are reported
// as not found too, so that their existence does not leak.
func NotFound(format string, args ...any) *Error {
	return &Error{Kind: KindNotFound, Message: fmt.Sprintf(format, args...)}
}

// Conflict reports a write that lost a race or duplicates an existing entity.
func Conflict(format string, args ...any) *Error {
	return &Error{Kind: KindConflict, Message: fmt.Sprintf(format, args...)}
}

// TooLarge reports a request body or item over its size cap.
func TooLarge(msg string) *Error { return &Error{Kind: KindTooLarge, Message: msg} }

// RateLimited reports throttling; retryAfter is advertised to the client.
func RateLimited(retryAfter time.Duration) *Error {
	return &Error{Kind: KindRateLimited, Message: "rate limit exceeded", RetryAfter: retryAfter}
}

// Unavailable reports a transient dependency failure (the broker did not ack,
// ClickHouse is down). Clients should retry after the given delay.
func Unavailable(msg string, retryAfter time.Duration, err error) *Error {
	return &Error{Kind: KindUnavailable, Message: msg, RetryAfter: retryAfter, Err: err}
}

// KindOf returns the kind of err, or KindInternal if err carries none.
func KindOf(err error) Kind {
	var e *Error
	if errors.As(err, &e) {
		return e.Kind
	}
	return KindInternal
}

// Is reports whether err is an *Error of kind k.
func Is(err error, k Kind) bool { return err != nil && KindOf(err) == k }

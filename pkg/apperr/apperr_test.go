package apperr_test

import (
	"errors"
	"fmt"
	"io"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

func TestConstructors(t *testing.T) {
	cause := io.ErrUnexpectedEOF
	cases := []struct {
		err   *apperr.Error
		kind  apperr.Kind
		msg   string
		retry time.Duration
	}{
		{apperr.Validation("bad", apperr.FieldError{Path: "a", Code: "c", Message: "m"}), apperr.KindValidation, "bad", 0},
		{apperr.Unauthenticated("who"), apperr.KindUnauthenticated, "who", 0},
		{apperr.Forbidden("no"), apperr.KindForbidden, "no", 0},
		{apperr.NotFound("agent %q not found", "x"), apperr.KindNotFound, `agent "x" not found`, 0},
		{apperr.Conflict("agent %s exists", "y"), apperr.KindConflict, "agent y exists", 0},
		{apperr.TooLarge("big"), apperr.KindTooLarge, "big", 0},
		{apperr.RateLimited(3 * time.Second), apperr.KindRateLimited, "rate limit exceeded", 3 * time.Second},
		{apperr.Unavailable("down", time.Second, cause), apperr.KindUnavailable, "down: unexpected EOF", time.Second},
	}
	for _, tc := range cases {
		if tc.err.Kind != tc.kind || tc.err.Error() != tc.msg || tc.err.RetryAfter != tc.retry {
			t.Errorf("%#v: want kind %v, message %q, retry %s", tc.err, tc.kind, tc.msg, tc.retry)
		}
		wrapped := fmt.Errorf("handler: %w", tc.err)
		if apperr.KindOf(wrapped) != tc.kind || !apperr.Is(wrapped, tc.kind) {
			t.Errorf("kind of wrapped %v lost", tc.err)
		}
		if tc.kind != apperr.KindInternal && apperr.Is(wrapped, apperr.KindInternal) {
			t.Errorf("%v reported as internal", tc.err)
		}
	}
	if !errors.Is(apperr.Unavailable("down", 0, cause), cause) {
		t.Error("Unavailable does not unwrap to its cause")
	}
	v := apperr.Validation("bad", apperr.FieldError{Path: "events[3].eventId", Code: "required", Message: "eventId is required"})
	if len(v.Details) != 1 || v.Details[0].Error() != "events[3].eventId: eventId is required" {
		t.Errorf("details %v", v.Details)
	}
}

func TestKindOfPlainErrors(t *testing.T) {
	for _, err := range []error{errors.New("boom"), io.EOF, fmt.Errorf("x: %w", io.EOF)} {
		if k := apperr.KindOf(err); k != apperr.KindInternal {
			t.Errorf("KindOf(%v) = %v, want internal", err, k)
		}
	}
	if apperr.Is(nil, apperr.KindInternal) {
		t.Error("Is(nil, internal) = true")
	}
}

package vigil

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for _, c := range []struct {
		in   string
		want time.Duration
	}{
		{"", -1}, {"0", 0}, {"5", 5 * time.Second}, {" 2 ", 2 * time.Second}, {"-1", -1}, {"soon", -1},
		{now.Add(3 * time.Second).Format(http.TimeFormat), 3 * time.Second},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0},
	} {
		if got := parseRetryAfter(c.in, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

// FuzzParseRetryAfter: the header comes from the network; no input
// panics or yields a negative wait other than -1 (absent).
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "0", "120", "Wed, 21 Oct 2015 07:28:00 GMT", "-5", "99999999999999999999"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got := parseRetryAfter(s, time.Now()); got < -1 {
			t.Fatalf("parseRetryAfter(%q) = %v", s, got)
		}
	})
}

// TestDelay: full jitter stays under the exponential ceiling and the
// maximum; Retry-After wins, capped at the maximum.
func TestDelay(t *testing.T) {
	c := &Client{backoff: 100 * time.Millisecond, maxWait: time.Second}
	for attempt := range 8 {
		ceil := min(100*time.Millisecond<<attempt, time.Second)
		for range 200 {
			if d := c.delay(attempt, -1); d < 0 || d > ceil {
				t.Fatalf("attempt %d: delay %v outside [0, %v]", attempt, d, ceil)
			}
		}
	}
	if d := c.delay(0, 700*time.Millisecond); d != 700*time.Millisecond {
		t.Fatalf("Retry-After 700ms: %v", d)
	}
	if d := c.delay(0, time.Hour); d != time.Second {
		t.Fatalf("Retry-After an hour: %v, want the 1s cap", d)
	}
}

func TestAPIErrorEnvelope(t *testing.T) {
	h := http.Header{"Retry-After": []string{"3"}}
	e := apiError(409, h, []byte(`{"error":{"code":"CONFLICT","message":"m","details":[{"path":"","code":"arguments_mismatch"}]},"code":"conflict","message":"m","requestId":"r1"}`))
	if e.Code != "CONFLICT" || e.Detail != "arguments_mismatch" || e.RequestID != "r1" || e.RetryAfter != 3*time.Second {
		t.Fatalf("%+v", e)
	}
	if e := apiError(502, http.Header{}, []byte("<html>bad gateway</html>")); e.Code != "Bad Gateway" {
		t.Fatalf("non-JSON body: %+v", e)
	}
	if e := apiError(400, http.Header{}, []byte(`{"code":"invalid_request","message":"x"}`)); e.Code != "invalid_request" || e.Message != "x" {
		t.Fatalf("top-level envelope: %+v", e)
	}
}

// TestTypedErrors: each typed error matches its sentinel and only it.
func TestTypedErrors(t *testing.T) {
	d := &Decision{ID: "dec_1", Outcome: Block, ReasonCodes: []string{"X"}}
	sentinels := []error{ErrBlocked, ErrApprovalRejected, ErrApprovalTimeout, ErrArgumentsMismatch, ErrAlreadyRedeemed, ErrNotApproved, ErrUnavailable}
	for _, c := range []struct {
		err  error
		want error
	}{
		{&BlockedError{Decision: d}, ErrBlocked},
		{&ApprovalError{Decision: d, Status: "rejected"}, ErrApprovalRejected},
		{&ApprovalError{Decision: d, Status: "timeout"}, ErrApprovalTimeout},
		{&RedeemError{Decision: d, Code: "arguments_mismatch"}, ErrArgumentsMismatch},
		{&RedeemError{Decision: d, Code: "already_redeemed"}, ErrAlreadyRedeemed},
		{&RedeemError{Decision: d, Code: "not_approved"}, ErrNotApproved},
		{&UnavailableError{Attempts: 4, Err: &APIError{Status: 503}}, ErrUnavailable},
	} {
		wrapped := errors.Join(errors.New("context"), c.err)
		for _, s := range sentinels {
			if got := errors.Is(wrapped, s); got != (s == c.want) {
				t.Errorf("%v: errors.Is(%v) = %v", c.err, s, got)
			}
		}
	}
	var ae *APIError
	if !errors.As(&UnavailableError{Attempts: 1, Err: &APIError{Status: 503}}, &ae) || ae.Status != 503 {
		t.Fatal("UnavailableError does not unwrap to its APIError")
	}
}

func TestArgumentsOf(t *testing.T) {
	type refund struct {
		To     string  `json:"to"`
		Amount float64 `json:"amount"`
	}
	m, err := argumentsOf(refund{To: "acct-1", Amount: 50})
	if err != nil || m["to"] != "acct-1" || m["amount"] != 50.0 {
		t.Fatalf("%v %v", m, err)
	}
	if _, err := argumentsOf([]int{1}); err == nil {
		t.Fatal("a list was taken as arguments")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	for _, c := range []struct {
		url, key string
		opts     []Option
	}{
		{"localhost:8080", "k", nil},
		{"http://localhost:8080", "", nil},
		{"http://localhost:8080", "k", []Option{WithBatch(1001, time.Second)}},
		{"http://localhost:8080", "k", []Option{WithBatch(10, 0)}},
		{"http://localhost:8080", "k", []Option{WithMaxQueue(5, BlockWhenFull)}},
	} {
		if c, err := New(c.url, c.key, c.opts...); err == nil {
			c.Close()
			t.Errorf("New(%q, %q, …) accepted", c.base, c.key)
		}
	}
}

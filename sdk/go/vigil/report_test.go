package vigil

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// unreachable is a loopback port nothing listens on: every send fails
// fast with a connection refused.
const unreachable = "http://127.0.0.1:1"

// TestQueueBound: with the buffer full of events that cannot be sent,
// DropWhenFull refuses at once and BlockWhenFull waits until its context
// ends; Close then drops what is left and says how many.
func TestQueueBound(t *testing.T) {
	for _, c := range []struct {
		policy QueuePolicy
		want   error
	}{
		{DropWhenFull, ErrQueueFull},
		{BlockWhenFull, context.DeadlineExceeded},
	} {
		var handled []error
		cl, err := New(unreachable, "k", WithBatch(2, time.Hour), WithMaxQueue(2, c.policy), WithRetries(0),
			WithBackoff(time.Millisecond, 5*time.Millisecond), WithCloseTimeout(50*time.Millisecond),
			WithErrorHandler(func(err error) { handled = append(handled, err) }))
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for range 2 {
			if err := cl.Report(ctx, Event{SessionID: "s", Category: "tool_api"}); err != nil {
				t.Fatalf("policy %d: report within the bound: %v", c.policy, err)
			}
		}
		tctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		err = cl.Report(tctx, Event{SessionID: "s", Category: "tool_api"})
		cancel()
		if !errors.Is(err, c.want) {
			t.Fatalf("policy %d: report past the bound: %v, want %v", c.policy, err, c.want)
		}
		if err := cl.Close(); err == nil || !strings.Contains(err.Error(), "2 reported events") {
			t.Fatalf("policy %d: Close: %v", c.policy, err)
		}
		if len(handled) == 0 {
			t.Fatalf("policy %d: the drop was not reported to the error handler", c.policy)
		}
		if err := cl.Report(ctx, Event{SessionID: "s", Category: "tool_api"}); !errors.Is(err, ErrClosed) {
			t.Fatalf("policy %d: report after Close: %v", c.policy, err)
		}
		if err := cl.Close(); err == nil {
			t.Fatalf("policy %d: a second Close forgot the drop", c.policy)
		}
	}
}

// TestGuardBreakerFailOpen: against an unreachable Vigil the breaker opens
// after its failures; then the default call site fails closed without a
// request and a FailOpen call site proceeds, marked.
func TestGuardBreakerFailOpen(t *testing.T) {
	cl, err := New(unreachable, "k", WithRetries(0), WithBreaker(1, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if _, err := cl.Guard(ctx, Action{Tool: "t"}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("first guard: %v", err)
	}
	if _, err := cl.Guard(ctx, Action{Tool: "t"}); !errors.Is(err, ErrBreakerOpen) {
		t.Fatalf("guard with the breaker open: %v", err)
	}
	d, err := cl.Guard(ctx, Action{Tool: "t"}, OnBreakerOpen(FailOpen))
	if err != nil || !d.FailedOpen || d.Outcome != "" {
		t.Fatalf("fail-open guard: %+v %v", d, err)
	}
	// GuardFunc follows its call site's choice.
	ran := false
	tool := GuardFunc(cl, "t", func(context.Context, map[string]any) (string, error) { ran = true; return "ok", nil })
	if _, err := tool(ctx, map[string]any{"a": 1}); !errors.Is(err, ErrBreakerOpen) || ran {
		t.Fatalf("fail-closed wrapper: ran %v, %v", ran, err)
	}
	openTool := GuardFunc(cl, "t", func(context.Context, map[string]any) (string, error) { ran = true; return "ok", nil }, OnBreakerOpen(FailOpen))
	if out, err := openTool(ctx, map[string]any{"a": 1}); err != nil || !ran || out != "ok" {
		t.Fatalf("fail-open wrapper: ran %v, %q, %v", ran, out, err)
	}
}

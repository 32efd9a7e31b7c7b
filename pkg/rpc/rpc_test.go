package rpc_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/rpc"
)

type echoReq struct {
	Say  string `json:"say"`
	Fail string `json:"fail,omitempty"`
}

type echoResp struct {
	Said string `json:"said"`
	// LeftMs is how much time the handler's context had when it ran.
	LeftMs int64 `json:"leftMs"`
}

var endpoint = rpc.Endpoint[echoReq, echoResp]{
	Name: "echo", Subject: "rpc.test.v1.echo", Service: "echo service", NotDone: "nothing was echoed", MaxWait: time.Minute,
}

// failures are what the handler returns for echoReq.Fail.
var failures = map[string]error{
	"invalid":     apperr.Validation("say is too long", apperr.FieldError{Path: "say", Code: "too_long", Message: "at most 3 bytes"}),
	"notfound":    apperr.NotFound("no such echo %q", "x"),
	"conflict":    apperr.Conflict("echo changed concurrently"),
	"forbidden":   apperr.Forbidden("not yours"),
	"unavailable": apperr.Unavailable("store down", time.Second, errors.New("refused")),
	"internal":    errors.New("nil map"),
	"deadline":    context.DeadlineExceeded,
}

func echo(ctx context.Context, req echoReq) (echoResp, error) {
	if req.Fail != "" {
		return echoResp{}, failures[req.Fail]
	}
	dl, _ := ctx.Deadline()
	return echoResp{Said: req.Say, LeftMs: time.Until(dl).Milliseconds()}, nil
}

func serve(t *testing.T) *natstest.Env {
	t.Helper()
	env := natstest.Start(t)
	svc, err := rpc.Serve(env.Conn, "vigil-echo", "echo", func(svc micro.Service) error {
		return endpoint.Handle(svc, slog.New(slog.DiscardHandler), echo)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	return env
}

type caller func(context.Context, echoReq) (echoResp, error)

// transports are the two ways to reach echo: over NATS, and in process
// through a Local that serves it (a caller holding a Local without the
// endpoint goes over NATS). A caller must not be able to tell them apart
// by what it gets back.
func transports(t *testing.T) map[string]caller {
	t.Helper()
	env := serve(t)
	served, empty := rpc.NewLocal(), rpc.NewLocal()
	t.Cleanup(endpoint.HandleLocal(served, slog.New(slog.DiscardHandler), nil, echo))
	return map[string]caller{
		"nats": func(ctx context.Context, req echoReq) (echoResp, error) { return endpoint.Call(ctx, env.Conn, req) },
		"local": func(ctx context.Context, req echoReq) (echoResp, error) {
			return endpoint.CallLocal(ctx, served, env.Conn, req)
		},
		"local-not-served": func(ctx context.Context, req echoReq) (echoResp, error) {
			return endpoint.CallLocal(ctx, empty, env.Conn, req)
		},
	}
}

func TestCallCarriesTypedErrors(t *testing.T) {
	for name, call := range transports(t) {
		t.Run(name, func(t *testing.T) { testTypedErrors(t, call) })
	}
}

func testTypedErrors(t *testing.T, call caller) {
	tests := []struct {
		fail     string
		wantKind apperr.Kind
		wantMsg  string
		details  int
	}{
		{"", 0, "", 0},
		{"invalid", apperr.KindValidation, "say is too long", 1},
		{"notfound", apperr.KindNotFound, `no such echo "x"`, 0},
		{"conflict", apperr.KindConflict, "echo changed concurrently", 0},
		{"forbidden", apperr.KindForbidden, "not yours", 0},
		// The callee did not act: the caller may retry, and must not
		// proceed as if it had.
		{"unavailable", apperr.KindUnavailable, "echo service could not answer: store down; nothing was echoed", 0},
		{"internal", apperr.KindUnavailable, "echo service could not answer: nil map; nothing was echoed", 0},
		{"deadline", apperr.KindUnavailable, "echo service could not answer: context deadline exceeded; nothing was echoed", 0},
	}
	for _, tt := range tests {
		t.Run("fail="+tt.fail, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			resp, err := call(ctx, echoReq{Say: "hi", Fail: tt.fail})
			if tt.fail == "" {
				if err != nil || resp.Said != "hi" {
					t.Fatalf("Call = %+v, %v", resp, err)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("Call error %v is not an apperr", err)
			}
			if ae.Kind != tt.wantKind || ae.Message != tt.wantMsg || len(ae.Details) != tt.details {
				t.Fatalf("Call error kind %v message %q details %v, want kind %v message %q and %d details",
					ae.Kind, ae.Message, ae.Details, tt.wantKind, tt.wantMsg, tt.details)
			}
		})
	}
}

func TestCallWithoutCallee(t *testing.T) {
	env := natstest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := endpoint.Call(ctx, env.Conn, echoReq{Say: "hi"})
	if apperr.KindOf(err) != apperr.KindUnavailable || !strings.Contains(err.Error(), "echo service is not running; nothing was echoed") {
		t.Fatalf("Call = %v", err)
	}
}

func TestUndecodableRequestIsInvalid(t *testing.T) {
	env := serve(t)
	reply, err := env.Conn.Request(endpoint.Subject, []byte("{"), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := reply.Header.Get(micro.ErrorCodeHeader); got != string(rpc.CodeInvalid) {
		t.Fatalf("error code %q, want %q", got, rpc.CodeInvalid)
	}
}

// The handler's context ends before its caller's: by the reply's margin,
// measured from the time left the caller sent.
func TestHandlerDeadlineIsTheCallers(t *testing.T) {
	for name, call := range transports(t) {
		t.Run(name, func(t *testing.T) { testHandlerDeadline(t, call) })
	}
}

func testHandlerDeadline(t *testing.T, call caller) {
	for _, budget := range []time.Duration{300 * time.Millisecond, 2 * time.Second, 20 * time.Second} {
		ctx, cancel := context.WithTimeout(context.Background(), budget)
		resp, err := call(ctx, echoReq{Say: "hi"})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		limit := budget - rpc.Margin(budget)
		if left := time.Duration(resp.LeftMs) * time.Millisecond; left <= 0 || left > limit {
			t.Fatalf("budget %s: the handler had %s left, want (0, %s]", budget, left, limit)
		}
	}
	// A caller without a deadline gives the handler MaxWait.
	resp, err := call(context.Background(), echoReq{Say: "hi"})
	if err != nil {
		t.Fatal(err)
	}
	if left := time.Duration(resp.LeftMs) * time.Millisecond; left <= endpoint.MaxWait/2 || left > endpoint.MaxWait {
		t.Fatalf("no deadline: the handler had %s left, want about MaxWait (%s)", left, endpoint.MaxWait)
	}
}

func TestCodeOf(t *testing.T) {
	for err, want := range map[error]rpc.Code{
		failures["invalid"]: rpc.CodeInvalid, failures["notfound"]: rpc.CodeNotFound, failures["conflict"]: rpc.CodeConflict,
		failures["unavailable"]: rpc.CodeUnavailable, failures["internal"]: rpc.CodeInternal,
		apperr.Unavailable("x", 0, context.DeadlineExceeded): rpc.CodeDeadlineExceeded,
	} {
		if got := rpc.CodeOf(err); got != want {
			t.Errorf("CodeOf(%v) = %s, want %s", err, got, want)
		}
	}
}

// TestInstancesServeAtOnce: with Instances, a request that waits in its
// handler does not hold up the others, and the extra instances are
// endpoints of their own on the same subject. With one instance every
// request behind the held one would wait for it.
func TestInstancesServeAtOnce(t *testing.T) {
	env := natstest.Start(t)
	ep := endpoint
	ep.Instances = 4
	held, release := make(chan struct{}), make(chan struct{})
	svc, err := rpc.Serve(env.Conn, "vigil-echo", "echo", func(svc micro.Service) error {
		return ep.Handle(svc, slog.New(slog.DiscardHandler), func(ctx context.Context, req echoReq) (echoResp, error) {
			if req.Say == "hold" {
				close(held)
				<-release
			}
			return echoResp{Said: req.Say}, nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	var names []string
	for _, e := range svc.Info().Endpoints {
		if e.Subject != ep.Subject || e.QueueGroup != "vigil-echo" {
			t.Errorf("endpoint %s: subject %q, queue group %q", e.Name, e.Subject, e.QueueGroup)
		}
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "echo,echo-2,echo-3,echo-4" {
		t.Errorf("endpoints = %v", names)
	}

	holdDone := make(chan error, 1)
	go func() {
		_, err := ep.Call(context.Background(), env.Conn, echoReq{Say: "hold"})
		holdDone <- err
	}()
	<-held
	// NATS picks a queue member at random: of 20 requests, some reach an
	// instance other than the held one (all 20 missing them: 4^-20).
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answered := make(chan string, 20)
	for range 20 {
		go func() {
			if resp, err := ep.Call(ctx, env.Conn, echoReq{Say: "hi"}); err == nil {
				answered <- resp.Said
			}
		}()
	}
	select {
	case said := <-answered:
		if said != "hi" {
			t.Errorf("answered %q", said)
		}
	case <-ctx.Done():
		t.Fatal("no request was answered while one was held")
	}
	close(release)
	if err := <-holdDone; err != nil {
		t.Fatal(err)
	}
}

// TestLocalOnlyWhileServed: a Local answers in process only while the
// endpoint is in it; removed (its service stopped), the call goes to NATS,
// where nothing answers: "not running", never a stale answer.
func TestLocalOnlyWhileServed(t *testing.T) {
	env := natstest.Start(t)
	local := rpc.NewLocal()
	remove := endpoint.HandleLocal(local, slog.New(slog.DiscardHandler), nil, echo)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if resp, err := endpoint.CallLocal(ctx, local, env.Conn, echoReq{Say: "hi"}); err != nil || resp.Said != "hi" {
		t.Fatalf("served: CallLocal = %+v, %v", resp, err)
	}
	remove()
	_, err := endpoint.CallLocal(ctx, local, env.Conn, echoReq{Say: "hi"})
	if apperr.KindOf(err) != apperr.KindUnavailable || !strings.Contains(err.Error(), "echo service is not running; nothing was echoed") {
		t.Fatalf("removed: CallLocal = %v", err)
	}
	// A caller whose time is up is not served in process either.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	remove = endpoint.HandleLocal(local, slog.New(slog.DiscardHandler), nil, echo)
	defer remove()
	if _, err := endpoint.CallLocal(done, local, env.Conn, echoReq{Say: "hi"}); apperr.KindOf(err) != apperr.KindUnavailable {
		t.Fatalf("cancelled caller: CallLocal = %v", err)
	}
}

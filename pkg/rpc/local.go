package rpc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// Local is the table of endpoints one process serves, for callers in the
// same process: a call to an endpoint found here runs its handler on the
// caller's goroutine, without the NATS round trip and the JSON encoding
// of the request and the reply each way (issue 16: a decision's two
// hops through the NATS server, and their encoding, were a large share
// of its CPU and of its latency under load). Everything else is what the
// same call over NATS does: the handler's context ends Margin before the
// caller's deadline, an answer that comes too late is "not done", errors
// come back as the kinds they would over NATS (CodeOf, then the caller's
// mapping), and a traced call is a client span with the handler's
// server span under it.
//
// A Local is per process and wired explicitly (the process's main gives
// the same one to the serving and the calling services), never global:
// tests run several stacks in one process, and each must reach its own.
// An endpoint is in the table only while its NATS responder runs, so a
// stopped service is "not running" for local callers too.
type Local struct {
	mu  sync.RWMutex
	fns map[string]any // subject → *localHandler[Req, Resp]
}

// NewLocal returns an empty table.
func NewLocal() *Local { return &Local{fns: map[string]any{}} }

type localHandler[Req, Resp any] struct {
	fn  func(context.Context, Req) (Resp, error)
	tp  trace.TracerProvider
	log *slog.Logger
}

// HandleLocal serves e in this process on l with fn (the same function
// Handle serves over NATS) until remove is called. Spans are recorded on
// tp (nil: none), internal errors logged on log.
func (e Endpoint[Req, Resp]) HandleLocal(l *Local, log *slog.Logger, tp trace.TracerProvider, fn func(context.Context, Req) (Resp, error)) (remove func()) {
	h := &localHandler[Req, Resp]{fn: fn, tp: tp, log: log}
	l.mu.Lock()
	l.fns[e.Subject] = h
	l.mu.Unlock()
	return func() {
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.fns[e.Subject] == h {
			delete(l.fns, e.Subject)
		}
	}
}

// CallLocal is Call, made in process when l (which may be nil) serves e,
// and over nc otherwise.
func (e Endpoint[Req, Resp]) CallLocal(ctx context.Context, l *Local, nc *nats.Conn, req Req) (Resp, error) {
	if l == nil {
		return e.Call(ctx, nc, req)
	}
	l.mu.RLock()
	h, _ := l.fns[e.Subject].(*localHandler[Req, Resp])
	l.mu.RUnlock()
	if h == nil {
		return e.Call(ctx, nc, req)
	}
	return e.callIn(ctx, h, req)
}

// callIn runs h as Handle would run it for a request from Call.
func (e Endpoint[Req, Resp]) callIn(ctx context.Context, h *localHandler[Req, Resp], req Req) (resp Resp, err error) {
	// Untraced (no span in ctx, no tracer for the handler), the header
	// the span context would travel in and the spans' attributes are
	// not built: they were a tenth of what a local decision call
	// allocated, for spans that are no-ops (perf-alloc2).
	var hdr nats.Header
	var attrs []attribute.KeyValue
	if trace.SpanContextFromContext(ctx).IsValid() || telemetry.Enabled(h.tp) {
		hdr, attrs = nats.Header{}, e.attrs()
	}
	ctx, span := telemetry.Outgoing(ctx, hdr, e.Subject, trace.SpanKindClient, attrs...)
	defer func() { endSpan(span, err) }()
	var zero Resp
	rctx, cancel := localContext(ctx, e.MaxWait)
	defer cancel()
	if rctx.Err() != nil {
		return zero, e.unavailable("was not asked: no time was left", context.DeadlineExceeded)
	}
	rctx, sspan := telemetry.Incoming(rctx, h.tp, hdr, e.Subject, trace.SpanKindServer, attrs...)
	resp, herr := h.fn(rctx, req)
	if herr == nil && rctx.Err() != nil {
		herr = fmt.Errorf("%s: %w", e.Name, rctx.Err())
	}
	endSpan(sspan, herr)
	if herr != nil {
		return zero, e.localError(h.log, herr)
	}
	return resp, nil
}

// localContext is the handler's context for an in-process call: the
// caller's (its values, its cancellation) ending Margin before the
// caller's deadline, or after maxWait when it has none, as
// requestContext bounds a request from NATS.
func localContext(ctx context.Context, maxWait time.Duration) (context.Context, context.CancelFunc) {
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		return context.WithDeadline(ctx, dl.Add(-Margin(left)))
	}
	if maxWait > 0 {
		return context.WithTimeout(ctx, maxWait)
	}
	return context.WithCancel(ctx)
}

// localError is what a caller over NATS gets for err: respondError's
// code, message and details, read back by remoteError.
func (e Endpoint[Req, Resp]) localError(log *slog.Logger, err error) error {
	code := CodeOf(err)
	if code == CodeInternal && log != nil {
		log.Error("rpc", slog.String("endpoint", e.Name), slog.String("error", err.Error()))
	}
	msg := err.Error()
	var details []apperr.FieldError
	var ae *apperr.Error
	if errors.As(err, &ae) {
		msg, details = ae.Message, ae.Details
	}
	return e.coded(code, msg, details)
}

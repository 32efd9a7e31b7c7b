// Package rpc is Vigil's one request/reply kit over the nats.go micro
// framework. An Endpoint names a subject with its request and response
// types; the caller (Call) and the callee (Handle) are both written from
// that one value, so they cannot disagree on shape, error codes or
// deadlines:
//
//   - errors travel as typed codes in micro's Nats-Service-Error-Code
//     header (the envelope's stable codes, such as "invalid_request" or
//     "not_found"), with field details as the body, and come back to the
//     caller as the same apperr kind;
//   - the caller's deadline travels in the Vigil-Timeout-Ms header (time
//     left, so the two clocks need not agree). The handler's context ends
//     a safety margin before the caller gives up, so a callee that checks
//     its context before its commit point (recording a decision) never
//     records what its caller has been told was not done.
//   - trace context travels as W3C traceparent in the request headers
//     (pkg/telemetry): a call made within a traced request is a client
//     span, and the handler's work a server span of the same trace.
package rpc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// TimeoutHeader carries the caller's remaining time in milliseconds.
const TimeoutHeader = "Vigil-Timeout-Ms"

// Code is an error code carried in micro.ErrorCodeHeader.
type Code string

// Codes, one per apperr kind (the envelope's short codes), plus
// DeadlineExceeded: the callee stopped because its caller had given up.
const (
	CodeInvalid          Code = "invalid_request"
	CodeUnauthenticated  Code = "unauthorized"
	CodeForbidden        Code = "forbidden"
	CodeNotFound         Code = "not_found"
	CodeConflict         Code = "conflict"
	CodeTooLarge         Code = "payload_too_large"
	CodeRateLimited      Code = "rate_limited"
	CodeUnavailable      Code = "unavailable"
	CodeInternal         Code = "internal_error"
	CodeDeadlineExceeded Code = "deadline_exceeded"
)

var kindCodes = map[apperr.Kind]Code{
	apperr.KindValidation: CodeInvalid, apperr.KindUnauthenticated: CodeUnauthenticated,
	apperr.KindForbidden: CodeForbidden, apperr.KindNotFound: CodeNotFound, apperr.KindConflict: CodeConflict,
	apperr.KindTooLarge: CodeTooLarge, apperr.KindRateLimited: CodeRateLimited,
	apperr.KindUnavailable: CodeUnavailable, apperr.KindInternal: CodeInternal,
}

// CodeOf is the code err travels with.
func CodeOf(err error) Code {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return CodeDeadlineExceeded
	}
	return kindCodes[apperr.KindOf(err)]
}

// Margin is how long before its caller's deadline a handler's context
// ends: the time for its reply to travel back. A tenth of the caller's
// budget, within [5 ms, 250 ms].
func Margin(budget time.Duration) time.Duration {
	return min(max(budget/10, 5*time.Millisecond), 250*time.Millisecond)
}

// Endpoint is one request/reply subject and its types.
type Endpoint[Req, Resp any] struct {
	// Name is the micro endpoint name; Subject where it is served.
	Name, Subject string
	// Service names the callee in errors ("policy service").
	Service string
	// NotDone, when set, is what an unanswered call means for the caller,
	// appended to its error ("no decision was made").
	NotDone string
	// MaxWait bounds a handler whose caller sent no deadline.
	MaxWait time.Duration
	// Instances is how many requests one process serves at once (0 or
	// 1: one). micro runs each endpoint's handler on its subscription's
	// goroutine, one request at a time, so a handler that waits (for a
	// JetStream ack) makes every request behind it wait too; Handle adds
	// the endpoint Instances times to the same subject and queue group,
	// each one a subscription of its own, and NATS spreads requests
	// among them. Extra instances are named Name-2, Name-3, ….
	Instances int
}

func (e Endpoint[Req, Resp]) unavailable(what string, err error) error {
	msg := e.Service + " " + what
	if e.NotDone != "" {
		msg += "; " + e.NotDone
	}
	return apperr.Unavailable(msg, time.Second, err)
}

// attrs are the attributes of the endpoint's spans.
func (e Endpoint[Req, Resp]) attrs() []attribute.KeyValue {
	return append(telemetry.Messaging(e.Subject), attribute.String("rpc.system", "nats"), attribute.String("rpc.method", e.Name))
}

// Call sends req and waits for the reply until ctx ends. Every failure to
// get an answer is apperr.Unavailable (the caller must not proceed as if
// the callee had acted); an error the callee answered comes back as the
// apperr kind it had there. Within a traced request (a span in ctx) the
// call is a client span and its context goes with the request.
func (e Endpoint[Req, Resp]) Call(ctx context.Context, nc *nats.Conn, req Req) (resp Resp, err error) {
	m := nats.NewMsg(e.Subject)
	ctx, span := telemetry.Outgoing(ctx, m.Header, e.Subject, trace.SpanKindClient, e.attrs()...)
	defer func() { endSpan(span, err) }()
	var zero Resp
	data, err := json.Marshal(req)
	if err != nil {
		return zero, fmt.Errorf("encode %s request: %w", e.Name, err)
	}
	m.Data = data
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		if left <= 0 {
			return zero, e.unavailable("was not asked: no time was left", context.DeadlineExceeded)
		}
		m.Header.Set(TimeoutHeader, strconv.FormatInt(left.Milliseconds(), 10))
	}
	reply, err := nc.RequestMsgWithContext(ctx, m)
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			return zero, e.unavailable("is not running", err)
		}
		return zero, e.unavailable("did not answer in time", err)
	}
	if code := reply.Header.Get(micro.ErrorCodeHeader); code != "" {
		return zero, e.remoteError(Code(code), reply.Header.Get(micro.ErrorHeader), reply.Data)
	}
	if err := json.Unmarshal(reply.Data, &resp); err != nil {
		return zero, e.unavailable("answered what is not a "+e.Name+" reply", err)
	}
	return resp, nil
}

// endSpan records how a call or a handler ended: the code an error
// travels with, and status Error for what was not done (an answered
// refusal such as invalid_request is the callee working as it should).
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		code := CodeOf(err)
		span.SetAttributes(attribute.String("vigil.rpc.code", string(code)))
		if _, answered := answeredKinds[code]; !answered {
			span.SetStatus(codes.Error, err.Error())
		}
	}
	span.End()
}

// remoteError turns a coded reply back into the apperr the handler had.
// answeredKinds are the codes of refusals a callee answered, which the
// caller reports as the same kind; any other code means "not done".
var answeredKinds = map[Code]apperr.Kind{CodeInvalid: apperr.KindValidation, CodeUnauthenticated: apperr.KindUnauthenticated,
	CodeForbidden: apperr.KindForbidden, CodeNotFound: apperr.KindNotFound, CodeConflict: apperr.KindConflict, CodeTooLarge: apperr.KindTooLarge}

func (e Endpoint[Req, Resp]) remoteError(code Code, desc string, body []byte) error {
	// Details travel with any refusal (a field error, a separation-of-
	// duties code on a forbidden decision).
	var details []apperr.FieldError
	if len(body) > 0 && json.Unmarshal(body, &details) != nil {
		details = nil
	}
	return e.coded(code, desc, details)
}

// coded is the caller's error for a handler's code, message and details.
func (e Endpoint[Req, Resp]) coded(code Code, desc string, details []apperr.FieldError) error {
	if k, ok := answeredKinds[code]; ok {
		return &apperr.Error{Kind: k, Message: desc, Details: details}
	}
	// Unavailable, internal, deadline exceeded or a code from a newer
	// peer: the callee did not do it, and the caller may retry.
	return e.unavailable("could not answer: "+desc, fmt.Errorf("%s: %s", code, desc))
}

// Handle adds the endpoint to svc, serving it with fn. fn's context ends
// Margin before the caller's deadline (or after MaxWait when the caller
// sent none); fn must check it before any step that cannot be undone. A
// request that does not decode is answered invalid_request without
// calling fn. With tracing on (svc from Serve with Tracing), each request
// is a server span continuing the caller's trace, and fn's context holds
// it.
func (e Endpoint[Req, Resp]) Handle(svc micro.Service, log *slog.Logger, fn func(context.Context, Req) (Resp, error)) error {
	tp := tracerOf(svc)
	handler := func(r micro.Request) {
		rctx, cancel := e.requestContext(r.Headers())
		defer cancel()
		rctx, span := telemetry.Incoming(rctx, tp, nats.Header(r.Headers()), e.Subject, trace.SpanKindServer, e.attrs()...)
		var err error
		defer func() { endSpan(span, err) }()
		var req Req
		if err = json.Unmarshal(r.Data(), &req); err != nil {
			_ = r.Error(string(CodeInvalid), fmt.Sprintf("request is not a valid %s request", e.Name), nil)
			return
		}
		var resp Resp
		resp, err = fn(rctx, req)
		if err == nil && rctx.Err() != nil {
			// Done, but too late for the caller to hear it: say so rather
			// than send an answer nobody reads.
			err = fmt.Errorf("%s: %w", e.Name, rctx.Err())
		}
		if err != nil {
			e.respondError(r, log, err)
			return
		}
		if err := r.RespondJSON(resp); err != nil {
			log.Warn("rpc reply", slog.String("endpoint", e.Name), slog.String("error", err.Error()))
		}
	}
	for i := range max(1, e.Instances) {
		name := e.Name
		if i > 0 {
			name = fmt.Sprintf("%s-%d", e.Name, i+1)
		}
		if err := svc.AddEndpoint(name, micro.HandlerFunc(handler), micro.WithEndpointSubject(e.Subject)); err != nil {
			return fmt.Errorf("rpc %s: %w", name, err)
		}
	}
	return nil
}

// requestContext is a handler's context: the caller's time left less the
// margin for the reply. It does not derive from the service's run
// context: micro drains in-flight requests at Stop, and this bound ends
// them anyway.
func (e Endpoint[Req, Resp]) requestContext(h micro.Headers) (context.Context, context.CancelFunc) {
	parent := context.Background()
	budget := e.MaxWait
	if ms, err := strconv.ParseInt(h.Get(TimeoutHeader), 10, 64); err == nil && ms > 0 {
		budget = time.Duration(ms) * time.Millisecond
		budget -= Margin(budget)
	}
	if budget <= 0 {
		return context.WithCancel(parent)
	}
	return context.WithTimeout(parent, budget)
}

func (e Endpoint[Req, Resp]) respondError(r micro.Request, log *slog.Logger, err error) {
	code := CodeOf(err)
	if code == CodeInternal {
		log.Error("rpc", slog.String("endpoint", e.Name), slog.String("error", err.Error()))
	}
	msg := err.Error()
	var ae *apperr.Error
	var body []byte
	if errors.As(err, &ae) {
		msg = ae.Message
		if len(ae.Details) > 0 {
			body, _ = json.Marshal(ae.Details)
		}
	}
	_ = r.Error(string(code), msg, body)
}

// ServeOption adjusts Serve.
type ServeOption func(*traced)

// Tracing makes the handlers of the service trace their requests on tp
// (see Handle); nil or a no-op provider traces nothing.
func Tracing(tp trace.TracerProvider) ServeOption {
	return func(t *traced) { t.tp = tp }
}

// traced is a micro.Service that carries the tracer provider its
// handlers use, so Handle's signature stays one for every endpoint.
type traced struct {
	micro.Service
	tp trace.TracerProvider
}

// tracerOf is the provider Serve gave svc, or nil.
func tracerOf(svc micro.Service) trace.TracerProvider {
	if t, ok := svc.(*traced); ok {
		return t.tp
	}
	return nil
}

// Serve starts a micro service (queue group = name, so instances share the
// work) with the endpoints added by add.
func Serve(nc *nats.Conn, name, description string, add func(micro.Service) error, opts ...ServeOption) (micro.Service, error) {
	ms, err := micro.AddService(nc, micro.Config{Name: name, Version: "1.0.0", Description: description, QueueGroup: name})
	if err != nil {
		return nil, fmt.Errorf("rpc service %s: %w", name, err)
	}
	t := &traced{Service: ms}
	for _, o := range opts {
		o(t)
	}
	var svc micro.Service = t
	if err := add(svc); err != nil {
		_ = svc.Stop()
		return nil, err
	}
	return svc, nil
}

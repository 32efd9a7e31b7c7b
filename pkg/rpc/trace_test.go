package rpc_test

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/telemetry/otlptest"
)

// TestCallsCarryTraceContext: a call made within a traced request is a
// client span, the handler's work a server span of the same trace whose
// parent is the client span (the context crossed NATS in the request's
// headers), and the handler's context holds that server span. A call
// with no span in its context makes no client span (its server span
// starts a trace of its own, as any server's does for an untraced
// caller).
func TestCallsCarryTraceContext(t *testing.T) {
	recv := otlptest.Start(t)
	log := slog.New(slog.DiscardHandler)
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: recv.URL, SampleRatio: 1, Service: "vigil-test"}, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tr.Shutdown(context.Background()) })
	env := natstest.Start(t)
	fn := func(ctx context.Context, req echoReq) (echoResp, error) {
		_, step := telemetry.Child(ctx, "echo.step")
		step.End()
		if req.Fail != "" {
			return echoResp{}, failures[req.Fail]
		}
		return echoResp{Said: req.Say}, nil
	}
	svc, err := rpc.Serve(env.Conn, "vigil-echo", "echo", func(svc micro.Service) error {
		return endpoint.Handle(svc, log, fn)
	}, rpc.Tracing(tr.Provider))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
	// The same spans in the same places when the call stays in process.
	local := rpc.NewLocal()
	t.Cleanup(endpoint.HandleLocal(local, log, tr.Provider, fn))
	for _, transport := range []struct {
		name string
		call caller
	}{
		{"nats", func(ctx context.Context, req echoReq) (echoResp, error) { return endpoint.Call(ctx, env.Conn, req) }},
		{"local", func(ctx context.Context, req echoReq) (echoResp, error) {
			return endpoint.CallLocal(ctx, local, env.Conn, req)
		}},
	} {
		t.Run(transport.name, func(t *testing.T) { testTraceContext(t, tr, recv, transport.call) })
	}
}

func testTraceContext(t *testing.T, tr *telemetry.Tracing, recv *otlptest.Receiver, call caller) {

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// No span in the context: no client span.
	if _, err := call(ctx, echoReq{Say: "untraced"}); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		fail       string
		wantStatus bool // status Error: the callee did not do it
	}{{"", false}, {"invalid", false}, {"unavailable", true}} {
		rctx, root := tr.Provider.Tracer("test").Start(ctx, "request")
		_, _ = call(rctx, echoReq{Say: "hi", Fail: tt.fail})
		root.End()
		if err := tr.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		spans := byName(recv.Trace(root.SpanContext().TraceID().String()))
		client, server, step := spans[endpoint.Subject+"/client"], spans[endpoint.Subject+"/server"], spans["echo.step/internal"]
		if client == nil || server == nil || step == nil {
			t.Fatalf("fail=%q: spans %v, want a client, a server and a step span", tt.fail, spans)
		}
		if client.ParentID != root.SpanContext().SpanID().String() || server.ParentID != client.SpanID || step.ParentID != server.SpanID {
			t.Errorf("fail=%q: parents: client %s (root %s), server %s (client %s), step %s (server %s)", tt.fail,
				client.ParentID, root.SpanContext().SpanID(), server.ParentID, client.SpanID, step.ParentID, server.SpanID)
		}
		if client.Attrs["messaging.system"] != "nats" || client.Attrs["messaging.destination.name"] != endpoint.Subject {
			t.Errorf("fail=%q: client attributes %v", tt.fail, client.Attrs)
		}
		if client.StatusError != tt.wantStatus || server.StatusError != tt.wantStatus {
			t.Errorf("fail=%q: status error client %v server %v, want %v", tt.fail, client.StatusError, server.StatusError, tt.wantStatus)
		}
		if tt.fail != "" && server.Attrs["vigil.rpc.code"] == nil {
			t.Errorf("fail=%q: server span has no vigil.rpc.code: %v", tt.fail, server.Attrs)
		}
	}
	for _, s := range recv.Spans() {
		if s.Attrs["rpc.method"] != nil && s.ParentID == "" && s.Kind != tracepb.Span_SPAN_KIND_SERVER {
			t.Errorf("an untraced call made a client span: %+v", s)
		}
	}
}

// byName indexes spans by "name/kind".
func byName(spans []otlptest.Span) map[string]*otlptest.Span {
	kinds := map[tracepb.Span_SpanKind]string{tracepb.Span_SPAN_KIND_CLIENT: "client", tracepb.Span_SPAN_KIND_SERVER: "server",
		tracepb.Span_SPAN_KIND_INTERNAL: "internal", tracepb.Span_SPAN_KIND_PRODUCER: "producer", tracepb.Span_SPAN_KIND_CONSUMER: "consumer"}
	m := map[string]*otlptest.Span{}
	for i := range spans {
		m[spans[i].Name+"/"+kinds[spans[i].Kind]] = &spans[i]
	}
	return m
}

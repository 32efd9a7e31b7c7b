package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"slices"
	"testing"
	"time"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/telemetry"
	"github.com/vigilhq/vigil/pkg/telemetry/otlptest"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// otelPolicy blocks one tool with a reason code the trace must show.
const otelPolicy = `
id: otel
name: otel
rules:
  - id: no-wires
    when: action.tool == "wire_transfer"
    outcome: block
    reasonCodes: [WIRE_BLOCKED]
`

// tracedStack is a stack tracing to an in-process OTLP receiver (or to
// endpoint, when given), with an agent and otelPolicy in tenant default.
func tracedStack(t *testing.T, endpoint string) (*testStack, *telemetry.Tracing, string) {
	t.Helper()
	tr, err := telemetry.Start(context.Background(), telemetry.Config{Endpoint: endpoint, SampleRatio: 1, Service: "vigil-dev"}, testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	// Registered before the stack's cleanup, so it runs after the stack
	// stopped; bounded, as a collector that is down must not hold it up.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = tr.Shutdown(ctx)
	})
	s := startStack(t, stacktest.Options{DSN: chtest.New(t).DSN, Tracer: tr.Provider})
	owner := s.st.BootstrapKey
	s.register("default", "agt-otel")
	expect(t, s.do(req{method: http.MethodPost, path: "/v1/policies", key: owner, body: otelPolicy,
		header: map[string]string{"Content-Type": "application/yaml"}}), http.StatusCreated, "create policy")
	return s, tr, owner
}

// TestDecisionTrace: one decisions.evaluate request is one trace through
// api → the NATS hop → policy → the record on POLICY, continuing the
// caller's traceparent, with correct parent links and the decision (its
// id, outcome and reason codes) as an event; and an ingested event's
// verdict continues the trace of the request that ingested it.
func TestDecisionTrace(t *testing.T) {
	recv := otlptest.Start(t)
	s, tr, owner := tracedStack(t, recv.URL)

	const traceID, callerSpan = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	r := s.do(req{method: http.MethodPost, path: "/v1/decisions.evaluate", key: owner,
		body:   map[string]any{"agentId": "agt-otel", "action": "wire_transfer", "context": map[string]any{"amount": 5}},
		header: map[string]string{"traceparent": "00-" + traceID + "-" + callerSpan + "-01"}})
	expect(t, r, http.StatusOK, "decisions.evaluate")
	var dec struct {
		ID       string `json:"decisionId"`
		Decision string `json:"decision"`
	}
	r.decode(t, &dec)
	if dec.Decision != "block" || dec.ID == "" {
		t.Fatalf("decision %s", r)
	}
	spans := flushedTrace(t, tr, recv, traceID, "publish POLICY")
	httpSpan := one(t, spans, "POST /v1/decisions.evaluate", tracepb.Span_SPAN_KIND_SERVER)
	client := one(t, spans, "rpc.policy.v1.evaluate", tracepb.Span_SPAN_KIND_CLIENT)
	server := one(t, spans, "rpc.policy.v1.evaluate", tracepb.Span_SPAN_KIND_SERVER)
	decide := one(t, spans, "policy.decide", tracepb.Span_SPAN_KIND_INTERNAL)
	eval := one(t, spans, "policy.evaluate", tracepb.Span_SPAN_KIND_INTERNAL)
	record := one(t, spans, "publish POLICY", tracepb.Span_SPAN_KIND_PRODUCER)
	for _, link := range []struct {
		child, parent *otlptest.Span
		parentID      string
	}{
		{httpSpan, nil, callerSpan}, {client, httpSpan, ""}, {server, client, ""},
		{decide, server, ""}, {eval, decide, ""}, {record, decide, ""},
	} {
		want := link.parentID
		if link.parent != nil {
			want = link.parent.SpanID
		}
		if link.child.ParentID != want {
			t.Errorf("%s (%s): parent %s, want %s", link.child.Name, link.child.Kind, link.child.ParentID, want)
		}
	}
	if httpSpan.Service != "vigil-dev" || httpSpan.Attrs["http.route"] != "/v1/decisions.evaluate" || httpSpan.Attrs["http.response.status_code"] != int64(200) {
		t.Errorf("http span: service %q, attributes %v", httpSpan.Service, httpSpan.Attrs)
	}
	de := decisionEvent(t, decide)
	if de.Attrs["vigil.decision.id"] != dec.ID || de.Attrs["vigil.decision.outcome"] != "block" ||
		!slices.Equal(de.Attrs["vigil.decision.reason_codes"].([]string), []string{"WIRE_BLOCKED"}) {
		t.Errorf("decision event %v, want id %s, block, [WIRE_BLOCKED]", de.Attrs, dec.ID)
	}

	// No traceparent: the request starts its own trace.
	r = s.post(owner, "/v1/decisions.evaluate", map[string]any{"agentId": "agt-otel", "action": "read_docs"})
	expect(t, r, http.StatusOK, "untraced caller")
	r.decode(t, &dec)
	var root *otlptest.Span
	testkit.Eventually(t, "a trace holding decision "+dec.ID, func() (bool, string) {
		_ = tr.Flush(context.Background())
		for _, sp := range recv.Spans() {
			for _, e := range sp.Events {
				if e.Attrs["vigil.decision.id"] == dec.ID {
					root = &sp
					return true, ""
				}
			}
		}
		return false, fmt.Sprintf("%d spans", len(recv.Spans()))
	})
	first := one(t, recv.Trace(root.TraceID), "POST /v1/decisions.evaluate", tracepb.Span_SPAN_KIND_SERVER)
	if first.ParentID != "" || decisionEvent(t, root).Attrs["vigil.decision.outcome"] != "allow" {
		t.Errorf("untraced caller: http span parent %q, decision %v", first.ParentID, decisionEvent(t, root).Attrs)
	}

	// An ingested event: its verdict continues the ingest request's trace.
	const eventTrace = "5bf92f3577b34da6a3ce929d0e0e4737"
	e := ev("agt-otel", "s-otel", time.Now())
	e["payload"] = map[string]any{"toolName": "wire_transfer"}
	expect(t, s.do(req{method: http.MethodPost, path: "/v1/events", key: owner, body: e,
		header: map[string]string{"traceparent": "00-" + eventTrace + "-" + callerSpan + "-01"}}), http.StatusAccepted, "POST /v1/events")
	spans = flushedTrace(t, tr, recv, eventTrace, "policy.decide")
	ingestSpan := one(t, spans, "POST /v1/events", tracepb.Span_SPAN_KIND_SERVER)
	consume := one(t, spans, "process INGEST", tracepb.Span_SPAN_KIND_CONSUMER)
	decide = one(t, spans, "policy.decide", tracepb.Span_SPAN_KIND_INTERNAL)
	if consume.ParentID != ingestSpan.SpanID || decide.ParentID != consume.SpanID {
		t.Errorf("event trace: consume parent %s (ingest %s), decide parent %s (consume %s)", consume.ParentID, ingestSpan.SpanID, decide.ParentID, consume.SpanID)
	}
	if de := decisionEvent(t, decide); de.Attrs["vigil.decision.source"] != "event" || de.Attrs["vigil.decision.outcome"] != "block" {
		t.Errorf("event verdict %v", de.Attrs)
	}
}

// TestDecisionsWithCollectorDown: a collector that refuses connections
// changes nothing about decisions: each is answered, as policy says.
func TestDecisionsWithCollectorDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + ln.Addr().String()
	ln.Close()
	s, tr, owner := tracedStack(t, down)
	for i := range 20 {
		action := []string{"wire_transfer", "read_docs"}[i%2]
		r := s.post(owner, "/v1/decisions.evaluate", map[string]any{"agentId": "agt-otel", "action": action})
		expect(t, r, http.StatusOK, "decision with the collector down")
		var dec struct {
			Decision string `json:"decision"`
		}
		r.decode(t, &dec)
		if want := map[string]string{"wire_transfer": "block", "read_docs": "allow"}[action]; dec.Decision != want {
			t.Fatalf("%s: decision %s, want %s", action, dec.Decision, want)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := tr.Flush(ctx); err == nil {
		t.Error("flushing to a collector that is down succeeded: the test did not reach a down collector")
	}
}

// flushedTrace flushes the exporter until the receiver holds trace
// traceID with a span named last (spans end in any order).
func flushedTrace(t *testing.T, tr *telemetry.Tracing, recv *otlptest.Receiver, traceID, last string) []otlptest.Span {
	t.Helper()
	var spans []otlptest.Span
	testkit.Eventually(t, "trace "+traceID+" with "+last, func() (bool, string) {
		_ = tr.Flush(context.Background())
		spans = recv.Trace(traceID)
		return slices.ContainsFunc(spans, func(s otlptest.Span) bool { return s.Name == last }), fmt.Sprintf("%d spans", len(spans))
	})
	return spans
}

// one is the only span of spans with name and kind.
func one(t *testing.T, spans []otlptest.Span, name string, kind tracepb.Span_SpanKind) *otlptest.Span {
	t.Helper()
	var found []otlptest.Span
	for _, s := range spans {
		if s.Name == name && s.Kind == kind {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%d spans named %q of kind %s in %v", len(found), name, kind, spans)
	}
	return &found[0]
}

// decisionEvent is the decision event of span.
func decisionEvent(t *testing.T, span *otlptest.Span) otlptest.Event {
	t.Helper()
	for _, e := range span.Events {
		if e.Name == "vigil.decision" {
			return e
		}
	}
	t.Fatalf("span %s has no vigil.decision event: %v", span.Name, span.Events)
	return otlptest.Event{}
}

package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/services/ledger"
)

const (
	ctProto = "application/x-protobuf"
	ctJSON  = "application/json"
)

// postOTLP sends an OTLP/HTTP body with the given content type (and gzip
// when zip) and returns the response.
func (s *testStack) postOTLP(key, contentType string, body []byte, zip bool) response {
	s.t.Helper()
	h := map[string]string{"Content-Type": contentType}
	if zip {
		body, h["Content-Encoding"] = gzipped(body), "gzip"
	}
	return s.do(req{method: http.MethodPost, path: "/v1/traces", key: key, body: body, header: h})
}

// exportResponse decodes a 200 answer in the encoding of contentType.
func exportResponse(t *testing.T, r response, contentType string) *coltrace.ExportTraceServiceResponse {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("OTLP export: %s", r)
	}
	out := &coltrace.ExportTraceServiceResponse{}
	var err error
	if contentType == ctJSON {
		err = protojson.Unmarshal([]byte(r.body), out)
	} else {
		err = proto.Unmarshal([]byte(r.body), out)
	}
	if err != nil {
		t.Fatalf("response is not an ExportTraceServiceResponse: %v: %q", err, r.body)
	}
	return out
}

// otlpStatus checks an OTLP failure: the status, and a google.rpc.Status
// body in the request's encoding whose message contains want.
func otlpStatus(t *testing.T, r response, status int, contentType, want string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("HTTP %d, want %d: %s", r.status, status, r)
	}
	st := &rpcstatus.Status{}
	var err error
	if contentType == ctJSON {
		err = protojson.Unmarshal([]byte(r.body), st)
	} else {
		err = proto.Unmarshal([]byte(r.body), st)
	}
	if err != nil || st.Code == 0 || !strings.Contains(st.Message, want) {
		t.Fatalf("body %q (%v): want a Status about %q", r.body, err, want)
	}
}

func strAttr(k, v string) *commonv1.KeyValue {
	return &commonv1.KeyValue{Key: k, Value: &commonv1.AnyValue{Value: &commonv1.AnyValue_StringValue{StringValue: v}}}
}

// oneSpanRequest is a request of one execute_tool span per span id.
func oneSpanRequest(agent string, traceID []byte, spanIDs ...[]byte) *coltrace.ExportTraceServiceRequest {
	now := uint64(time.Now().Add(-time.Minute).UnixNano())
	var spans []*tracev1.Span
	for _, id := range spanIDs {
		spans = append(spans, &tracev1.Span{TraceId: traceID, SpanId: id, Name: "execute_tool lookup", StartTimeUnixNano: now, EndTimeUnixNano: now + 1e6,
			Attributes: []*commonv1.KeyValue{strAttr("gen_ai.operation.name", "execute_tool"), strAttr("gen_ai.tool.name", "lookup")}})
	}
	return &coltrace.ExportTraceServiceRequest{ResourceSpans: []*tracev1.ResourceSpans{{
		Resource:   &resourcev1.Resource{Attributes: []*commonv1.KeyValue{strAttr("service.name", agent)}},
		ScopeSpans: []*tracev1.ScopeSpans{{Spans: spans}},
	}}}
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// otelErrors collects what the OpenTelemetry SDK reports through its
// global error handler (an exporter's partial success among them).
type otelErrors struct {
	mu   sync.Mutex
	errs []string
}

func (o *otelErrors) Handle(err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.errs = append(o.errs, err.Error())
}

func (o *otelErrors) all() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]string(nil), o.errs...)
}

// TestOTLPIngest: the OpenTelemetry Go SDK's OTLP/HTTP exporter reports a
// GenAI trace (invoke_agent → chat, execute_tool) to Vigil; each span is
// an event of the trace's session, evaluated by policy, and the trace's
// lineage proves every span and verdict. Then the wire protocol: the
// spec's JSON example, gzip, replays, partial success, bad bodies, tenant
// isolation, agent keys.
func TestOTLPIngest(t *testing.T) {
	e := newEnv(t)
	viewer := e.key("default", auth.RoleViewer)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// --- the real exporter, gzip, bearer key in its headers ---
	oe := &otelErrors{}
	otel.SetErrorHandler(oe)
	exp, err := otlptracehttp.New(ctx, otlptracehttp.WithEndpointURL(e.base+"/v1/traces"),
		otlptracehttp.WithHeaders(map[string]string{"Authorization": "Bearer " + e.owner}),
		otlptracehttp.WithCompression(otlptracehttp.GzipCompression))
	if err != nil {
		t.Fatal(err)
	}
	res := resource.NewSchemaless(attribute.String("service.name", "otel-e2e-service"))
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithResource(res))
	tr := tp.Tracer("vigil-e2e")
	root, rootSpan := tr.Start(ctx, "invoke_agent support", trace.WithAttributes(
		attribute.String("gen_ai.operation.name", "invoke_agent"), attribute.String("gen_ai.agent.id", "otel-agent")))
	_, chat := tr.Start(root, "chat gpt-4o", trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(
		attribute.String("gen_ai.operation.name", "chat"), attribute.String("gen_ai.agent.id", "otel-agent"),
		attribute.String("gen_ai.request.model", "gpt-4o"), attribute.Int("gen_ai.usage.input_tokens", 812), attribute.Int("gen_ai.usage.output_tokens", 64)))
	chat.End()
	_, tool := tr.Start(root, "execute_tool refund", trace.WithAttributes(
		attribute.String("gen_ai.operation.name", "execute_tool"), attribute.String("gen_ai.agent.id", "otel-agent"),
		attribute.String("gen_ai.tool.name", "refund"), attribute.String("gen_ai.tool.call.id", "call_9"),
		attribute.String("gen_ai.tool.call.arguments", `{"amount": 25, "email": "jane.doe@example.com"}`)))
	tool.End()
	rootSpan.End()
	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("exporter: %v", err)
	}
	if errs := oe.all(); len(errs) > 0 {
		t.Fatalf("exporter reported %v", errs)
	}
	traceID := rootSpan.SpanContext().TraceID().String()

	// One event per span, all in the trace's session, for the agent the
	// spans name; the tool's arguments redacted like any payload.
	var sd sessionDetail
	e.waitSession(viewer, traceID, 3)
	e.get(viewer, "/v1/sessions/"+traceID).decode(t, &sd)
	cats := map[string]bool{}
	for _, ev := range sd.Events {
		cats[ev.Category] = true
		if ev.AgentID != "otel-agent" {
			t.Errorf("event %s of agent %q", ev.EventID, ev.AgentID)
		}
		if strings.Contains(string(ev.Payload), "jane.doe@example.com") {
			t.Errorf("payload not redacted: %s", ev.Payload)
		}
		if ev.Category == "tool_api" && !strings.Contains(string(ev.Payload), `"toolName":"refund"`) {
			t.Errorf("tool span payload: %s", ev.Payload)
		}
	}
	if !cats["tool_api"] || !cats["llm_call"] || !cats["agent_invocation"] {
		t.Fatalf("categories %v", cats)
	}

	// The trace is a lineage record: its three spans and the three
	// verdicts policy recorded on them, each with an inclusion proof.
	var l ledger.Lineage
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(viewer, "/v1/lineage/"+traceID+"/verify")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		l = ledger.Lineage{}
		r.decode(t, &l)
		return l.Anchored && len(l.Records) == 6, r.String()
	})
	kinds := map[string]int{}
	for _, rec := range l.Records {
		kinds[rec.Kind]++
		if len(rec.MerklePath) == 0 && l.TreeSize > 1 {
			t.Errorf("record %s has no proof", rec.RecordID)
		}
	}
	if kinds["event"] != 3 || kinds["decision"] != 3 {
		t.Fatalf("lineage records by kind %v", kinds)
	}

	// A trace inside a conversation: its spans are the conversation's
	// session's events, and the trace id still proves them.
	tidc, _ := hex.DecodeString("4af7651916cd43dd8448eb211c80319c")
	conv := oneSpanRequest("conv-agent", tidc, []byte{9, 9, 9, 9, 9, 9, 9, 1}, []byte{9, 9, 9, 9, 9, 9, 9, 2})
	for _, sp := range conv.ResourceSpans[0].ScopeSpans[0].Spans {
		sp.Attributes = append(sp.Attributes, strAttr("gen_ai.conversation.id", "conv-e2e"))
	}
	exportResponse(t, e.postOTLP(e.owner, ctProto, marshal(t, conv), false), ctProto)
	e.waitSession(viewer, "conv-e2e", 2)
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(viewer, "/v1/lineage/4af7651916cd43dd8448eb211c80319c/verify")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		l = ledger.Lineage{}
		r.decode(t, &l)
		return l.Anchored && l.Kind == "trace" && len(l.Records) == 2 && l.Records[0].Kind == "event", r.String()
	})

	// --- the OTLP JSON example of the specification ---
	example, err := os.ReadFile("../../services/ingest/internal/otelspan/testdata/spec_example.json")
	if err != nil {
		t.Fatal(err)
	}
	out := exportResponse(t, e.postOTLP(e.owner, ctJSON, example, false), ctJSON)
	if out.PartialSuccess.GetRejectedSpans() != 0 {
		t.Fatalf("spec example: %v", out)
	}
	e.waitSession(viewer, "5b8efff798038103d269b633813fc60c", 1)

	// --- replay: the same spans again, gzip'd, are stored once ---
	tid, _ := hex.DecodeString("0af7651916cd43dd8448eb211c80319c")
	s1, s2 := []byte{1, 2, 3, 4, 5, 6, 7, 8}, []byte{1, 2, 3, 4, 5, 6, 7, 9}
	body := marshal(t, oneSpanRequest("replay-agent", tid, s1, s2))
	for range 2 {
		out := exportResponse(t, e.postOTLP(e.owner, ctProto, body, true), ctProto)
		if out.PartialSuccess.GetRejectedSpans() != 0 {
			t.Fatalf("replay: %v", out)
		}
	}
	// A third span after the replay: once it shows, the replay would have.
	s3 := []byte{1, 2, 3, 4, 5, 6, 7, 10}
	exportResponse(t, e.postOTLP(e.owner, ctProto, marshal(t, oneSpanRequest("replay-agent", tid, s3)), false), ctProto)
	e.waitSession(viewer, "0af7651916cd43dd8448eb211c80319c", 3)

	// --- partial success: a bad span is rejected, the good one stored ---
	tid2, _ := hex.DecodeString("1af7651916cd43dd8448eb211c80319c")
	mixed := oneSpanRequest("mixed-agent", tid2, s1, make([]byte, 8))
	for _, ct := range []string{ctProto, ctJSON} {
		var b []byte
		if ct == ctJSON {
			b, err = protojson.Marshal(mixed)
			if err != nil {
				t.Fatal(err)
			}
			// OTLP JSON carries hex ids; protojson writes base64.
			var pairs []string
			for _, id := range [][]byte{tid2, s1, make([]byte, 8)} {
				pairs = append(pairs, `"`+base64.StdEncoding.EncodeToString(id)+`"`, `"`+hex.EncodeToString(id)+`"`)
			}
			b = []byte(strings.NewReplacer(pairs...).Replace(string(b)))
		} else {
			b = marshal(t, mixed)
		}
		out := exportResponse(t, e.postOTLP(e.owner, ct, b, false), ct)
		if ps := out.PartialSuccess; ps.GetRejectedSpans() != 1 || !strings.Contains(ps.GetErrorMessage(), "spans[1]") || !strings.Contains(ps.GetErrorMessage(), "spanId") {
			t.Fatalf("%s: partial success %v", ct, ps)
		}
	}
	e.waitSession(viewer, "1af7651916cd43dd8448eb211c80319c", 1)

	// --- bad requests: OTLP status codes, google.rpc.Status bodies ---
	bad := []struct {
		name    string
		ct, ce  string
		key     string
		body    []byte
		status  int
		message string
	}{
		{"malformed protobuf", ctProto, "", e.owner, []byte{0xff, 0xff, 0xff}, 400, "protobuf"},
		{"malformed JSON", ctJSON, "", e.owner, []byte(`{"resourceSpans":[`), 400, "JSON"},
		{"base64 ids in JSON", ctJSON, "", e.owner, []byte(`{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA=="}]}]}]}`), 400, "hex"},
		{"not gzip", ctProto, "gzip", e.owner, []byte("plain"), 400, "gzip"},
		{"other content type", "text/plain", "", e.owner, []byte("x"), 415, "Content-Type"},
		{"other compression", ctProto, "br", e.owner, []byte("x"), 415, "Content-Encoding"},
		{"no key", ctJSON, "", "", []byte(`{}`), 401, "Authorization"},
		{"viewer", ctJSON, "", viewer, []byte(`{}`), 403, ""},
		{"gzip bomb past the body limit", ctProto, "gzip", e.owner, gzipped(make([]byte, 40<<20)), 413, "inflated"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			h := map[string]string{"Content-Type": b.ct}
			if b.ce != "" {
				h["Content-Encoding"] = b.ce
			}
			r := e.do(req{method: http.MethodPost, path: "/v1/traces", key: b.key, body: b.body, header: h})
			want := b.ct
			if want != ctJSON {
				want = ctProto
			}
			otlpStatus(t, r, b.status, want, b.message)
		})
	}
	// An empty request is a valid export of nothing.
	if out := exportResponse(t, e.postOTLP(e.owner, ctProto, nil, false), ctProto); out.PartialSuccess != nil {
		t.Fatalf("empty export: %v", out)
	}

	// --- tenants: the same trace and span ids in another tenant are its
	// own events; neither tenant sees the other's ---
	acme := e.key("acme", auth.RoleOwner)
	tid3, _ := hex.DecodeString("2af7651916cd43dd8448eb211c80319c")
	same := marshal(t, oneSpanRequest("iso-agent", tid3, s1))
	exportResponse(t, e.postOTLP(acme, ctProto, same, false), ctProto)
	e.waitSession(acme, "2af7651916cd43dd8448eb211c80319c", 1)
	checkEnvelope(t, e.get(e.owner, "/v1/sessions/2af7651916cd43dd8448eb211c80319c"), http.StatusNotFound, "NOT_FOUND", "not_found", nil)
	checkEnvelope(t, e.get(e.owner, "/v1/lineage/2af7651916cd43dd8448eb211c80319c/verify"), http.StatusNotFound, "NOT_FOUND", "not_found", nil)
	exportResponse(t, e.postOTLP(e.owner, ctProto, same, false), ctProto)
	e.waitSession(viewer, "2af7651916cd43dd8448eb211c80319c", 1)

	// --- agent keys: spans of the key's agent by default, another
	// agent's spans rejected alone ---
	ak := e.key("default", auth.RoleAgent, "bound-agent")
	tid4, _ := hex.DecodeString("3af7651916cd43dd8448eb211c80319c")
	req4 := oneSpanRequest("some-service", tid4, s1, s2)
	req4.ResourceSpans[0].ScopeSpans[0].Spans[1].Attributes = append(req4.ResourceSpans[0].ScopeSpans[0].Spans[1].Attributes, strAttr("gen_ai.agent.id", "other-agent"))
	out = exportResponse(t, e.postOTLP(ak, ctProto, marshal(t, req4), false), ctProto)
	if ps := out.PartialSuccess; ps.GetRejectedSpans() != 1 || !strings.Contains(ps.GetErrorMessage(), "other-agent") {
		t.Fatalf("agent key: partial success %v", ps)
	}
	var sd4 sessionDetail
	e.waitSession(viewer, "3af7651916cd43dd8448eb211c80319c", 1)
	e.get(viewer, "/v1/sessions/3af7651916cd43dd8448eb211c80319c").decode(t, &sd4)
	if len(sd4.Events) != 1 || sd4.Events[0].AgentID != "bound-agent" {
		t.Fatalf("agent key's span: %+v", sd4.Events)
	}
}

// Package otelspan turns OpenTelemetry spans into Vigil events: it
// decodes OTLP/HTTP trace export requests (protobuf or JSON) and maps each
// span, following the GenAI semantic conventions, onto one event in the
// shape POST /v1/events accepts. The mapping is documented attribute by
// attribute in docs/otel.md.
//
// The package only decodes and maps; validation, redaction, the agent
// checks and publishing stay in ingest's one storing path, so a span is
// stored exactly like an event with the same fields.
package otelspan

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonv1 "go.opentelemetry.io/proto/otlp/common/v1"
	resourcev1 "go.opentelemetry.io/proto/otlp/resource/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/pkg/event"
)

// Body encodings of OTLP/HTTP.
const (
	Protobuf = "application/x-protobuf"
	JSON     = "application/json"
)

// Categories of the events spans become, by gen_ai.operation.name.
const (
	CategoryTool  = "tool_api"         // execute_tool: policies see a tool_call
	CategoryLLM   = "llm_call"         // chat, text_completion, generate_content, embeddings
	CategoryAgent = "agent_invocation" // invoke_agent, create_agent
	CategorySpan  = "otel_span"        // any other span
)

// Source marks events that came from OTLP (payload.source).
const Source = "otlp"

// Decode parses an export request body in the given encoding (Protobuf
// or JSON). JSON follows the OTLP JSON mapping: trace and span ids are
// hex strings, not base64, and unknown fields are ignored.
func Decode(encoding string, body []byte) (*coltrace.ExportTraceServiceRequest, error) {
	req := &coltrace.ExportTraceServiceRequest{}
	switch encoding {
	case Protobuf:
		if err := proto.Unmarshal(body, req); err != nil {
			return nil, fmt.Errorf("protobuf body: %w", err)
		}
	case JSON:
		fixed, err := hexIDsToBase64(body)
		if err != nil {
			return nil, err
		}
		if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(fixed, req); err != nil {
			return nil, fmt.Errorf("JSON body: %w", err)
		}
	default:
		return nil, fmt.Errorf("unsupported encoding %q", encoding)
	}
	return req, nil
}

// Encode renders a response message (ExportTraceServiceResponse, or a
// google.rpc.Status for a failure) in the request's encoding.
func Encode(encoding string, m proto.Message) ([]byte, error) {
	if encoding == JSON {
		return protojson.Marshal(m)
	}
	return proto.Marshal(m)
}

// idFields are the OTLP JSON fields that carry bytes as hex (the proto
// and the snake_case spellings, which protojson also accepts).
var idFields = map[string]bool{
	"traceId": true, "spanId": true, "parentSpanId": true,
	"trace_id": true, "span_id": true, "parent_span_id": true,
}

// hexIDsToBase64 rewrites the hex id fields of an OTLP JSON body into
// base64, which is how protojson reads bytes fields.
func hexIDsToBase64(body []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, fmt.Errorf("JSON body: %w", err)
	}
	if d.More() {
		return nil, errors.New("JSON body: trailing data after the request object")
	}
	if err := rewriteIDs(v); err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

func rewriteIDs(v any) error {
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && idFields[k] {
				b, err := hex.DecodeString(s)
				if err != nil {
					return fmt.Errorf("JSON body: %s %q is not hex (OTLP JSON encodes ids as hex)", k, s)
				}
				t[k] = base64.StdEncoding.EncodeToString(b)
				continue
			}
			if err := rewriteIDs(x); err != nil {
				return err
			}
		}
	case []any:
		for _, x := range t {
			if err := rewriteIDs(x); err != nil {
				return err
			}
		}
	}
	return nil
}

// Spans counts the spans of a request.
func Spans(req *coltrace.ExportTraceServiceRequest) int {
	n := 0
	for _, rs := range req.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	return n
}

// GenAI semantic-convention attribute names the mapping reads.
const (
	attrOperation      = "gen_ai.operation.name"
	attrToolName       = "gen_ai.tool.name"
	attrToolCallID     = "gen_ai.tool.call.id"
	attrToolArgs       = "gen_ai.tool.call.arguments"
	attrAgentID        = "gen_ai.agent.id"
	attrAgentName      = "gen_ai.agent.name"
	attrConversationID = "gen_ai.conversation.id"
	attrRequestModel   = "gen_ai.request.model"
	attrResponseModel  = "gen_ai.response.model"
	attrInputTokens    = "gen_ai.usage.input_tokens"
	attrOutputTokens   = "gen_ai.usage.output_tokens"
	attrProvider       = "gen_ai.provider.name"
	attrSystem         = "gen_ai.system" // the provider's name before semconv 1.37
	attrErrorType      = "error.type"
	attrServiceName    = "service.name"
	attrHTTPStatus     = "http.response.status_code"
	attrURL            = "url.full"
	attrServerAddress  = "server.address"
)

// Span is one span with the resource and scope it was reported under.
type Span struct {
	Resource *resourcev1.Resource
	Scope    *commonv1.InstrumentationScope
	Span     *tracev1.Span
}

// Each calls f for every span of req with its position
// ("resourceSpans[0].scopeSpans[1].spans[2]."), in order.
func Each(req *coltrace.ExportTraceServiceRequest, f func(path string, s Span)) {
	for i, rs := range req.GetResourceSpans() {
		for j, ss := range rs.GetScopeSpans() {
			for k, sp := range ss.GetSpans() {
				f(fmt.Sprintf("resourceSpans[%d].scopeSpans[%d].spans[%d].", i, j, k), Span{rs.GetResource(), ss.GetScope(), sp})
			}
		}
	}
}

// EventID is the event id of a span: a UUID (version 8 layout) derived
// from its trace and span ids, so that a span exported twice is one
// event (JetStream deduplicates on it, every projection is keyed by it).
func EventID(traceID, spanID []byte) string {
	h := sha256.New()
	h.Write([]byte("vigil/otlp-span/v1\x00"))
	h.Write(traceID)
	h.Write(spanID)
	var u [16]byte
	copy(u[:], h.Sum(nil))
	u[6] = u[6]&0x0f | 0x80 // version 8: custom
	u[8] = u[8]&0x3f | 0x80 // RFC 9562 variant
	x := hex.EncodeToString(u[:])
	return x[0:8] + "-" + x[8:12] + "-" + x[12:16] + "-" + x[16:20] + "-" + x[20:32]
}

// MappingError is a span that cannot become an event; its message names
// the attribute at fault.
type MappingError struct{ Msg string }

func (e *MappingError) Error() string { return e.Msg }

func fail(format string, args ...any) error { return &MappingError{Msg: fmt.Sprintf(format, args...)} }

// Event maps one span onto an event (the JSON POST /v1/events takes).
// defaultAgent, if not "", is the agent the sender's key reports for: it
// is used when the span names no agent (gen_ai.agent.id, or a
// gen_ai.agent.name that is a valid agent id), before service.name.
func Event(s Span, defaultAgent string) (json.RawMessage, error) {
	sp := s.Span
	if sp == nil {
		return nil, fail("span is empty")
	}
	if len(sp.TraceId) != 16 || allZero(sp.TraceId) {
		return nil, fail("traceId must be 16 bytes and not all zero")
	}
	if len(sp.SpanId) != 8 || allZero(sp.SpanId) {
		return nil, fail("spanId must be 8 bytes and not all zero")
	}
	attrs := attrMap(sp.Attributes)
	res := attrMap(s.Resource.GetAttributes())
	str := func(m map[string]any, k string) string { v, _ := m[k].(string); return v }
	either := func(k string) string {
		if v := str(attrs, k); v != "" {
			return v
		}
		return str(res, k)
	}

	agentID, err := agentOf(either(attrAgentID), either(attrAgentName), defaultAgent, str(res, attrServiceName))
	if err != nil {
		return nil, err
	}
	traceHex := hex.EncodeToString(sp.TraceId)
	session := traceHex
	conv := either(attrConversationID)
	if conv != "" && event.ValidID(conv, event.MaxSessionIDLen) {
		session = conv
	}
	ts := sp.StartTimeUnixNano
	if ts == 0 {
		ts = sp.EndTimeUnixNano
	}
	if ts == 0 || ts > math.MaxInt64 {
		return nil, fail("startTimeUnixNano is required (nanoseconds since the Unix epoch)")
	}
	start := time.Unix(0, int64(ts)).UTC()

	op := str(attrs, attrOperation)
	p := map[string]any{
		"source":  Source,
		"traceId": traceHex,
		"spanId":  hex.EncodeToString(sp.SpanId),
		"name":    sp.Name,
		"status":  statusName(sp.GetStatus().GetCode()),
	}
	if len(sp.ParentSpanId) > 0 {
		p["parentSpanId"] = hex.EncodeToString(sp.ParentSpanId)
	}
	if k := kindName(sp.Kind); k != "" {
		p["spanKind"] = k
	}
	if sp.EndTimeUnixNano >= sp.StartTimeUnixNano && sp.StartTimeUnixNano > 0 {
		p["durationMs"] = float64(sp.EndTimeUnixNano-sp.StartTimeUnixNano) / 1e6
	}
	if m := sp.GetStatus().GetMessage(); m != "" {
		p["statusMessage"] = m
	}
	set := func(key string, v any) {
		switch t := v.(type) {
		case string:
			if t == "" {
				return
			}
		case nil:
			return
		}
		p[key] = v
	}
	set("operation", op)
	set("toolName", str(attrs, attrToolName))
	set("toolCallId", str(attrs, attrToolCallID))
	// model is the model that answered (what budgets price), else the
	// one asked for.
	model := str(attrs, attrResponseModel)
	if model == "" {
		model = str(attrs, attrRequestModel)
	}
	set("model", model)
	set("requestModel", str(attrs, attrRequestModel))
	set("agentName", either(attrAgentName))
	set("conversationId", conv)
	set("errorType", str(attrs, attrErrorType))
	provider := either(attrProvider)
	if provider == "" {
		provider = either(attrSystem)
	}
	set("provider", provider)
	if n, ok := count(attrs[attrInputTokens]); ok {
		p["inputTokens"] = n
	}
	if n, ok := count(attrs[attrOutputTokens]); ok {
		p["outputTokens"] = n
	}
	if n, ok := count(attrs[attrHTTPStatus]); ok && n < 1000 {
		p["responseStatus"] = n
	}
	if u := str(attrs, attrURL); u != "" {
		p["target"] = u
	} else {
		set("target", str(attrs, attrServerAddress))
	}
	switch a := attrs[attrToolArgs].(type) {
	case map[string]any:
		p["arguments"] = a
	case string:
		var obj map[string]any
		if json.Unmarshal([]byte(a), &obj) == nil && obj != nil {
			p["arguments"] = obj
		}
	}
	if len(attrs) > 0 {
		p["attributes"] = attrs
	}
	if len(res) > 0 {
		p["resource"] = res
	}
	if sc := s.Scope; sc.GetName() != "" || sc.GetVersion() != "" {
		p["scope"] = map[string]any{"name": sc.GetName(), "version": sc.GetVersion()}
	}
	if len(sp.Events) > 0 {
		evs := make([]any, 0, len(sp.Events))
		for _, e := range sp.Events {
			m := map[string]any{"name": e.Name}
			if e.TimeUnixNano > 0 && e.TimeUnixNano <= math.MaxInt64 {
				m["time"] = time.Unix(0, int64(e.TimeUnixNano)).UTC().Format(time.RFC3339Nano)
			}
			if a := attrMap(e.Attributes); len(a) > 0 {
				m["attributes"] = a
			}
			evs = append(evs, m)
		}
		p["events"] = evs
	}
	if len(sp.Links) > 0 {
		ls := make([]any, 0, len(sp.Links))
		for _, l := range sp.Links {
			ls = append(ls, map[string]any{"traceId": hex.EncodeToString(l.TraceId), "spanId": hex.EncodeToString(l.SpanId)})
		}
		p["links"] = ls
	}
	payload, err := json.Marshal(p)
	if err != nil {
		return nil, fmt.Errorf("encode span payload: %w", err)
	}
	out, err := json.Marshal(event.Event{EventID: EventID(sp.TraceId, sp.SpanId), AgentID: agentID, SessionID: session,
		SourceTimestamp: start.Format(time.RFC3339Nano), Category: category(op), SchemaVersion: "1.0", Payload: payload})
	if err != nil {
		return nil, fmt.Errorf("encode span event: %w", err)
	}
	return out, nil
}

// agentOf picks the span's agent: gen_ai.agent.id; else gen_ai.agent.name
// when it is a valid agent id (it is a display name, often with spaces);
// else the sender key's agent; else service.name. An agent id that is
// present but not valid is refused rather than skipped, so that a span is
// never attributed to a different agent than the one it names.
func agentOf(id, name, def, service string) (string, error) {
	switch {
	case id != "":
		if !event.ValidID(id, event.MaxAgentIDLen) {
			return "", fail("gen_ai.agent.id %q is not a valid agent id (letters, digits and ._:@+=-, at most %d bytes)", clip(id), event.MaxAgentIDLen)
		}
		return id, nil
	case name != "" && event.ValidID(name, event.MaxAgentIDLen):
		return name, nil
	case def != "":
		return def, nil
	case service != "":
		if !event.ValidID(service, event.MaxAgentIDLen) {
			return "", fail("service.name %q is not a valid agent id (letters, digits and ._:@+=-, at most %d bytes): set gen_ai.agent.id", clip(service), event.MaxAgentIDLen)
		}
		return service, nil
	}
	return "", fail("span names no agent: set gen_ai.agent.id on the span or resource, or service.name on the resource")
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

func category(op string) string {
	switch op {
	case "execute_tool":
		return CategoryTool
	case "chat", "text_completion", "generate_content", "embeddings":
		return CategoryLLM
	case "invoke_agent", "create_agent":
		return CategoryAgent
	}
	return CategorySpan
}

func statusName(c tracev1.Status_StatusCode) string {
	switch c {
	case tracev1.Status_STATUS_CODE_OK:
		return "ok"
	case tracev1.Status_STATUS_CODE_ERROR:
		return "error"
	}
	return "unset"
}

func kindName(k tracev1.Span_SpanKind) string {
	switch k {
	case tracev1.Span_SPAN_KIND_INTERNAL:
		return "internal"
	case tracev1.Span_SPAN_KIND_SERVER:
		return "server"
	case tracev1.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracev1.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracev1.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	}
	return ""
}

// count reads a non-negative integer attribute (an int, or a double or
// string holding a whole number, as some exporters send).
func count(v any) (int64, bool) {
	switch t := v.(type) {
	case int64:
		return t, t >= 0
	case float64:
		if t >= 0 && t < 1<<53 && t == math.Trunc(t) {
			return int64(t), true
		}
	case string:
		if n, err := strconv.ParseInt(t, 10, 64); err == nil && n >= 0 {
			return n, true
		}
	}
	return 0, false
}

// maxDepth bounds nested attribute values (arrays and maps of arrays …):
// deeper levels are kept as their type name only.
const maxDepth = 8

func attrMap(kvs []*commonv1.KeyValue) map[string]any {
	if len(kvs) == 0 {
		return nil
	}
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		if kv == nil || kv.Key == "" {
			continue
		}
		m[kv.Key] = value(kv.Value, 0)
	}
	return m
}

// value converts an OTLP AnyValue to JSON: numbers stay numbers (NaN and
// infinities, which JSON lacks, become strings), bytes become base64,
// arrays and key-value lists become arrays and objects.
func value(v *commonv1.AnyValue, depth int) any {
	switch t := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		return t.StringValue
	case *commonv1.AnyValue_BoolValue:
		return t.BoolValue
	case *commonv1.AnyValue_IntValue:
		return t.IntValue
	case *commonv1.AnyValue_DoubleValue:
		if math.IsNaN(t.DoubleValue) || math.IsInf(t.DoubleValue, 0) {
			return fmt.Sprint(t.DoubleValue)
		}
		return t.DoubleValue
	case *commonv1.AnyValue_BytesValue:
		return base64.StdEncoding.EncodeToString(t.BytesValue)
	case *commonv1.AnyValue_ArrayValue:
		if depth >= maxDepth {
			return "array"
		}
		out := make([]any, 0, len(t.ArrayValue.GetValues()))
		for _, x := range t.ArrayValue.GetValues() {
			out = append(out, value(x, depth+1))
		}
		return out
	case *commonv1.AnyValue_KvlistValue:
		if depth >= maxDepth {
			return "kvlist"
		}
		out := make(map[string]any, len(t.KvlistValue.GetValues()))
		for _, kv := range t.KvlistValue.GetValues() {
			if kv != nil && kv.Key != "" {
				out[kv.Key] = value(kv.Value, depth+1)
			}
		}
		return out
	}
	return nil
}

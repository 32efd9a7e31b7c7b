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
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

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
	attrs, resAttrs := sp.Attributes, s.Resource.GetAttributes()
	// used are the attributes that became named fields: the payload's
	// attributes and resource objects hold the others, so that nothing
	// is stored twice.
	var used, resUsed []string
	str := func(kvs []*commonv1.KeyValue, k string) string { return find(kvs, k).GetStringValue() }
	take := func(k string) string {
		v := str(attrs, k)
		if v != "" {
			used = append(used, k)
		}
		return v
	}
	either := func(k string) string {
		if v := take(k); v != "" {
			return v
		}
		v := str(resAttrs, k)
		if v != "" {
			resUsed = append(resUsed, k)
		}
		return v
	}

	agentName := either(attrAgentName)
	agentID, err := agentOf(either(attrAgentID), agentName, defaultAgent, str(resAttrs, attrServiceName))
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
	op := take(attrOperation)

	// The event is written directly rather than through maps and
	// encoding/json: this runs once per span, and ingest validates and
	// compacts the result like any posted event.
	w := &jsonw{b: make([]byte, 0, 512+64*len(attrs))}
	w.open('{')
	w.strField("eventId", EventID(sp.TraceId, sp.SpanId))
	w.strField("agentId", agentID)
	w.strField("sessionId", session)
	w.strField("sourceTimestamp", time.Unix(0, int64(ts)).UTC().Format(time.RFC3339Nano))
	w.strField("category", category(op))
	w.strField("schemaVersion", "1.0")
	w.field("payload")
	w.open('{')
	w.strField("source", Source)
	w.strField("traceId", traceHex)
	w.strField("spanId", hex.EncodeToString(sp.SpanId))
	if len(sp.ParentSpanId) > 0 {
		w.strField("parentSpanId", hex.EncodeToString(sp.ParentSpanId))
	}
	w.strField("name", sp.Name)
	if k := kindName(sp.Kind); k != "" {
		w.strField("spanKind", k)
	}
	if sp.EndTimeUnixNano >= sp.StartTimeUnixNano && sp.StartTimeUnixNano > 0 {
		w.field("durationMs")
		w.float(float64(sp.EndTimeUnixNano-sp.StartTimeUnixNano) / 1e6)
	}
	w.strField("status", statusName(sp.GetStatus().GetCode()))
	opt := func(key, v string) {
		if v != "" {
			w.strField(key, v)
		}
	}
	opt("statusMessage", sp.GetStatus().GetMessage())
	opt("operation", op)
	opt("toolName", take(attrToolName))
	opt("toolCallId", take(attrToolCallID))
	// model is the model that answered (what budgets price), else the
	// one asked for; requestModel only when they differ.
	model, req := take(attrResponseModel), take(attrRequestModel)
	if model == "" {
		model = req
	}
	opt("model", model)
	if req != model {
		opt("requestModel", req)
	}
	opt("agentName", agentName)
	if conv != session {
		opt("conversationId", conv)
	}
	opt("errorType", take(attrErrorType))
	provider := either(attrProvider)
	if provider == "" {
		provider = either(attrSystem)
	}
	opt("provider", provider)
	for _, c := range []struct {
		key, attr string
		max       int64
	}{{"inputTokens", attrInputTokens, math.MaxInt64}, {"outputTokens", attrOutputTokens, math.MaxInt64}, {"responseStatus", attrHTTPStatus, 999}} {
		if n, ok := count(find(attrs, c.attr)); ok && n <= c.max {
			used = append(used, c.attr)
			w.field(c.key)
			w.b = strconv.AppendInt(w.b, n, 10)
		}
	}
	if u := take(attrURL); u != "" {
		w.strField("target", u)
	} else {
		opt("target", take(attrServerAddress))
	}
	switch a := find(attrs, attrToolArgs); {
	case a.GetKvlistValue() != nil:
		used = append(used, attrToolArgs)
		w.field("arguments")
		w.value(a, 0)
	case a.GetStringValue() != "":
		if obj := jsonObject(a.GetStringValue()); obj != nil {
			used = append(used, attrToolArgs)
			w.field("arguments")
			w.b = append(w.b, obj...)
		}
	}
	if len(attrs) > len(used) {
		w.field("attributes")
		w.attrs(attrs, used, 0)
	}
	if len(resAttrs) > len(resUsed) {
		w.field("resource")
		w.attrs(resAttrs, resUsed, 0)
	}
	if sc := s.Scope; sc.GetName() != "" || sc.GetVersion() != "" {
		w.field("scope")
		w.open('{')
		w.strField("name", sc.GetName())
		w.strField("version", sc.GetVersion())
		w.close('}')
	}
	if len(sp.Events) > 0 {
		w.field("events")
		w.open('[')
		for _, e := range sp.Events {
			w.elem()
			w.open('{')
			w.strField("name", e.Name)
			if e.TimeUnixNano > 0 && e.TimeUnixNano <= math.MaxInt64 {
				w.strField("time", time.Unix(0, int64(e.TimeUnixNano)).UTC().Format(time.RFC3339Nano))
			}
			if len(e.Attributes) > 0 {
				w.field("attributes")
				w.attrs(e.Attributes, nil, 0)
			}
			w.close('}')
		}
		w.close(']')
	}
	if len(sp.Links) > 0 {
		w.field("links")
		w.open('[')
		for _, l := range sp.Links {
			w.elem()
			w.open('{')
			w.strField("traceId", hex.EncodeToString(l.TraceId))
			w.strField("spanId", hex.EncodeToString(l.SpanId))
			w.close('}')
		}
		w.close(']')
	}
	w.close('}')
	w.close('}')
	return w.b, nil
}

// find is the value of attribute key (the last one, should a key be
// repeated), or nil.
func find(kvs []*commonv1.KeyValue, key string) *commonv1.AnyValue {
	for i := len(kvs) - 1; i >= 0; i-- {
		if kv := kvs[i]; kv != nil && kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

// jsonObject is s compacted if it holds one JSON object, else nil.
func jsonObject(s string) []byte {
	t := strings.TrimSpace(s)
	if t == "" || t[0] != '{' {
		return nil
	}
	var buf bytes.Buffer
	if json.Compact(&buf, []byte(t)) != nil {
		return nil
	}
	return buf.Bytes()
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
func count(v *commonv1.AnyValue) (int64, bool) {
	switch t := v.GetValue().(type) {
	case *commonv1.AnyValue_IntValue:
		return t.IntValue, t.IntValue >= 0
	case *commonv1.AnyValue_DoubleValue:
		if f := t.DoubleValue; f >= 0 && f < 1<<53 && f == math.Trunc(f) {
			return int64(f), true
		}
	case *commonv1.AnyValue_StringValue:
		if n, err := strconv.ParseInt(t.StringValue, 10, 64); err == nil && n >= 0 {
			return n, true
		}
	}
	return 0, false
}

// maxDepth bounds nested attribute values (arrays and maps of arrays …):
// deeper levels are kept as their type name only.
const maxDepth = 8

// jsonw appends JSON. Separators follow from the last byte written: a
// member or element after anything but an opening bracket gets a comma.
type jsonw struct{ b []byte }

func (w *jsonw) open(c byte)  { w.b = append(w.b, c) }
func (w *jsonw) close(c byte) { w.b = append(w.b, c) }

func (w *jsonw) elem() {
	if n := len(w.b); n > 0 && w.b[n-1] != '{' && w.b[n-1] != '[' {
		w.b = append(w.b, ',')
	}
}

func (w *jsonw) field(k string) {
	w.elem()
	w.str(k)
	w.b = append(w.b, ':')
}

func (w *jsonw) strField(k, v string) {
	w.field(k)
	w.str(v)
}

// str writes s as a JSON string; invalid UTF-8 becomes U+FFFD, as
// encoding/json does.
func (w *jsonw) str(s string) {
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	w.b = append(w.b, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		w.b = append(w.b, s[start:i]...)
		switch c {
		case '"', '\\':
			w.b = append(w.b, '\\', c)
		case '\n':
			w.b = append(w.b, '\\', 'n')
		case '\r':
			w.b = append(w.b, '\\', 'r')
		case '\t':
			w.b = append(w.b, '\\', 't')
		default:
			w.b = append(w.b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		}
		start = i + 1
	}
	w.b = append(w.b, s[start:]...)
	w.b = append(w.b, '"')
}

const hexDigits = "0123456789abcdef"

// float writes f; NaN and the infinities, which JSON lacks, as strings.
func (w *jsonw) float(f float64) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		w.str(strconv.FormatFloat(f, 'g', -1, 64))
		return
	}
	w.b = strconv.AppendFloat(w.b, f, 'g', -1, 64)
}

// attrs writes key-value pairs as an object: a repeated key once, with
// its last value; pairs without a key, and those named in skip, are left
// out.
func (w *jsonw) attrs(kvs []*commonv1.KeyValue, skip []string, depth int) {
	w.open('{')
	var last map[string]int
	if len(kvs) > 16 {
		last = make(map[string]int, len(kvs))
		for i, kv := range kvs {
			if kv != nil {
				last[kv.Key] = i
			}
		}
	}
	for i, kv := range kvs {
		if kv == nil || kv.Key == "" || slices.Contains(skip, kv.Key) {
			continue
		}
		if last != nil {
			if last[kv.Key] != i {
				continue
			}
		} else if slices.ContainsFunc(kvs[i+1:], func(o *commonv1.KeyValue) bool { return o != nil && o.Key == kv.Key }) {
			continue
		}
		w.field(kv.Key)
		w.value(kv.Value, depth)
	}
	w.close('}')
}

// value writes an OTLP AnyValue as JSON: numbers stay numbers, bytes
// become base64, arrays and key-value lists arrays and objects; an empty
// value is null.
func (w *jsonw) value(v *commonv1.AnyValue, depth int) {
	switch t := v.GetValue().(type) {
	case *commonv1.AnyValue_StringValue:
		w.str(t.StringValue)
	case *commonv1.AnyValue_BoolValue:
		w.b = strconv.AppendBool(w.b, t.BoolValue)
	case *commonv1.AnyValue_IntValue:
		w.b = strconv.AppendInt(w.b, t.IntValue, 10)
	case *commonv1.AnyValue_DoubleValue:
		w.float(t.DoubleValue)
	case *commonv1.AnyValue_BytesValue:
		w.str(base64.StdEncoding.EncodeToString(t.BytesValue))
	case *commonv1.AnyValue_ArrayValue:
		if depth >= maxDepth {
			w.str("array")
			return
		}
		w.open('[')
		for _, x := range t.ArrayValue.GetValues() {
			w.elem()
			w.value(x, depth+1)
		}
		w.close(']')
	case *commonv1.AnyValue_KvlistValue:
		if depth >= maxDepth {
			w.str("kvlist")
			return
		}
		w.attrs(t.KvlistValue.GetValues(), nil, depth+1)
	default:
		w.b = append(w.b, "null"...)
	}
}

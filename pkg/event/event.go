// Package event defines the agent event that Vigil ingests (the Kaplaix
// event shape), its validation, and the record that ingest publishes on the
// INGEST stream.
package event

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Event is one agent event exactly as a client posts it.
type Event struct {
	EventID         string          `json:"eventId"`
	AgentID         string          `json:"agentId"`
	SessionID       string          `json:"sessionId"`
	SourceTimestamp string          `json:"sourceTimestamp"`
	Category        string          `json:"category"`
	SchemaVersion   string          `json:"schemaVersion"`
	Payload         json.RawMessage `json:"payload"`
	PreviousHash    string          `json:"previousHash,omitempty"`
}

// Client describes the integration that sent an event, from the SDK headers.
type Client struct {
	SDK          string `json:"sdk,omitempty"`
	Framework    string `json:"framework,omitempty"`
	AgentVersion string `json:"agentVersion,omitempty"`
}

// Record is what ingest publishes: the validated event plus what the server
// knows about it. Times are Unix milliseconds so that every store keeps
// millisecond precision (ClickHouse 18.16 has no DateTime64).
type Record struct {
	Tenant     string `json:"tenant"`
	Event      Event  `json:"event"`
	SourceMS   int64  `json:"sourceMs"`
	ReceivedMS int64  `json:"receivedMs"`
	Client     Client `json:"client"`
	// KeyID is the API key that submitted the event, for the audit trail.
	KeyID string `json:"keyId,omitempty"`
	// Redactions counts the values ingest replaced with placeholders in
	// the payload before publishing (see pkg/redact).
	Redactions int `json:"redactions,omitempty"`
}

// Limits bounds what a single event may contain.
type Limits struct {
	// MaxPayloadBytes caps the payload object once compacted.
	MaxPayloadBytes int
	// MaxFutureSkew rejects source timestamps further ahead of the server
	// clock than this, which are almost always unit or timezone bugs.
	MaxFutureSkew time.Duration
}

// DefaultLimits are used when a service is not configured otherwise.
var DefaultLimits = Limits{MaxPayloadBytes: 64 << 10, MaxFutureSkew: 24 * time.Hour}

// Validation error codes, stable and documented in docs/errors.md.
const (
	CodeRequired    = "required"
	CodeInvalidType = "invalid_type"
	CodeInvalid     = "invalid_format"
	CodeTooLong     = "too_long"
	CodeTooLarge    = "too_large"
	CodeOutOfRange  = "out_of_range"
	CodeUnsupported = "unsupported"
	CodeMalformed   = "malformed_json"
)

// minSource is the earliest accepted source timestamp, as an instant:
// "2000-01-01T00:30:00+01:00" is still 1999 in UTC.
var minSource = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Identifier length caps. Agent and session ids become NATS subject tokens
// and ClickHouse sort keys, so they are bounded.
const (
	MaxAgentIDLen   = 128
	MaxSessionIDLen = 256
	MaxHashLen      = 256
)

// ValidID reports whether s is acceptable as an agent or session id of at
// most max bytes.
func ValidID(s string, max int) bool { return len(s) <= max && isID(s) }

// Decode parses and validates one event. prefix is prepended to every error
// path (for batch items, "events[3]."). On failure the error is an
// *apperr.Error of kind validation listing every problem found, not just
// the first.
func Decode(data []byte, lim Limits, now time.Time, prefix string) (Event, int64, error) {
	return DecodeFor(data, lim, now, prefix, "")
}

// DecodeFor is Decode for a sender whose events default to agent
// defaultAgent: an event without agentId (absent, null or "") is
// attributed to it. With defaultAgent "" it is Decode.
func DecodeFor(data []byte, lim Limits, now time.Time, prefix, defaultAgent string) (Event, int64, error) {
	return decode(data, false, false, lim, now, prefix, defaultAgent)
}

// decode is DecodeFor; valid says data is known to be valid JSON (an
// Item split from a batch that was validated whole), which spares a
// second validation; share lets the payload be a slice of data when it
// is canonical already, instead of a copy.
func decode(data []byte, valid, share bool, lim Limits, now time.Time, prefix, defaultAgent string) (Event, int64, error) {
	var fields fieldSet
	if !objectFields(data, valid, &fields) {
		return Event{}, 0, apperr.Validation("event is not a JSON object",
			apperr.FieldError{Path: strings.TrimSuffix(prefix, "."), Code: CodeMalformed, Message: "expected a JSON object"})
	}
	if raw, ok := fields.get("agentId"); defaultAgent != "" && (!ok || bytes.Equal(raw, []byte("null")) || bytes.Equal(raw, []byte(`""`))) {
		enc, _ := json.Marshal(defaultAgent)
		fields.set("agentId", enc)
	}
	var (
		ev   Event
		errs []apperr.FieldError
	)
	add := func(path, code, format string, args ...any) {
		errs = append(errs, apperr.FieldError{Path: prefix + path, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	plain := fields.plainStrings()
	str := func(name string, required bool) (string, bool) {
		k := fieldIndex(name)
		raw := fields[k]
		if raw == nil || bytes.Equal(raw, []byte("null")) {
			if required {
				add(name, CodeRequired, "%s is required", name)
			}
			return "", false
		}
		s, err := plain[k], error(nil)
		if !isPlainString(raw) {
			s, err = jsonString(raw)
		}
		if err != nil {
			add(name, CodeInvalidType, "%s must be a string", name)
			return "", false
		}
		if required && s == "" {
			add(name, CodeRequired, "%s must not be empty", name)
			return "", false
		}
		return s, true
	}

	if s, ok := str("eventId", true); ok {
		if !isUUID(s) {
			add("eventId", CodeInvalid, "eventId must be a UUID")
		} else {
			ev.EventID = strings.ToLower(s)
		}
	}
	for _, f := range []struct {
		name string
		max  int
		dst  *string
	}{{"agentId", MaxAgentIDLen, &ev.AgentID}, {"sessionId", MaxSessionIDLen, &ev.SessionID}} {
		if s, ok := str(f.name, true); ok {
			switch {
			case len(s) > f.max:
				add(f.name, CodeTooLong, "%s must be at most %d bytes", f.name, f.max)
			case !isID(s):
				add(f.name, CodeInvalid, "%s must start with a letter or digit and contain only letters, digits and ._:@+=-", f.name)
			default:
				*f.dst = s
			}
		}
	}
	var sourceMS int64
	if s, ok := str("sourceTimestamp", true); ok {
		t, err := time.Parse(time.RFC3339Nano, s)
		switch {
		case err != nil:
			add("sourceTimestamp", CodeInvalid, "sourceTimestamp must be an RFC 3339 timestamp")
		case t.Before(minSource):
			add("sourceTimestamp", CodeOutOfRange, "sourceTimestamp must not be before the year 2000")
		case lim.MaxFutureSkew > 0 && t.After(now.Add(lim.MaxFutureSkew)):
			add("sourceTimestamp", CodeOutOfRange, "sourceTimestamp is more than %s in the future", lim.MaxFutureSkew)
		default:
			ev.SourceTimestamp = s
			sourceMS = t.UnixMilli()
		}
	}
	if s, ok := str("category", true); ok {
		if !isCategory(s) {
			add("category", CodeInvalid, "category must be lower-case letters, digits and _.- (at most 64)")
		} else {
			ev.Category = s
		}
	}
	if s, ok := str("schemaVersion", true); ok {
		if !isVersion(s) {
			add("schemaVersion", CodeUnsupported, "schemaVersion %q is not supported (use 1.x)", s)
		} else {
			ev.SchemaVersion = s
		}
	}
	if s, ok := str("previousHash", false); ok {
		if len(s) > MaxHashLen {
			add("previousHash", CodeTooLong, "previousHash must be at most %d bytes", MaxHashLen)
		} else {
			ev.PreviousHash = s
		}
	}
	if raw, ok := fields.get("payload"); !ok || bytes.Equal(raw, []byte("null")) {
		add("payload", CodeRequired, "payload is required")
	} else {
		trimmed := bytes.TrimSpace(raw)
		if len(trimmed) == 0 || trimmed[0] != '{' {
			add("payload", CodeInvalidType, "payload must be a JSON object")
		} else if canon, err := canonicalPayload(trimmed, share); err != nil {
			// Compacted the way json.Marshal writes a RawMessage (with
			// HTML-safe escapes), so the payload is byte-identical once
			// the record is encoded for the stream and decoded again.
			add("payload", CodeMalformed, "payload is not valid JSON")
		} else if lim.MaxPayloadBytes > 0 && len(canon) > lim.MaxPayloadBytes {
			add("payload", CodeTooLarge, "payload must be at most %d bytes", lim.MaxPayloadBytes)
		} else {
			ev.Payload = canon
		}
	}
	if len(errs) > 0 {
		return Event{}, 0, apperr.Validation("event failed validation", errs...)
	}
	return ev, sourceMS, nil
}

// Attributes pulled out of the payload at ingest, so that ClickHouse can
// filter on them without JSON functions (18.16 has no JSONExtract).
type Attributes struct {
	ToolName       string
	ResponseStatus int32
}

// Extract reads the well-known payload attributes. Absent or ill-typed
// attributes are left zero: the payload itself is kept verbatim.
func (e Event) Extract() Attributes {
	var p struct {
		ToolName       any `json:"toolName"`
		ResponseStatus any `json:"responseStatus"`
	}
	_ = json.Unmarshal(e.Payload, &p) // validated as an object already
	var a Attributes
	if s, ok := p.ToolName.(string); ok && len(s) <= 256 {
		a.ToolName = s
	}
	if f, ok := p.ResponseStatus.(float64); ok && f >= 0 && f < 1000 {
		a.ResponseStatus = int32(f)
	}
	return a
}

// Decode's fast paths. Decode runs once per ingested event, so the helpers
// below replace its regexps and most of its encoding/json calls by plain
// byte scans (3× faster, a third of the allocations; docs/benchmarks.md).
// Each one states the exact behaviour it reproduces, and
// event_match_bench_test.go checks it against the original, by table and
// by fuzzing.

// isUUID matches ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$.
func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

// isID matches ^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$.
func isID(s string) bool {
	if s == "" || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		switch c := s[i]; c {
		case '.', '_', ':', '@', '+', '=', '-':
		default:
			if !isAlnum(c) {
				return false
			}
		}
	}
	return true
}

// isCategory matches ^[a-z][a-z0-9_.-]{0,63}$.
func isCategory(s string) bool {
	if len(s) < 1 || len(s) > 64 || !('a' <= s[0] && s[0] <= 'z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

// isVersion matches ^1\.[0-9]{1,3}(\.[0-9]{1,3})?$.
func isVersion(s string) bool {
	rest, ok := strings.CutPrefix(s, "1.")
	if !ok {
		return false
	}
	// digits consumes 1-3 digits that are not followed by a fourth.
	digits := func() bool {
		n := 0
		for n < len(rest) && '0' <= rest[n] && rest[n] <= '9' {
			n++
		}
		rest = rest[n:]
		return n >= 1 && n <= 3
	}
	if !digits() {
		return false
	}
	if rest == "" {
		return true
	}
	if rest[0] != '.' {
		return false
	}
	rest = rest[1:]
	return digits() && rest == ""
}

// jsonString decodes raw, one JSON value, into a string exactly as
// json.Unmarshal does. A string without escapes or control characters and
// in valid UTF-8 (nearly every identifier) is its own bytes; anything else
// goes through json.Unmarshal, with its result and error.
func jsonString(raw []byte) (string, error) {
	if isPlainString(raw) {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	err := json.Unmarshal(raw, &s)
	return s, err
}

// isPlainString reports whether raw is a JSON string literal without
// escapes or control characters, in valid UTF-8: its value is the bytes
// between its quotes.
func isPlainString(raw []byte) bool {
	n := len(raw)
	if n < 2 || raw[0] != '"' || raw[n-1] != '"' {
		return false
	}
	body := raw[1 : n-1]
	for _, c := range body {
		if c < 0x20 || c == '"' || c == '\\' {
			return false
		}
	}
	return utf8.Valid(body)
}

// eventFields are the members of an event object that Decode reads;
// every other member is ignored.
var eventFields = [...]string{"eventId", "agentId", "sessionId", "sourceTimestamp", "category", "schemaVersion", "previousHash", "payload"}

// fieldSet holds, for each of eventFields, the raw value of its last
// occurrence (a slice of the decoded document), or nil when absent.
type fieldSet [len(eventFields)][]byte

func fieldIndex(name string) int {
	for i, f := range eventFields {
		if f == name {
			return i
		}
	}
	return -1
}

// plainStrings returns the values of the members that are plain strings
// (see isPlainString), decoded, all of them in one allocation: Decode
// keeps five or six of them per event. Other members are "".
func (f *fieldSet) plainStrings() (out [len(eventFields)]string) {
	var buf [512]byte
	all := buf[:0]
	for _, raw := range f {
		if isPlainString(raw) {
			all = append(all, raw[1:len(raw)-1]...)
		}
	}
	joined := string(all)
	for k, raw := range f {
		if isPlainString(raw) {
			n := len(raw) - 2
			out[k], joined = joined[:n], joined[n:]
		}
	}
	return out
}

func (f *fieldSet) get(name string) ([]byte, bool) {
	v := f[fieldIndex(name)]
	return v, v != nil
}

func (f *fieldSet) set(name string, v []byte) { f[fieldIndex(name)] = v }

// objectFields returns the members of data's top-level object that Decode
// reads, exactly as json.Unmarshal into a map[string]json.RawMessage would
// hold them (keys unescaped and compared exactly, the last of duplicate
// keys winning), except that the values are slices of data rather than
// copies. ok is false exactly where that Unmarshal fails or leaves the map
// nil: data is not valid JSON or not an object. encoding/json validates
// (unless valid says data is known to be valid JSON); the split that
// follows is a plain byte scan.
func objectFields(data []byte, valid bool, fields *fieldSet) (ok bool) {
	if !valid && !validJSON(data) {
		return false
	}
	i := skipSpace(data, 0)
	if i >= len(data) || data[i] != '{' {
		return false
	}
	if i = skipSpace(data, i+1); data[i] == '}' {
		return true
	}
	for {
		end := skipValue(data, i)
		k := fieldKey(data[i:end])
		i = skipSpace(data, skipSpace(data, end)+1) // past the colon
		end = skipValue(data, i)
		if k >= 0 {
			fields[k] = data[i:end]
		}
		if i = skipSpace(data, end); data[i] == '}' {
			return true
		}
		i = skipSpace(data, i+1) // past the comma
	}
}

// fieldKey is the index in eventFields of the object key lit (a JSON
// string literal), or -1. Keys without escapes are compared as bytes.
func fieldKey(lit []byte) int {
	body := lit[1 : len(lit)-1]
	if bytes.IndexByte(body, '\\') < 0 {
		for i, f := range eventFields {
			if string(body) == f {
				return i
			}
		}
		return -1
	}
	key, err := jsonString(lit)
	if err != nil {
		return -1 // not reached: a valid object's keys are strings
	}
	return fieldIndex(key)
}

func skipSpace(data []byte, i int) int {
	for i < len(data) && (data[i] == ' ' || data[i] == '\t' || data[i] == '\n' || data[i] == '\r') {
		i++
	}
	return i
}

// skipValue returns the end of the value that starts at data[i], in a
// document already known to be valid JSON.
func skipValue(data []byte, i int) int {
	depth := 0
	for ; i < len(data); i++ {
		switch data[i] {
		case '"':
			for i++; data[i] != '"'; i++ {
				if data[i] == '\\' {
					i++
				}
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of a number or literal
			}
			if depth--; depth == 0 {
				return i + 1
			}
		case ',', ' ', '\t', '\n', '\r':
			if depth == 0 {
				return i
			}
		}
	}
	return i
}

// canonicalPayload returns obj, a valid JSON value, as json.Marshal writes
// a json.RawMessage: compacted, with <, >, &, U+2028 and U+2029 escaped.
// Payloads that are already in that form, as SDKs send them, are returned
// without a second scan through encoding/json: as a copy, or (share) as
// obj itself.
func canonicalPayload(obj []byte, share bool) ([]byte, error) {
	switch {
	case !isCanonical(obj):
		return json.Marshal(json.RawMessage(obj))
	case share:
		return obj[:len(obj):len(obj)], nil
	}
	return bytes.Clone(obj), nil
}

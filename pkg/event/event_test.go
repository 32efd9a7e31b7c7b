package event_test

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
)

// kaplaixExample is the event from the Kaplaix "Sending an event" example.
const kaplaixExample = `{ "eventId": "550e8400-e29b-41d4-a716-446655440000", "agentId": "my-agent", "sessionId": "session-001", "sourceTimestamp": "2025-01-15T10:30:00Z", "category": "tool_api", "schemaVersion": "1.0", "payload": { "toolName": "web_search", "argumentsHash": "sha256-of-args", "responseStatus": 200 } }`

// testNow is the server clock used by every test: a day after the example.
var testNow = time.Date(2025, 1, 16, 12, 0, 0, 0, time.UTC)

// del marks a field to remove in withFields.
type delMarker struct{}

var del = delMarker{}

// withFields returns the Kaplaix example with fields replaced (by any
// JSON-encodable value, or json.RawMessage for exact bytes) or removed.
func withFields(t testing.TB, mods map[string]any) []byte {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(kaplaixExample), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range mods {
		switch v := v.(type) {
		case delMarker:
			delete(m, k)
		case json.RawMessage:
			m[k] = v
		default:
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			m[k] = b
		}
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

type pc struct{ Path, Code string }

// fieldErrors asserts err is a validation *apperr.Error and returns its
// details as (path, code) pairs in order.
func fieldErrors(t testing.TB, err error) []pc {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		t.Fatalf("error %v (%T) is not an *apperr.Error", err, err)
	}
	if ae.Kind != apperr.KindValidation {
		t.Fatalf("kind = %v, want KindValidation", ae.Kind)
	}
	out := make([]pc, 0, len(ae.Details))
	for _, d := range ae.Details {
		if d.Message == "" {
			t.Errorf("detail %s/%s has an empty message", d.Path, d.Code)
		}
		out = append(out, pc{d.Path, d.Code})
	}
	return out
}

func TestDecodeKaplaixExample(t *testing.T) {
	ev, ms, err := event.Decode([]byte(kaplaixExample), event.DefaultLimits, testNow, "")
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := event.Event{
		EventID:         "550e8400-e29b-41d4-a716-446655440000",
		AgentID:         "my-agent",
		SessionID:       "session-001",
		SourceTimestamp: "2025-01-15T10:30:00Z",
		Category:        "tool_api",
		SchemaVersion:   "1.0",
		Payload:         json.RawMessage(`{"toolName":"web_search","argumentsHash":"sha256-of-args","responseStatus":200}`),
	}
	if !reflect.DeepEqual(ev, want) {
		t.Errorf("event:\n got %+v\nwant %+v", ev, want)
	}
	if wantMS := time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC).UnixMilli(); ms != wantMS {
		t.Errorf("sourceMs = %d, want %d", ms, wantMS)
	}
	a := ev.Extract()
	if a.ToolName != "web_search" || a.ResponseStatus != 200 {
		t.Errorf("Extract = %+v, want web_search/200", a)
	}
}

func TestDecodeAccepts(t *testing.T) {
	cases := []struct {
		name  string
		cap   int
		mods  map[string]any
		check func(t *testing.T, ev event.Event, ms int64)
	}{
		{
			name: "eventId upper case is normalized to lower case",
			mods: map[string]any{"eventId": "550E8400-E29B-41D4-A716-44665544ABCD"},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if ev.EventID != "550e8400-e29b-41d4-a716-44665544abcd" {
					t.Errorf("eventId = %q", ev.EventID)
				}
			},
		},
		{
			name: "payload is compacted",
			mods: map[string]any{"payload": json.RawMessage("{\n  \"a\" : [ 1 , 2 ],\n\t\"b\" : { \"c\" : \"d e\" }\n}")},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if got := string(ev.Payload); got != `{"a":[1,2],"b":{"c":"d e"}}` {
					t.Errorf("payload = %s", got)
				}
			},
		},
		{
			name: "empty payload object",
			mods: map[string]any{"payload": json.RawMessage(`{}`)},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if string(ev.Payload) != `{}` {
					t.Errorf("payload = %s", ev.Payload)
				}
			},
		},
		{
			name: "fractional seconds",
			mods: map[string]any{"sourceTimestamp": "2025-01-15T10:30:00.123456789Z"},
			check: func(t *testing.T, ev event.Event, ms int64) {
				if want := time.Date(2025, 1, 15, 10, 30, 0, 123000000, time.UTC).UnixMilli(); ms != want {
					t.Errorf("sourceMs = %d, want %d", ms, want)
				}
				if ev.SourceTimestamp != "2025-01-15T10:30:00.123456789Z" {
					t.Errorf("sourceTimestamp not kept verbatim: %q", ev.SourceTimestamp)
				}
			},
		},
		{
			name: "positive offset",
			mods: map[string]any{"sourceTimestamp": "2025-01-15T12:30:00.5+02:00"},
			check: func(t *testing.T, _ event.Event, ms int64) {
				if want := time.Date(2025, 1, 15, 10, 30, 0, 500000000, time.UTC).UnixMilli(); ms != want {
					t.Errorf("sourceMs = %d, want %d", ms, want)
				}
			},
		},
		{
			name: "negative offset",
			mods: map[string]any{"sourceTimestamp": "2025-01-15T05:00:00.007-05:30"},
			check: func(t *testing.T, _ event.Event, ms int64) {
				if want := time.Date(2025, 1, 15, 10, 30, 0, 7000000, time.UTC).UnixMilli(); ms != want {
					t.Errorf("sourceMs = %d, want %d", ms, want)
				}
			},
		},
		{
			name: "timestamp just inside the future skew",
			mods: map[string]any{"sourceTimestamp": testNow.Add(24 * time.Hour).Format(time.RFC3339Nano)},
			check: func(t *testing.T, _ event.Event, ms int64) {
				if ms != testNow.Add(24*time.Hour).UnixMilli() {
					t.Errorf("sourceMs = %d", ms)
				}
			},
		},
		{
			name: "first instant of 2000",
			mods: map[string]any{"sourceTimestamp": "2000-01-01T00:00:00Z"},
			check: func(t *testing.T, _ event.Event, ms int64) {
				if ms != 946684800000 {
					t.Errorf("sourceMs = %d", ms)
				}
			},
		},
		{
			name: "schemaVersion 1.x.y",
			mods: map[string]any{"schemaVersion": "1.12.3"},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if ev.SchemaVersion != "1.12.3" {
					t.Errorf("schemaVersion = %q", ev.SchemaVersion)
				}
			},
		},
		{
			name: "ids at their length caps with the whole alphabet",
			mods: map[string]any{
				"agentId":   "a" + strings.Repeat("Z9._:@+=-", 14) + "b", // 128 bytes
				"sessionId": strings.Repeat("s", event.MaxSessionIDLen),
			},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if len(ev.AgentID) != event.MaxAgentIDLen || len(ev.SessionID) != event.MaxSessionIDLen {
					t.Errorf("len(agentId)=%d len(sessionId)=%d", len(ev.AgentID), len(ev.SessionID))
				}
			},
		},
		{
			name: "previousHash is optional and kept",
			mods: map[string]any{"previousHash": "sha256:abc"},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if ev.PreviousHash != "sha256:abc" {
					t.Errorf("previousHash = %q", ev.PreviousHash)
				}
			},
		},
		{
			name: "null previousHash is absent",
			mods: map[string]any{"previousHash": nil},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if ev.PreviousHash != "" {
					t.Errorf("previousHash = %q", ev.PreviousHash)
				}
			},
		},
		{
			name: "unknown fields are ignored",
			mods: map[string]any{"extra": map[string]int{"x": 1}},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if ev.AgentID != "my-agent" {
					t.Errorf("agentId = %q", ev.AgentID)
				}
			},
		},
		{
			name: "payload exactly at the size cap",
			cap:  100,
			mods: map[string]any{"payload": json.RawMessage(`{"k":"` + strings.Repeat("x", 100-len(`{"k":""}`)) + `"}`)},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if len(ev.Payload) != 100 {
					t.Errorf("len(payload) = %d", len(ev.Payload))
				}
			},
		},
		{
			name: "the size cap applies to the compacted payload",
			cap:  20,
			mods: map[string]any{"payload": json.RawMessage("{" + strings.Repeat(" \n\t", 50) + `"k": 1` + strings.Repeat(" ", 100) + "}")},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if string(ev.Payload) != `{"k":1}` {
					t.Errorf("payload = %s", ev.Payload)
				}
			},
		},
		{
			name: "payload uses json.Marshal's HTML-safe escapes",
			mods: map[string]any{"payload": json.RawMessage(`{"q":"a<b && c>d","ls":"` + " " + `"}`)},
			check: func(t *testing.T, ev event.Event, _ int64) {
				if got, want := string(ev.Payload), `{"q":"a\u003cb \u0026\u0026 c\u003ed","ls":"\u2028"}`; got != want {
					t.Errorf("payload = %s, want %s", got, want)
				}
				var p map[string]string
				if err := json.Unmarshal(ev.Payload, &p); err != nil || p["q"] != "a<b && c>d" {
					t.Errorf("payload does not decode to the original value: %v %v", p, err)
				}
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lim := event.DefaultLimits
			if tc.cap > 0 {
				lim.MaxPayloadBytes = tc.cap
			}
			ev, ms, err := event.Decode(withFields(t, tc.mods), lim, testNow, "")
			if err != nil {
				t.Fatalf("Decode: %v (%v)", err, fmtDetails(err))
			}
			tc.check(t, ev, ms)
		})
	}
}

func fmtDetails(err error) []apperr.FieldError {
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return ae.Details
	}
	return nil
}

func TestDecodeRejects(t *testing.T) {
	small := event.Limits{MaxPayloadBytes: 32, MaxFutureSkew: time.Hour}
	skew := event.Limits{MaxPayloadBytes: 1 << 10, MaxFutureSkew: time.Hour}
	cases := []struct {
		name string
		lim  *event.Limits
		mods map[string]any
		want []pc
	}{
		// required
		{"eventId missing", nil, map[string]any{"eventId": del}, []pc{{"eventId", "required"}}},
		{"eventId null", nil, map[string]any{"eventId": nil}, []pc{{"eventId", "required"}}},
		{"eventId empty", nil, map[string]any{"eventId": ""}, []pc{{"eventId", "required"}}},
		{"agentId missing", nil, map[string]any{"agentId": del}, []pc{{"agentId", "required"}}},
		{"sessionId empty", nil, map[string]any{"sessionId": ""}, []pc{{"sessionId", "required"}}},
		{"sourceTimestamp missing", nil, map[string]any{"sourceTimestamp": del}, []pc{{"sourceTimestamp", "required"}}},
		{"category null", nil, map[string]any{"category": nil}, []pc{{"category", "required"}}},
		{"schemaVersion missing", nil, map[string]any{"schemaVersion": del}, []pc{{"schemaVersion", "required"}}},
		{"payload missing", nil, map[string]any{"payload": del}, []pc{{"payload", "required"}}},
		{"payload null", nil, map[string]any{"payload": nil}, []pc{{"payload", "required"}}},

		// invalid_type
		{"eventId number", nil, map[string]any{"eventId": 42}, []pc{{"eventId", "invalid_type"}}},
		{"agentId object", nil, map[string]any{"agentId": map[string]int{}}, []pc{{"agentId", "invalid_type"}}},
		{"sessionId bool", nil, map[string]any{"sessionId": true}, []pc{{"sessionId", "invalid_type"}}},
		{"sourceTimestamp unix millis", nil, map[string]any{"sourceTimestamp": 1736937000000}, []pc{{"sourceTimestamp", "invalid_type"}}},
		{"category array", nil, map[string]any{"category": []string{"tool_api"}}, []pc{{"category", "invalid_type"}}},
		{"schemaVersion number", nil, map[string]any{"schemaVersion": 1.0}, []pc{{"schemaVersion", "invalid_type"}}},
		{"previousHash number", nil, map[string]any{"previousHash": 7}, []pc{{"previousHash", "invalid_type"}}},
		{"payload string", nil, map[string]any{"payload": `{"toolName":"x"}`}, []pc{{"payload", "invalid_type"}}},
		{"payload array", nil, map[string]any{"payload": []int{1}}, []pc{{"payload", "invalid_type"}}},
		{"payload number", nil, map[string]any{"payload": 3}, []pc{{"payload", "invalid_type"}}},

		// invalid_format
		{"eventId not a uuid", nil, map[string]any{"eventId": "evt-1"}, []pc{{"eventId", "invalid_format"}}},
		{"eventId uuid without dashes", nil, map[string]any{"eventId": "550e8400e29b41d4a716446655440000"}, []pc{{"eventId", "invalid_format"}}},
		{"eventId uuid with trailing newline", nil, map[string]any{"eventId": "550e8400-e29b-41d4-a716-446655440000\n"}, []pc{{"eventId", "invalid_format"}}},
		{"eventId braced", nil, map[string]any{"eventId": "{550e8400-e29b-41d4-a716-446655440000}"}, []pc{{"eventId", "invalid_format"}}},
		{"agentId with space", nil, map[string]any{"agentId": "my agent"}, []pc{{"agentId", "invalid_format"}}},
		{"agentId leading dot", nil, map[string]any{"agentId": ".agent"}, []pc{{"agentId", "invalid_format"}}},
		{"agentId wildcard", nil, map[string]any{"agentId": "a*"}, []pc{{"agentId", "invalid_format"}}},
		{"sessionId with slash", nil, map[string]any{"sessionId": "s/1"}, []pc{{"sessionId", "invalid_format"}}},
		{"sessionId non-ascii", nil, map[string]any{"sessionId": "sé"}, []pc{{"sessionId", "invalid_format"}}},
		{"sourceTimestamp date only", nil, map[string]any{"sourceTimestamp": "2025-01-15"}, []pc{{"sourceTimestamp", "invalid_format"}}},
		{"sourceTimestamp no zone", nil, map[string]any{"sourceTimestamp": "2025-01-15T10:30:00"}, []pc{{"sourceTimestamp", "invalid_format"}}},
		{"sourceTimestamp space separator", nil, map[string]any{"sourceTimestamp": "2025-01-15 10:30:00Z"}, []pc{{"sourceTimestamp", "invalid_format"}}},
		{"sourceTimestamp month 13", nil, map[string]any{"sourceTimestamp": "2025-13-15T10:30:00Z"}, []pc{{"sourceTimestamp", "invalid_format"}}},
		{"category upper case", nil, map[string]any{"category": "Tool_API"}, []pc{{"category", "invalid_format"}}},
		{"category leading digit", nil, map[string]any{"category": "1tool"}, []pc{{"category", "invalid_format"}}},
		{"category 65 bytes", nil, map[string]any{"category": "c" + strings.Repeat("x", 64)}, []pc{{"category", "invalid_format"}}},

		// too_long
		{"agentId 129 bytes", nil, map[string]any{"agentId": strings.Repeat("a", event.MaxAgentIDLen+1)}, []pc{{"agentId", "too_long"}}},
		{"sessionId 257 bytes", nil, map[string]any{"sessionId": strings.Repeat("s", event.MaxSessionIDLen+1)}, []pc{{"sessionId", "too_long"}}},
		{"previousHash 257 bytes", nil, map[string]any{"previousHash": strings.Repeat("h", event.MaxHashLen+1)}, []pc{{"previousHash", "too_long"}}},

		// out_of_range
		{"sourceTimestamp 1999", nil, map[string]any{"sourceTimestamp": "1999-12-31T23:59:59.999Z"}, []pc{{"sourceTimestamp", "out_of_range"}}},
		{"sourceTimestamp epoch", nil, map[string]any{"sourceTimestamp": "1970-01-01T00:00:00Z"}, []pc{{"sourceTimestamp", "out_of_range"}}},
		{"sourceTimestamp 1999 in UTC though 2000 locally", nil, map[string]any{"sourceTimestamp": "2000-01-01T00:30:00+01:00"}, []pc{{"sourceTimestamp", "out_of_range"}}},
		{"sourceTimestamp beyond default skew", nil, map[string]any{"sourceTimestamp": testNow.Add(24*time.Hour + time.Millisecond).Format(time.RFC3339Nano)}, []pc{{"sourceTimestamp", "out_of_range"}}},
		{"sourceTimestamp in milliseconds-as-seconds future", nil, map[string]any{"sourceTimestamp": "9999-12-31T23:59:59Z"}, []pc{{"sourceTimestamp", "out_of_range"}}},
		{"sourceTimestamp beyond a custom skew", &skew, map[string]any{"sourceTimestamp": testNow.Add(61 * time.Minute).Format(time.RFC3339)}, []pc{{"sourceTimestamp", "out_of_range"}}},

		// unsupported
		{"schemaVersion 2.0", nil, map[string]any{"schemaVersion": "2.0"}, []pc{{"schemaVersion", "unsupported"}}},
		{"schemaVersion v1", nil, map[string]any{"schemaVersion": "v1.0"}, []pc{{"schemaVersion", "unsupported"}}},
		{"schemaVersion bare 1", nil, map[string]any{"schemaVersion": "1"}, []pc{{"schemaVersion", "unsupported"}}},
		{"schemaVersion 1.0.0.0", nil, map[string]any{"schemaVersion": "1.0.0.0"}, []pc{{"schemaVersion", "unsupported"}}},

		// too_large
		{"payload over the cap", &small, map[string]any{"payload": map[string]string{"k": strings.Repeat("x", 32)}}, []pc{{"payload", "too_large"}}},
		{"payload over the cap once escaped", &small, map[string]any{"payload": json.RawMessage(`{"k":"<<<<<"}`)}, []pc{{"payload", "too_large"}}},
		{"payload over the default cap", nil, map[string]any{"payload": map[string]string{"k": strings.Repeat("x", 64<<10)}}, []pc{{"payload", "too_large"}}},

		// several at once, in field order
		{
			"every field wrong at once", nil,
			map[string]any{
				"eventId": "nope", "agentId": del, "sessionId": 5, "sourceTimestamp": "yesterday",
				"category": "", "schemaVersion": "3", "previousHash": false, "payload": "[]",
			},
			[]pc{
				{"eventId", "invalid_format"}, {"agentId", "required"}, {"sessionId", "invalid_type"},
				{"sourceTimestamp", "invalid_format"}, {"category", "required"}, {"schemaVersion", "unsupported"},
				{"previousHash", "invalid_type"}, {"payload", "invalid_type"},
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			lim := event.DefaultLimits
			if tc.lim != nil {
				lim = *tc.lim
			}
			ev, ms, err := event.Decode(withFields(t, tc.mods), lim, testNow, "")
			if err == nil {
				t.Fatalf("Decode accepted it: %+v", ev)
			}
			if !reflect.DeepEqual(ev, event.Event{}) || ms != 0 {
				t.Errorf("a rejected event must come back zero, got %+v, %d", ev, ms)
			}
			if got := fieldErrors(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("details:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestDecodeBatchPrefix(t *testing.T) {
	body := withFields(t, map[string]any{"eventId": "x", "payload": del})
	_, _, err := event.Decode(body, event.DefaultLimits, testNow, "events[3].")
	want := []pc{{"events[3].eventId", "invalid_format"}, {"events[3].payload", "required"}}
	if got := fieldErrors(t, err); !reflect.DeepEqual(got, want) {
		t.Errorf("details = %v, want %v", got, want)
	}
}

func TestDecodeNotAnObject(t *testing.T) {
	for _, tc := range []struct {
		name, body, prefix, path string
	}{
		{"array", `[1,2]`, "", ""},
		{"string", `"event"`, "", ""},
		{"null", `null`, "", ""},
		{"truncated", `{"eventId":`, "", ""},
		{"trailing garbage", kaplaixExample + `}`, "", ""},
		{"empty", ``, "", ""},
		{"malformed payload inside", `{"payload":{"a":}}`, "", ""},
		{"batch item", `7`, "events[12].", "events[12]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := event.Decode([]byte(tc.body), event.DefaultLimits, testNow, tc.prefix)
			if got, want := fieldErrors(t, err), []pc{{tc.path, "malformed_json"}}; !reflect.DeepEqual(got, want) {
				t.Errorf("details = %v, want %v", got, want)
			}
		})
	}
}

func TestDecodeLimitsDisabled(t *testing.T) {
	// Zero limits switch the checks off.
	body := withFields(t, map[string]any{
		"sourceTimestamp": "2999-01-01T00:00:00Z",
		"payload":         map[string]string{"k": strings.Repeat("x", 1<<17)},
	})
	if _, _, err := event.Decode(body, event.Limits{}, testNow, ""); err != nil {
		t.Fatalf("Decode with zero limits: %v", err)
	}
}

func TestExtract(t *testing.T) {
	cases := []struct {
		payload string
		want    event.Attributes
	}{
		{`{"toolName":"web_search","responseStatus":200}`, event.Attributes{ToolName: "web_search", ResponseStatus: 200}},
		{`{}`, event.Attributes{}},
		{`{"toolName":42,"responseStatus":"200"}`, event.Attributes{}},
		{`{"toolName":null,"responseStatus":null}`, event.Attributes{}},
		{`{"toolName":["a"],"responseStatus":{"code":200}}`, event.Attributes{}},
		{`{"toolName":"t","responseStatus":-1}`, event.Attributes{ToolName: "t"}},
		{`{"responseStatus":1000}`, event.Attributes{}},
		{`{"responseStatus":999}`, event.Attributes{ResponseStatus: 999}},
		{`{"responseStatus":1e20}`, event.Attributes{}},
		{`{"responseStatus":404.0}`, event.Attributes{ResponseStatus: 404}},
		{`{"toolName":"` + strings.Repeat("t", 256) + `"}`, event.Attributes{ToolName: strings.Repeat("t", 256)}},
		{`{"toolName":"` + strings.Repeat("t", 257) + `"}`, event.Attributes{}},
		{`{"nested":{"toolName":"x","responseStatus":500}}`, event.Attributes{}},
	}
	for _, tc := range cases {
		ev, _, err := event.Decode(withFields(t, map[string]any{"payload": json.RawMessage(tc.payload)}), event.DefaultLimits, testNow, "")
		if err != nil {
			t.Fatalf("%s: Decode: %v", tc.payload, err)
		}
		if got := ev.Extract(); got != tc.want {
			t.Errorf("Extract(%.60s) = %+v, want %+v", tc.payload, got, tc.want)
		}
	}
}

func TestValidID(t *testing.T) {
	for _, tc := range []struct {
		id   string
		max  int
		want bool
	}{
		{"my-agent", 128, true},
		{"A1._:@+=-", 128, true},
		{"", 128, false},
		{"-a", 128, false},
		{"a b", 128, false},
		{"a>", 128, false},
		{"abcd", 4, true},
		{"abcde", 4, false},
	} {
		if got := event.ValidID(tc.id, tc.max); got != tc.want {
			t.Errorf("ValidID(%q, %d) = %v, want %v", tc.id, tc.max, got, tc.want)
		}
	}
}

// TestDecodeFor: an event without agentId is attributed to the sender's
// agent; one that names an agent keeps it (the caller checks it).
func TestDecodeFor(t *testing.T) {
	now := time.Date(2025, 1, 16, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name       string
		mods       map[string]any
		def, want  string
		wantErrors []pc
	}{
		{"absent", map[string]any{"agentId": delMarker{}}, "bot-a", "bot-a", nil},
		{"null", map[string]any{"agentId": json.RawMessage("null")}, "bot-a", "bot-a", nil},
		{"empty", map[string]any{"agentId": ""}, "bot-a", "bot-a", nil},
		{"named", map[string]any{"agentId": "bot-zzz"}, "bot-a", "bot-zzz", nil},
		{"no default, absent", map[string]any{"agentId": delMarker{}}, "", "", []pc{{"agentId", event.CodeRequired}}},
		{"wrong type stays wrong", map[string]any{"agentId": 7}, "bot-a", "", []pc{{"agentId", event.CodeInvalidType}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ev, _, err := event.DecodeFor(withFields(t, tc.mods), event.DefaultLimits, now, "", tc.def)
			if tc.wantErrors != nil {
				if got := fieldErrors(t, err); !reflect.DeepEqual(got, tc.wantErrors) {
					t.Fatalf("errors %v, want %v", got, tc.wantErrors)
				}
				return
			}
			if err != nil || ev.AgentID != tc.want {
				t.Fatalf("DecodeFor = %q, %v; want %q", ev.AgentID, err, tc.want)
			}
		})
	}
}

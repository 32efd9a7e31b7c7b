package event

import (
	"bytes"
	"encoding/json"
	"reflect"
	"regexp"
	"testing"
)

// The patterns the hand-written matchers in event.go implement. Decode
// used these regexps; the matchers are 5-30× faster (BenchmarkMatchers)
// and must accept exactly the same strings.
var (
	uuidPattern     = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	idPattern       = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:@+=-]*$`)
	categoryPattern = regexp.MustCompile(`^[a-z][a-z0-9_.-]{0,63}$`)
	versionPattern  = regexp.MustCompile(`^1\.[0-9]{1,3}(\.[0-9]{1,3})?$`)
)

var matchers = []struct {
	name  string
	re    *regexp.Regexp
	match func(string) bool
}{
	{"uuid", uuidPattern, isUUID},
	{"id", idPattern, isID},
	{"category", categoryPattern, isCategory},
	{"version", versionPattern, isVersion},
}

var matcherSeeds = []string{
	"", "1", "1.", "1.0", "1.00", "1.000", "1.0000", "1.0.", "1.0.0", "1.0.000", "1.0.0000", "1.0.0.0", "11.0", "2.0", "1,0", "1.a", "1.0\n", " 1.0", "1.2.3",
	"550e8400-e29b-41d4-a716-446655440000", "550E8400-E29B-41D4-A716-446655440000", "550e8400-e29b-41d4-a716-44665544000", "550e8400-e29b-41d4-a716-4466554400000",
	"550e8400e29b-41d4-a716-4466554400000", "550e8400-e29b-41d4-a716-44665544000g", "550e8400-e29b-41d4-a716_446655440000", "550e8400-e29b-41d4-a716-446655440000\n",
	"a", "A", "-", "a-", "-a", "agent.01", "agent:01@x+y=z_w-v", "a b", "a/b", "a\x00", "é", "aé", "a\xff", "a\n",
	"tool_api", "Tool_api", "tool api", "t", "_t", "t.", strings64('a'), strings64('a') + "a",
}

func strings64(c byte) string { return string(bytes.Repeat([]byte{c}, 64)) }

func TestMatchersAgreeWithPatterns(t *testing.T) {
	for _, m := range matchers {
		for _, s := range matcherSeeds {
			if got, want := m.match(s), m.re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, pattern says %v", m.name, s, got, want)
			}
		}
	}
}

func FuzzMatchers(f *testing.F) {
	for _, s := range matcherSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		for _, m := range matchers {
			if got, want := m.match(s), m.re.MatchString(s); got != want {
				t.Errorf("%s(%q) = %v, pattern says %v", m.name, s, got, want)
			}
		}
	})
}

var jsonValueSeeds = []string{
	`{"eventId":"x","agentId":"a","payload":{"a":[1,{"b":"}"}],"c":null},"n":-1.5e3,"t":true,"f":false,"z":null}`,
	" { \"a\" : 1 , \"b\" : [ ] , \"c\" : { } , \"a\" : \"dup\" } ", `{"k\u0065y":1,"\"":2,"\\":3}`, "{\"\xff\":1}", `{"a":1}x`, `{"a":}`, `{"a" 1}`, `null`, ` `, ``,
	`""`, `"a"`, `"agent-01"`, `"a\"b"`, `"a\\b"`, `"\u0041"`, `"é"`, "\"\xff\"", "\"a\x01\"", `"a b"`, `"\ud800"`,
	`1`, `true`, `{}`, `[]`, `{"a":1}`, `{ "a" : [ 1 , 2 ] }`, `{"h":"<a>&"}`, "{\"ls\":\"\u2028\"}", `{"s":"x y\tz"}`, "{\"s\":\"\xe2\"}", `{"a":"\"}"}`,
}

// TestJSONFastPathsAgree checks objectFields, jsonString and
// canonicalPayload against the encoding/json calls they short-cut.
func TestJSONFastPathsAgree(t *testing.T) {
	for _, s := range jsonValueSeeds {
		checkJSONFastPaths(t, []byte(s))
	}
}

func FuzzJSONFastPaths(f *testing.F) {
	for _, s := range jsonValueSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) { checkJSONFastPaths(t, raw) })
}

func checkJSONFastPaths(t *testing.T, raw []byte) {
	t.Helper()
	var wantFields map[string]json.RawMessage
	wantOK := json.Unmarshal(raw, &wantFields) == nil && wantFields != nil
	fields := new(fieldSet)
	ok := objectFields(raw, false, fields)
	if ok != wantOK {
		t.Errorf("objectFields(%q) ok = %v; json.Unmarshal gives %q, %v", raw, ok, wantFields, wantOK)
	}
	if ok {
		for _, name := range eventFields {
			got, gotOK := fields.get(name)
			want, wantOK := wantFields[name]
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Errorf("objectFields(%q)[%s] = %q, %v; json.Unmarshal gives %q, %v", raw, name, got, gotOK, want, wantOK)
			}
		}
		// A document already known valid splits the same way.
		again := new(fieldSet)
		if objectFields(raw, true, again); !reflect.DeepEqual(again, fields) {
			t.Errorf("objectFields(%q, valid) = %q, want %q", raw, *again, *fields)
		}
		// The plain strings, decoded together, are what jsonString
		// decodes one by one.
		plain := fields.plainStrings()
		for k, v := range fields {
			if isPlainString(v) {
				if s, err := jsonString(v); err != nil || s != plain[k] {
					t.Errorf("plainStrings(%q)[%s] = %q; jsonString gives %q, %v", raw, eventFields[k], plain[k], s, err)
				}
			} else if plain[k] != "" {
				t.Errorf("plainStrings(%q)[%s] = %q for a value that is not a plain string", raw, eventFields[k], plain[k])
			}
		}
	}
	var want string
	wantErr := json.Unmarshal(raw, &want)
	got, err := jsonString(raw)
	if (err == nil) != (wantErr == nil) || got != want {
		t.Errorf("jsonString(%q) = %q, %v; json.Unmarshal gives %q, %v", raw, got, err, want, wantErr)
	}
	if !json.Valid(raw) {
		return // canonicalPayload is only called on valid JSON
	}
	wantCanon, wantErr := json.Marshal(json.RawMessage(raw))
	for _, share := range []bool{false, true} {
		canon, err := canonicalPayload(raw, share)
		if (err == nil) != (wantErr == nil) || !bytes.Equal(canon, wantCanon) {
			t.Errorf("canonicalPayload(%q, %v) = %q, %v; json.Marshal gives %q, %v", raw, share, canon, err, wantCanon, wantErr)
		}
	}
}

var matchSink bool

// BenchmarkMatchers compares each hand-written matcher with its regexp on
// a typical valid input.
func BenchmarkMatchers(b *testing.B) {
	inputs := map[string]string{"uuid": "7c9e6679-7425-40de-944b-e07fc1f90ae7", "id": "agent-03.support-bot", "category": "tool_api", "version": "1.0"}
	for _, m := range matchers {
		s := inputs[m.name]
		b.Run(m.name+"/regexp", func(b *testing.B) {
			for b.Loop() {
				matchSink = m.re.MatchString(s)
			}
		})
		b.Run(m.name+"/matcher", func(b *testing.B) {
			for b.Loop() {
				matchSink = m.match(s)
			}
		})
	}
}

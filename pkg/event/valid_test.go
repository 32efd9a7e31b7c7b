package event

import (
	"encoding/json"
	"strings"
	"testing"
)

var validSeeds = []string{
	``, ` `, `1`, `-`, `-0`, `01`, `-01`, `1.`, `1.5`, `.5`, `1e`, `1e+`, `1E-7`, `1.5e3x`, `0x1`,
	`true`, `tru`, `truex`, `false`, `null`, `nul`, `"a"`, `"a`, `"\u00e9\n\"\\\/\b\f\r\t"`, `"\u12"`, `"\u12g4"`, `"\x"`,
	"\"tab\there\"", "\"\xff\xfe\"", `[]`, `[ ]`, `[1,]`, `[,1]`, `[1 2]`, `{}`, `{ }`, `{"a":1}`, `{"a" : [1, {"b":null}] }`,
	`{"a":1,}`, `{"a"}`, `{"a":}`, `{1:2}`, `{"a":1 "b":2}`, `[}`, `{]`, `[1]]`, `[[1]`, "\t[1]\r\n", `{"events":[{"x":1}]}`,
	"\v1", "1\x00", `"a" "b"`, `[1]x`,
}

// TestValidJSON and FuzzValidJSON: validJSON is json.Valid.
func TestValidJSON(t *testing.T) {
	for _, s := range validSeeds {
		checkValidJSON(t, s)
	}
	for _, depth := range []int{maxDepth - 1, maxDepth, maxDepth + 1} {
		checkValidJSON(t, strings.Repeat("[", depth)+strings.Repeat("]", depth))
		checkValidJSON(t, strings.Repeat(`{"a":`, depth)+"1"+strings.Repeat("}", depth))
	}
	checkValidJSON(t, string(prepareSeed()))
}

func FuzzValidJSON(f *testing.F) {
	for _, s := range validSeeds {
		f.Add(s)
	}
	f.Add(string(prepareSeed()))
	f.Fuzz(checkValidJSON)
}

func checkValidJSON(t *testing.T, s string) {
	if got, want := validJSON([]byte(s)), json.Valid([]byte(s)); got != want {
		t.Fatalf("validJSON(%q) = %v, json.Valid says %v", s, got, want)
	}
}

// prepareSeed is a batch body of the shape `vigil bench ingest` sends.
func prepareSeed() []byte {
	return []byte(`{"events":[{"eventId":"7c9e6679-7425-40de-944b-000000000001","agentId":"agent-03.support-bot","sessionId":"sess-03-0007","sourceTimestamp":"2025-01-15T10:30:00.123456Z","category":"tool_api","schemaVersion":"1.0","payload":{"toolName":"http_request","responseStatus":200,"durationMs":412.5e-1,"tags":["env:prod",true,false,null,-3]}}]}`)
}

func BenchmarkValidJSON(b *testing.B) {
	body := []byte(strings.Repeat(string(prepareSeed()), 1))
	for _, bc := range []struct {
		name  string
		valid func([]byte) bool
	}{{"encoding-json", json.Valid}, {"scan", validJSON}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if !bc.valid(body) {
					b.Fatal("invalid")
				}
			}
		})
	}
}

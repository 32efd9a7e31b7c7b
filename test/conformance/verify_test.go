package conformance

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// TestVerify checks the checker: each way an answer can depart from a
// case is reported, and a conforming answer is not.
func TestVerify(t *testing.T) {
	parse := func(s string) any {
		var v any
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	ok := answer{status: 200, header: http.Header{"Retry-After": {"1"}}, json: parse(`{"a":{"b":[1,"x",null]},"s":"v","n":null}`)}
	envelope := answer{status: 404, json: parse(`{"error":{"code":"NOT_FOUND","message":"m","details":[]},"code":"not_found","message":"m"}`)}
	cases := []struct {
		name string
		c    Case
		a    answer
		want []string // substrings of the problems, in order; none for a conforming answer
	}{
		{"conforming", Case{Status: 200, Types: map[string]string{"a.b.0": "number", "a.b.1": "string", "a.b.2": "null", "n": "string|null"},
			Values: map[string]any{"s": "v", "a.b.0": 1}, Headers: []string{"Retry-After"}}, ok, nil},
		{"status", Case{Status: 201}, ok, []string{"status 200, want 201"}},
		{"missing field", Case{Status: 200, Types: map[string]string{"a.c": "string"}}, ok, []string{"a.c is missing"}},
		{"index out of range", Case{Status: 200, Types: map[string]string{"a.b.3": "string"}}, ok, []string{"a.b.3 is missing"}},
		{"wrong type", Case{Status: 200, Types: map[string]string{"s": "number|null"}}, ok, []string{"s is a string, want number|null"}},
		{"wrong value", Case{Status: 200, Values: map[string]any{"s": "w"}}, ok, []string{"s = v, want w"}},
		{"missing header", Case{Status: 200, Headers: []string{"Warning"}}, ok, []string{"header Warning is missing"}},
		{"error envelope", Case{Status: 404, Values: map[string]any{"code": "not_found"}}, envelope, nil},
		{"error without the envelope", Case{Status: 200}, answer{status: 200, json: parse(`{}`)}, nil},
		{"an error answer lacking the envelope", Case{Status: 404}, answer{status: 404, json: parse(`{"code":"not_found"}`)},
			[]string{"is missing", "is missing", "is missing", "is missing"}},
		{"not JSON", Case{Status: 200, Types: map[string]string{"a": "object"}}, answer{status: 200}, []string{"not JSON"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := verify(tc.c, tc.a)
			if len(got) != len(tc.want) {
				t.Fatalf("problems %q, want %d like %q", got, len(tc.want), tc.want)
			}
			for i, w := range tc.want {
				if !strings.Contains(got[i], w) {
					t.Errorf("problem %d = %q, want it to say %q", i, got[i], w)
				}
			}
		})
	}
}

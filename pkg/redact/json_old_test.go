package redact

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

// oldValidJSON is ValidJSON as it was before it skipped clean strings
// without decoding them (perf-ingest2): every string value decoded and
// handed to value. FuzzValidJSONMatchesOld checks the two agree byte for
// byte.
func oldValidJSON(p *Policy, tenant string, raw []byte) ([]byte, int) {
	found := map[string]string{}
	n := 0
	out := rewrite(raw, func(sensitive bool, lit []byte) (string, bool) {
		r, c := p.value(tenant, sensitive, decodeString(lit), found)
		n += c
		return r, c > 0
	}, func(lit string) (string, bool) {
		ph, ok := p.number(tenant, lit)
		if ok {
			n++
		}
		return ph, ok
	})
	if len(found) > 0 && recurs(found, func(v string) bool { return containsJSON(out, v) }) {
		rep := replacerOf(found)
		out = rewrite(out, func(_ bool, lit []byte) (string, bool) {
			s := decodeString(lit)
			r := rep.Replace(s)
			return r, r != s
		}, nil)
	}
	return out, n
}

var validJSONSeeds = []string{
	`{"password":"x","a":[1,2,{"b":"jane@example.com"}],"c":4111111111111111}`,
	`{"toolName":"http_request","argumentsHash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","responseStatus":200,"target":"https://crm.internal.example.net/v1/items/482913?expand=owner","tags":["env:prod","team:support"]}`,
	`{"h":{"Authorization":"Bearer mF_9.B5f-4.1JqM2xZ7pQ0aLkT","X":"api_\u212aey=hunter2222"},"n":"pa\u017f\u017fword: s3cr3tvalue"}`,
	`{"a":"call +44 20 7946 0958","b":"\u0041KIAIOSFODNN7EXAMPLE","c":"QQ 12 34 56 C","d":"x","e":"1234"}`,
	`{"secret":"","token":"abc","k":"ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ghp_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}`,
	`["jane@example.com","jane@example.com x", {"t":"TCK-12345 TCK-12345"}]`,
}

// TestValidJSONMatchesOld and FuzzValidJSONMatchesOld: skipping the
// strings no pre-filter wants changes nothing in the output or the count.
func TestValidJSONMatchesOld(t *testing.T) {
	for _, s := range validJSONSeeds {
		checkValidJSONMatchesOld(t, s)
	}
}

func FuzzValidJSONMatchesOld(f *testing.F) {
	for _, s := range validJSONSeeds {
		f.Add(s)
	}
	corpusSeeds(f, func(s string) string {
		b, _ := json.Marshal(map[string]any{"v": s, "password": s, "l": []any{s, 1}})
		return string(b)
	})
	f.Fuzz(checkValidJSONMatchesOld)
}

func checkValidJSONMatchesOld(t *testing.T, in string) {
	if !json.Valid([]byte(in)) {
		return
	}
	for _, p := range []*Policy{fuzzPolicy(t), mustCompile(t, Settings{}), mustCompile(t, Settings{Disabled: []string{"secret", "card"}})} {
		raw := []byte(in)
		got, n := p.ValidJSON("acme", raw)
		want, wn := oldValidJSON(p, "acme", []byte(in))
		if !bytes.Equal(got, want) || n != wn {
			t.Fatalf("ValidJSON(%q) = %q, %d; the old path gives %q, %d", in, got, n, want, wn)
		}
		if string(raw) != in {
			t.Fatalf("ValidJSON modified its input: %q → %q", in, raw)
		}
	}
}

func mustCompile(t testing.TB, s Settings) *Policy {
	t.Helper()
	r, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Compile(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestContainsFold and FuzzContainsFold: containsFold is
// strings.Contains(strings.ToLower(s), lower), which it replaces.
func TestContainsFold(t *testing.T) {
	for _, s := range []string{"", strings.Repeat("x", 255) + "Token", strings.Repeat("x", 256) + "KEY", "Bearer x", "BEARER", "bea rer", "api_\u212aey", "pa\u017f\u017fword", "PaSsWoRd=1", "tokeN", "@KEY["} {
		checkContainsFold(t, s)
	}
}

func FuzzContainsFold(f *testing.F) {
	for _, s := range []string{"Bearer abc", "api_\u212aey", "TOKEN", "x@Y[z"} {
		f.Add(s)
	}
	f.Fuzz(checkContainsFold)
}

func checkContainsFold(t *testing.T, s string) {
	words := []string{"bearer", "pass", "pwd", "secret", "key", "token"}
	anyWant := false
	for _, w := range words {
		want := strings.Contains(strings.ToLower(s), w)
		if got := containsFold(s, w); got != want {
			t.Fatalf("containsFold(%q, %q) = %v, want %v", s, w, got, want)
		}
		anyWant = anyWant || want
	}
	if got := containsFold(s, words...); got != anyWant {
		t.Fatalf("containsFold(%q, %q) = %v, want %v", s, words, got, anyWant)
	}
}

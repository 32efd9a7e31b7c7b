package redact

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func fuzzPolicy(t testing.TB) *Policy {
	r, err := New(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	p, err := r.Compile(Settings{Patterns: []Pattern{{Name: "ticket", Regex: `TCK-[0-9]{4,}`}}})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// corpusSeeds adds every sample of testdata/corpus.json to f.
func corpusSeeds(f *testing.F, wrap func(string) string) {
	data, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		f.Fatal(err)
	}
	var c struct {
		Positive []struct{ Value string }
		Labelled []struct{ Label, Value string }
		Negative []string
	}
	if err := json.Unmarshal(data, &c); err != nil {
		f.Fatal(err)
	}
	for _, s := range c.Positive {
		f.Add(wrap("x " + s.Value + " y"))
	}
	for _, s := range c.Labelled {
		f.Add(wrap(s.Label + s.Value))
	}
	for _, s := range c.Negative {
		f.Add(wrap(s))
	}
}

// FuzzString: no panics, and no value the redactor detected survives in
// its output.
func FuzzString(f *testing.F) {
	corpusSeeds(f, func(s string) string { return s })
	f.Add("jane@example.com jane@example.com TCK-12345")
	f.Add("4111 1111 1111 1111-4111111111111111")
	p := fuzzPolicy(f)
	f.Fuzz(func(t *testing.T, s string) {
		out, n := p.String("acme", s)
		spans := p.find(s)
		if n != len(spans) {
			t.Fatalf("count %d, spans %d", n, len(spans))
		}
		for _, sp := range spans {
			v := s[sp.start:sp.end]
			if len(v) >= 6 && strings.Contains(out, v) {
				t.Fatalf("detected %s %q survived in %q", sp.class, v, out)
			}
		}
		if n == 0 && out != s {
			t.Fatalf("nothing detected but output changed: %q → %q", s, out)
		}
	})
}

// FuzzJSON: no panics; valid JSON stays valid; every string value the
// redactor detects is gone from the re-decoded output.
func FuzzJSON(f *testing.F) {
	corpusSeeds(f, func(s string) string {
		b, _ := json.Marshal(map[string]any{"v": s, "l": []any{s, 1}})
		return string(b)
	})
	f.Add(`{"password":"x","a":[1,2,{"b":"jane@example.com"}],"c":4111111111111111}`)
	f.Add(`"\ud800"`)
	f.Add(`{"a":"\u0000"}`)
	p := fuzzPolicy(f)
	f.Fuzz(func(t *testing.T, in string) {
		out, n, err := p.JSON("acme", []byte(in))
		if !json.Valid([]byte(in)) {
			if err == nil {
				t.Fatalf("invalid JSON accepted: %q", in)
			}
			return
		}
		if err != nil {
			t.Fatalf("valid JSON rejected: %v", err)
		}
		if !json.Valid(out) {
			t.Fatalf("output is not JSON: %q → %q", in, out)
		}
		if n == 0 && string(out) != in {
			t.Fatalf("nothing detected but output changed: %q → %q", in, out)
		}
		var before, after any
		d := json.NewDecoder(strings.NewReader(in))
		d.UseNumber()
		if d.Decode(&before) != nil {
			return
		}
		_ = json.Unmarshal(out, &after)
		// Keys are kept by design; only values must be clean.
		var vals []string
		var collect func(v any)
		collect = func(v any) {
			switch t2 := v.(type) {
			case string:
				vals = append(vals, t2)
			case map[string]any:
				for _, x := range t2 {
					collect(x)
				}
			case []any:
				for _, x := range t2 {
					collect(x)
				}
			}
		}
		collect(after)
		flat := strings.Join(vals, "\x00")
		var check func(v any)
		check = func(v any) {
			switch t2 := v.(type) {
			case string:
				for _, sp := range p.find(t2) {
					val := t2[sp.start:sp.end]
					if len(val) >= 6 && strings.Contains(flat, val) {
						t.Fatalf("detected %q survived: %s", val, flat)
					}
				}
			case map[string]any:
				for _, x := range t2 {
					check(x)
				}
			case []any:
				for _, x := range t2 {
					check(x)
				}
			}
		}
		check(before)
	})
}

package redact_test

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/redact"
)

var testKey = bytes.Repeat([]byte{7}, 32)

func newRedactor(t testing.TB) *redact.Redactor {
	t.Helper()
	r, err := redact.New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Corpus is testdata/corpus.json: samples of every class, samples behind
// a label, and look-alikes that must survive.
type Corpus struct {
	Positive []struct{ Class, Value string } `json:"positive"`
	Labelled []struct{ Class, Label, Value string }
	Negative []string `json:"negative"`
}

func loadCorpus(t testing.TB) Corpus {
	t.Helper()
	data, err := os.ReadFile("testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c Corpus
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	return c
}

var placeholderRe = regexp.MustCompile(`\[([A-Z_]+):[0-9a-f]{8}\]`)

func TestCorpusPositive(t *testing.T) {
	p := newRedactor(t).Default()
	c := loadCorpus(t)
	_, vgl, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	c.Positive = append(c.Positive, struct{ Class, Value string }{"SECRET", vgl})
	for _, s := range c.Positive {
		for _, tmpl := range []string{"%s", "contact: %s, thanks", "(%s)", "\"%s\""} {
			in := strings.Replace(tmpl, "%s", s.Value, 1)
			out, n := p.String("acme", in)
			if n < 1 || strings.Contains(out, s.Value) {
				t.Errorf("%s %q: not redacted: %q (n=%d)", s.Class, in, out, n)
				continue
			}
			m := placeholderRe.FindAllStringSubmatch(out, -1)
			if len(m) != 1 || m[0][1] != s.Class {
				t.Errorf("%s %q: want one %s placeholder, got %q", s.Class, in, s.Class, out)
			}
		}
	}
	for _, s := range c.Labelled {
		in := "log line: " + s.Label + s.Value + " end"
		out, n := p.String("acme", in)
		if n != 1 || strings.Contains(out, s.Value) || !strings.Contains(out, s.Label) {
			t.Errorf("%q: want the label kept and the value gone, got %q (n=%d)", in, out, n)
		}
		if !strings.Contains(out, "["+s.Class+":") {
			t.Errorf("%q: no %s placeholder in %q", in, s.Class, out)
		}
	}
}

func TestCorpusNegative(t *testing.T) {
	p := newRedactor(t).Default()
	for _, s := range loadCorpus(t).Negative {
		if out, n := p.String("acme", s); n != 0 || out != s {
			t.Errorf("%q must be kept, got %q (n=%d)", s, out, n)
		}
	}
}

func TestPlaceholdersCorrelate(t *testing.T) {
	r := newRedactor(t)
	other, err := redact.New(bytes.Repeat([]byte{8}, 32))
	if err != nil {
		t.Fatal(err)
	}
	p := r.Default()
	a, _ := p.String("acme", "jane@example.com")
	b, _ := p.String("acme", "mail jane@example.com again")
	c, _ := p.String("acme", "bob@example.com")
	d, _ := p.String("globex", "jane@example.com")
	e, _ := other.Default().String("acme", "jane@example.com")
	cases := []struct {
		name string
		ok   bool
	}{
		{"same value, same tenant: same placeholder", strings.Contains(b, a)},
		{"different value: different placeholder", a != c},
		{"different tenant: different placeholder", a != d},
		{"different deployment key: different placeholder", a != e},
	}
	for _, tc := range cases {
		if !tc.ok {
			t.Errorf("%s (a=%q b=%q c=%q d=%q e=%q)", tc.name, a, b, c, d, e)
		}
	}
}

func TestNewRejectsShortKey(t *testing.T) {
	if _, err := redact.New([]byte("short")); err == nil {
		t.Fatal("a 5-byte key was accepted")
	}
}

func TestJSON(t *testing.T) {
	p := newRedactor(t).Default()
	cases := []struct {
		name, in string
		n        int
		keep     []string // substrings that must survive
		gone     []string // substrings that must not
	}{
		{"nothing to do", `{"toolName":"web_search","responseStatus":200,"ok":true,"x":null}`, 0, []string{`"toolName":"web_search"`}, nil},
		{"nested strings, keys kept", `{"jane@example.com":{"to":["jane@example.com",{"cc":"bob@example.org"}]}}`, 2,
			[]string{`{"jane@example.com":`}, []string{`"jane@example.com"]`, "bob@example.org"}},
		{"sensitive key", `{"headers":{"Authorization":"abc","X-Api-Key":"k1234","password":"hunter2"},"password_hint":"blue"}`, 3,
			[]string{`"password_hint":"blue"`, `"Authorization":"[SECRET:`}, []string{`"abc"`, "k1234", "hunter2"}},
		{"card as number", `{"amount":12,"card":4111111111111111,"ts":1736937000000}`, 1, []string{`"amount":12`, `"ts":1736937000000`}, []string{"4111111111111111"}},
		{"escaped string", `{"note":"mail \u006aane@example.com \u003cnow\u003e"}`, 1, nil, []string{"example.com"}},
		{"top-level array", `["+1 415 555 2671","ok"]`, 1, []string{`"ok"`}, []string{"555 2671"}},
		{"whitespace kept", "{ \"a\" : \"jane@example.com\" ,\n \"b\" : 1 }", 1, []string{"{ \"a\" : \"[EMAIL:", "\" ,\n \"b\" : 1 }"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			out, n, err := p.JSON("acme", []byte(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			if n != tc.n {
				t.Errorf("count = %d, want %d: %s", n, tc.n, out)
			}
			if !json.Valid(out) {
				t.Fatalf("output is not JSON: %s", out)
			}
			for _, k := range tc.keep {
				if !bytes.Contains(out, []byte(k)) {
					t.Errorf("%q lost: %s", k, out)
				}
			}
			for _, g := range tc.gone {
				var decoded any
				_ = json.Unmarshal(out, &decoded)
				flat, _ := json.Marshal(decoded)
				if bytes.Contains(out, []byte(g)) || bytes.Contains(flat, []byte(g)) {
					t.Errorf("%q survived: %s", g, out)
				}
			}
			if tc.n == 0 && &out[0] != &[]byte(tc.in)[0] && string(out) != tc.in {
				t.Errorf("unchanged input was rewritten: %s", out)
			}
		})
	}
	if _, _, err := p.JSON("acme", []byte(`{"a":`)); err == nil {
		t.Error("invalid JSON was accepted")
	}
}

func TestValue(t *testing.T) {
	p := newRedactor(t).Default()
	in := map[string]any{
		"to":     "jane@example.com",
		"list":   []any{"ok", "+44 20 7946 0958", 4.111111111111111e15},
		"nested": map[string]any{"token": "t0k3n-value", "n": 3.0},
		"same":   map[string]any{"k": "v"},
	}
	out, n := p.Map("acme", in)
	if n != 4 {
		t.Errorf("count = %d, want 4: %v", n, out)
	}
	if in["to"] != "jane@example.com" {
		t.Error("input was modified")
	}
	b, _ := json.Marshal(out)
	for _, g := range []string{"jane@", "7946", "4111111111111111", "t0k3n"} {
		if bytes.Contains(b, []byte(g)) {
			t.Errorf("%q survived: %s", g, b)
		}
	}
	if out["nested"].(map[string]any)["n"] != 3.0 {
		t.Errorf("number changed: %s", b)
	}
}

func TestSettings(t *testing.T) {
	r := newRedactor(t)
	p, err := r.Compile(redact.Settings{
		Disabled: []string{"email"},
		Patterns: []redact.Pattern{{Name: "employee_id", Regex: `EMP-\d{6}`}},
	})
	if err != nil {
		t.Fatal(err)
	}
	out, n := p.String("acme", "jane@example.com is EMP-123456, card 4111111111111111")
	if n != 2 || !strings.Contains(out, "jane@example.com") || strings.Contains(out, "EMP-123456") || !strings.Contains(out, "[EMPLOYEE_ID:") || !strings.Contains(out, "[CARD:") {
		t.Errorf("got %q (n=%d)", out, n)
	}
	off, err := r.Compile(redact.Settings{Disabled: []string{"secret"}})
	if err != nil {
		t.Fatal(err)
	}
	if out, n, _ := off.JSON("acme", []byte(`{"password":"hunter2"}`)); n != 0 {
		t.Errorf("secrets off still redacted a sensitive key: %s", out)
	}
}

func TestParseSettingsErrors(t *testing.T) {
	cases := []struct {
		name, body string
		paths      []string
	}{
		{"not JSON", `{`, []string{""}},
		{"unknown field", `{"disabled":["email"]}`, []string{""}},
		{"unknown class", `{"disabledClasses":["email","ssn"]}`, []string{"disabledClasses[1]"}},
		{"bad regex", `{"patterns":[{"name":"x","regex":"("}]}`, []string{"patterns[0].regex"}},
		{"backreference (not RE2)", `{"patterns":[{"name":"x","regex":"(a)\\1"}]}`, []string{"patterns[0].regex"}},
		{"matches empty", `{"patterns":[{"name":"x","regex":"a*"}]}`, []string{"patterns[0].regex"}},
		{"too long", `{"patterns":[{"name":"x","regex":"` + strings.Repeat("a", 600) + `"}]}`, []string{"patterns[0].regex"}},
		{"too complex", `{"patterns":[{"name":"x","regex":"(?:a{100}){100}"}]}`, []string{"patterns[0].regex"}},
		{"bad name", `{"patterns":[{"name":"Bad Name","regex":"x"}]}`, []string{"patterns[0].name"}},
		{"built-in name", `{"patterns":[{"name":"email","regex":"x"}]}`, []string{"patterns[0].name"}},
		{"duplicate name", `{"patterns":[{"name":"a","regex":"x"},{"name":"a","regex":"y"}]}`, []string{"patterns[1].name"}},
		{"missing regex", `{"patterns":[{"name":"a"}]}`, []string{"patterns[0].regex"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := redact.ParseSettings([]byte(tc.body))
			var ae *apperr.Error
			if !errorsAs(err, &ae) || ae.Kind != apperr.KindValidation {
				t.Fatalf("want a validation error, got %v", err)
			}
			var got []string
			for _, d := range ae.Details {
				got = append(got, d.Path)
			}
			if strings.Join(got, ",") != strings.Join(tc.paths, ",") {
				t.Errorf("paths = %v, want %v (%v)", got, tc.paths, ae.Details)
			}
		})
	}
	s, err := redact.ParseSettings([]byte(`{"disabledClasses":["phone"],"patterns":[{"name":"ticket","regex":"TCK-[0-9]+"}]}`))
	if err != nil || len(s.Patterns) != 1 || s.Disabled[0] != "phone" {
		t.Fatalf("valid settings: %+v, %v", s, err)
	}
}

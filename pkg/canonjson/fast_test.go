package canonjson

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

// slowCanonicalize is Canonicalize without its fast path: the decoder and
// the encoder, the definition the fast path must reproduce.
func slowCanonicalize(data []byte) ([]byte, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("trailing data after JSON value")
	}
	return Encode(v)
}

var fastSeeds = []struct {
	in   string
	fast bool // whether the fast path takes it
}{
	{`{"b":1,"a":[true,false,null,"x"]}`, true},
	{` { "toolName" : "web_search", "target":"https://example.com", "n": 12 } `, true},
	{`{"a":{"d":1,"c":{"f":2,"e":3}},"b":[{"y":1,"x":2}]}`, true},
	{`{"s":"caf\u00e9 \u003cb\u003e \"q\" \\ \/ \n\t\u0001 \ud83d\ude00 \u2028"}`, true},
	{`{"é":1,"e":2,"\u0065z":3}`, true},
	{`"caf` + "\xff" + `e"`, true},
	{"\"\u2029\"", true},
	{`[-0, 0.5, 1e10, -1.25E-3, 123456789012345678901234567890]`, true},
	{`{}`, true},
	{`[]`, true},
	{`{"a":1,"a":2}`, false},
	{`{"b":1,"a":2,"b":3}`, false},
	{`{"a":1} x`, false},
	{`{"a":1} ]`, false},
	{`{"a":01}`, false},
	{`{"a":1.}`, false},
	{`{"a":tru}`, false},
	{`{"a":"\x"}`, false},
	{"{\"a\":\"\x01\"}", false},
	{`{"a":1,}`, false},
	{`[1,]`, false},
	{``, false},
	{`   `, false},
}

func TestFastMatchesDecoder(t *testing.T) {
	for _, c := range fastSeeds {
		got, ok := fastCanonicalize([]byte(c.in))
		if ok != c.fast {
			t.Errorf("%q: fast path took it = %v, want %v", c.in, ok, c.fast)
		}
		checkFast(t, []byte(c.in))
		if ok {
			again, ok := fastCanonicalize(got)
			if !ok || !bytes.Equal(again, got) {
				t.Errorf("%q: canonical bytes %q are not a fixed point (%q, %v)", c.in, got, again, ok)
			}
		}
	}
}

// checkFast fails when the fast path takes data and answers differently
// from the decoder, or when Canonicalize differs from the decoder.
func checkFast(t *testing.T, data []byte) {
	t.Helper()
	want, werr := slowCanonicalize(data)
	if got, ok := fastCanonicalize(data); ok && (werr != nil || !bytes.Equal(got, want)) {
		t.Fatalf("%q: fast %q, decoder %q (%v)", data, got, want, werr)
	}
	got, err := Canonicalize(data)
	if (err == nil) != (werr == nil) || !bytes.Equal(got, want) {
		t.Fatalf("%q: Canonicalize %q (%v), decoder %q (%v)", data, got, err, want, werr)
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, c := range fastSeeds {
		f.Add([]byte(c.in))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkFast(t, data) })
}

func TestAppendStringMatchesEncoder(t *testing.T) {
	for _, s := range []string{"", "plain", `"q" \ /`, "\b\f\n\r\t\x00\x1f\x7f", "<&>", "café", "\u2028\u2029", "bad \xff\xfe utf8", "😀"} {
		want, err := Encode(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("%q: %q, encoder %q", s, got, want)
		}
	}
}

func FuzzAppendString(f *testing.F) {
	f.Add("plain \x00 \u2028 \xff")
	f.Fuzz(func(t *testing.T, s string) {
		want, _ := Encode(s)
		if got := AppendString(nil, s); !bytes.Equal(got, want) {
			t.Fatalf("%q: %q, encoder %q", s, got, want)
		}
	})
}

func BenchmarkCanonicalize(b *testing.B) {
	data := []byte(`{"toolName":"web_search","target":"https://example.com/search?q=vigil","n":12,"args":{"q":"vigil","limit":10},"tags":["a","b"]}`)
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := Canonicalize(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoder", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := slowCanonicalize(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

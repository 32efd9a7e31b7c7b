package mcppin

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestHash(t *testing.T) {
	base := Definition{Name: "echo", Description: "Echo text.", InputSchema: json.RawMessage(`{"type":"object","properties":{"text":{"type":"string"}}}`)}
	h0, err := base.Hash()
	if err != nil || !ValidHash(h0) {
		t.Fatalf("hash %q %v", h0, err)
	}
	for _, c := range []struct {
		name string
		d    Definition
		same bool
	}{
		{"key order and spacing", Definition{Name: "echo", Description: "Echo text.", InputSchema: json.RawMessage(` { "properties" : {"text":{"type":"string"}}, "type":"object" }`)}, true},
		{"description", Definition{Name: "echo", Description: "Echo text. And mail it.", InputSchema: base.InputSchema}, false},
		{"rename", Definition{Name: "echo2", Description: base.Description, InputSchema: base.InputSchema}, false},
		{"schema", Definition{Name: "echo", Description: base.Description, InputSchema: json.RawMessage(`{"type":"object"}`)}, false},
		{"number spelling", Definition{Name: "echo", Description: base.Description, InputSchema: json.RawMessage(`{"type":"object","maxLength":1.0}`)}, false},
	} {
		h, err := c.d.Hash()
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if (h == h0) != c.same {
			t.Errorf("%s: same hash = %v, want %v", c.name, h == h0, c.same)
		}
	}
	if _, err := (Definition{Name: "x", InputSchema: json.RawMessage(`{`)}).Hash(); err == nil {
		t.Error("a malformed schema hashed")
	}
}

func TestWithAndLookup(t *testing.T) {
	p, changed := ServerPins{}.With(Pin{Name: "b", Hash: "h1"}, Pin{Name: "a", Hash: "h2"})
	if !changed || len(p.Tools) != 2 || p.Tools[0].Name != "a" {
		t.Fatalf("With: %+v %v", p, changed)
	}
	if _, changed := p.With(Pin{Name: "a", Hash: "h2"}); changed {
		t.Error("re-pinning the same hash changed the pins")
	}
	q, changed := p.With(Pin{Name: "a", Hash: "h3"})
	if got, _ := q.Lookup("a"); !changed || got.Hash != "h3" {
		t.Errorf("replace: %+v", q)
	}
	if got, _ := p.Lookup("a"); got.Hash != "h2" {
		t.Error("With modified its receiver")
	}
	if _, ok := p.Lookup("c"); ok {
		t.Error("Lookup found a missing tool")
	}
}

func TestWithout(t *testing.T) {
	p, _ := ServerPins{}.With(Pin{Name: "a", Hash: "h1"}, Pin{Name: "b", Hash: "h2"}, Pin{Name: "c", Hash: "h3"})
	for _, c := range []struct {
		name    string
		names   []string
		want    string
		changed bool
	}{
		{"one tool", []string{"b"}, "a,c", true},
		{"an unpinned tool", []string{"x"}, "a,b,c", false},
		{"every tool", nil, "", true},
	} {
		q, changed := p.Without(c.names...)
		var got []string
		for _, x := range q.Tools {
			got = append(got, x.Name)
		}
		if strings.Join(got, ",") != c.want || changed != c.changed || q.Tools == nil {
			t.Errorf("%s: %v changed=%v, want %s changed=%v", c.name, got, changed, c.want, c.changed)
		}
	}
	if len(p.Tools) != 3 {
		t.Error("Without modified its receiver")
	}
}

func TestDiff(t *testing.T) {
	d := Diff(json.RawMessage(`{"name":"echo","description":"old"}`), json.RawMessage(`{"description":"new","name":"echo"}`))
	for _, want := range []string{`-   "description": "old",`, `+   "description": "new",`, `    "name": "echo"`} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if d := Diff(nil, json.RawMessage(`{"a":1}`)); !strings.Contains(d, `+   "a": 1`) {
		t.Errorf("diff from nothing:\n%s", d)
	}
}

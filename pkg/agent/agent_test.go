package agent_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/canonjson"
	"github.com/vigilhq/vigil/pkg/event"
)

// klaBody is the registration body from the KLA "Register an Agent" example.
const klaBody = `{
"name": "claims-triage",
"description": "Triages inbound insurance claims",
"model": "gpt-4.1",
"temperature": 0.2,
"tools": ["lookup_policy", "flag_for_review"]
}`

var (
	t0          = time.Date(2026, 6, 1, 10, 48, 0, 0, time.UTC)
	t1          = t0.Add(time.Hour)
	generatedRe = regexp.MustCompile(`^agt_[0-9a-f]{12}$`)
	hashRe      = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

type pc struct{ Path, Code string }

func details(t testing.TB, err error) []pc {
	t.Helper()
	var ae *apperr.Error
	if !errors.As(err, &ae) || ae.Kind != apperr.KindValidation {
		t.Fatalf("error %v is not a validation *apperr.Error", err)
	}
	out := []pc{}
	for _, d := range ae.Details {
		if d.Message == "" {
			t.Errorf("detail %s/%s has no message", d.Path, d.Code)
		}
		out = append(out, pc{d.Path, d.Code})
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func TestParseRegistrationKLA(t *testing.T) {
	a, err := agent.ParseRegistration([]byte(klaBody), t0)
	if err != nil {
		t.Fatalf("ParseRegistration: %v", err)
	}
	if !generatedRe.MatchString(a.AgentID) {
		t.Errorf("agentId = %q, want agt_<12 hex>", a.AgentID)
	}
	if !hashRe.MatchString(a.ManifestHash) || a.ManifestHash != a.ComputeManifestHash() {
		t.Errorf("manifestHash = %q, computed %q", a.ManifestHash, a.ComputeManifestHash())
	}
	want := agent.Agent{
		AgentID:      a.AgentID,
		Name:         "claims-triage",
		Description:  "Triages inbound insurance claims",
		Model:        "gpt-4.1",
		Temperature:  ptr(0.2),
		Tools:        []string{"lookup_policy", "flag_for_review"},
		Tags:         []string{},
		Metadata:     map[string]any{},
		Status:       agent.StatusActive,
		Source:       agent.SourceRegistered,
		ManifestHash: a.ManifestHash,
		RegisteredAt: t0,
		UpdatedAt:    t0,
	}
	if !reflect.DeepEqual(a, want) {
		t.Errorf("agent:\n got %+v\nwant %+v", a, want)
	}
	// Lists and maps encode as [] and {}, never null.
	b, _ := json.Marshal(a)
	for _, frag := range []string{`"tags":[]`, `"metadata":{}`, `"status":"active"`, `"source":"registered"`} {
		if !strings.Contains(string(b), frag) {
			t.Errorf("JSON %s lacks %s", b, frag)
		}
	}
	// Generated ids differ.
	b2, _ := agent.ParseRegistration([]byte(klaBody), t0)
	if b2.AgentID == a.AgentID {
		t.Errorf("two registrations got the same generated id %q", a.AgentID)
	}
	if b2.ManifestHash != a.ManifestHash {
		t.Errorf("same manifest, different hashes: %q vs %q", a.ManifestHash, b2.ManifestHash)
	}
}

func TestParseRegistrationAccepts(t *testing.T) {
	cases := []struct {
		name, body string
		check      func(t *testing.T, a agent.Agent)
	}{
		{"empty body generates everything", `{}`, func(t *testing.T, a agent.Agent) {
			if !generatedRe.MatchString(a.AgentID) || a.Name != a.AgentID {
				t.Errorf("id %q name %q", a.AgentID, a.Name)
			}
			if a.Tools == nil || a.Tags == nil || a.Metadata == nil || a.Temperature != nil {
				t.Errorf("defaults not applied: %+v", a)
			}
		}},
		{"agentId given", `{"agentId":"claims-bot"}`, func(t *testing.T, a agent.Agent) {
			if a.AgentID != "claims-bot" || a.Name != "claims-bot" {
				t.Errorf("id %q name %q", a.AgentID, a.Name)
			}
		}},
		{"Kaplaix id alias", `{"id":"my-agent","name":"Mine"}`, func(t *testing.T, a agent.Agent) {
			if a.AgentID != "my-agent" || a.Name != "Mine" {
				t.Errorf("id %q name %q", a.AgentID, a.Name)
			}
		}},
		{"agentId wins over id", `{"id":"from-id","agentId":"from-agent-id"}`, func(t *testing.T, a agent.Agent) {
			if a.AgentID != "from-agent-id" {
				t.Errorf("id %q", a.AgentID)
			}
		}},
		{"null agentId generates one", `{"agentId":null}`, func(t *testing.T, a agent.Agent) {
			if !generatedRe.MatchString(a.AgentID) {
				t.Errorf("id %q", a.AgentID)
			}
		}},
		{"null name defaults to the id", `{"agentId":"x1","name":null}`, func(t *testing.T, a agent.Agent) {
			if a.Name != "x1" {
				t.Errorf("name %q", a.Name)
			}
		}},
		{"agentVersion alias", `{"agentVersion":"2.1.0"}`, func(t *testing.T, a agent.Agent) {
			if a.Version != "2.1.0" {
				t.Errorf("version %q", a.Version)
			}
		}},
		{"every field", `{"agentId":"a1","name":"n","description":"d","model":"m","temperature":0,"tools":["t"],"framework":"langchain","version":"1","owner":"o","environment":"prod","tags":["x","y"],"metadata":{"k":[1,"v"]},"status":"paused"}`,
			func(t *testing.T, a agent.Agent) {
				want := agent.Agent{AgentID: "a1", Name: "n", Description: "d", Model: "m", Temperature: ptr(0.0), Tools: []string{"t"},
					Framework: "langchain", Version: "1", Owner: "o", Environment: "prod", Tags: []string{"x", "y"},
					Metadata: map[string]any{"k": []any{1.0, "v"}}, Status: agent.StatusPaused, Source: agent.SourceRegistered,
					ManifestHash: a.ComputeManifestHash(), RegisteredAt: t0, UpdatedAt: t0}
				if !reflect.DeepEqual(a, want) {
					t.Errorf("\n got %+v\nwant %+v", a, want)
				}
			}},
		{"limits are inclusive", `{"name":"` + strings.Repeat("n", 200) + `","temperature":2,"tools":` + jsonList(256, "t") + `}`,
			func(t *testing.T, a agent.Agent) {
				if len(a.Name) != 200 || *a.Temperature != 2 || len(a.Tools) != 256 {
					t.Errorf("name %d temp %v tools %d", len(a.Name), *a.Temperature, len(a.Tools))
				}
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := agent.ParseRegistration([]byte(tc.body), t0)
			if err != nil {
				t.Fatalf("ParseRegistration: %v (%v)", err, details(t, err))
			}
			if a.ManifestHash != a.ComputeManifestHash() {
				t.Errorf("stale manifest hash")
			}
			tc.check(t, a)
		})
	}
}

func jsonList(n int, item string) string {
	l := make([]string, n)
	for i := range l {
		l[i] = item
	}
	b, _ := json.Marshal(l)
	return string(b)
}

func TestParseRegistrationRejects(t *testing.T) {
	cases := []struct {
		name, body string
		want       []pc
	}{
		{"array body", `[]`, []pc{{"", "malformed_json"}}},
		{"null body", `null`, []pc{{"", "malformed_json"}}},
		{"broken JSON", `{"name":`, []pc{{"", "malformed_json"}}},
		{"agentId number", `{"agentId":7}`, []pc{{"agentId", "invalid_format"}}},
		{"agentId with space", `{"agentId":"a b"}`, []pc{{"agentId", "invalid_format"}}},
		{"agentId empty", `{"agentId":""}`, []pc{{"agentId", "invalid_format"}}},
		{"agentId too long", `{"agentId":"` + strings.Repeat("a", 129) + `"}`, []pc{{"agentId", "invalid_format"}}},
		{"bad id alias", `{"id":"a/b"}`, []pc{{"agentId", "invalid_format"}}},
		{"name empty", `{"name":""}`, []pc{{"name", "required"}}},
		{"name number", `{"name":1}`, []pc{{"name", "invalid_type"}}},
		{"name too long", `{"name":"` + strings.Repeat("n", 201) + `"}`, []pc{{"name", "too_long"}}},
		{"description too long", `{"description":"` + strings.Repeat("d", 4001) + `"}`, []pc{{"description", "too_long"}}},
		{"model object", `{"model":{}}`, []pc{{"model", "invalid_type"}}},
		{"framework too long", `{"framework":"` + strings.Repeat("f", 201) + `"}`, []pc{{"framework", "too_long"}}},
		{"owner bool", `{"owner":true}`, []pc{{"owner", "invalid_type"}}},
		{"environment array", `{"environment":["prod"]}`, []pc{{"environment", "invalid_type"}}},
		{"version number", `{"version":2}`, []pc{{"version", "invalid_type"}}},
		{"tools string", `{"tools":"web_search"}`, []pc{{"tools", "invalid_type"}}},
		{"tools numbers", `{"tools":[1,2]}`, []pc{{"tools", "invalid_type"}}},
		{"tools empty item", `{"tools":["a",""]}`, []pc{{"tools[1]", "invalid_format"}}},
		{"tags long item", `{"tags":["` + strings.Repeat("x", 201) + `"]}`, []pc{{"tags[0]", "invalid_format"}}},
		{"too many tools", `{"tools":` + jsonList(257, "t") + `}`, []pc{{"tools", "too_long"}}},
		{"temperature string", `{"temperature":"hot"}`, []pc{{"temperature", "invalid_type"}}},
		{"temperature above 2", `{"temperature":2.01}`, []pc{{"temperature", "out_of_range"}}},
		{"temperature negative", `{"temperature":-0.1}`, []pc{{"temperature", "out_of_range"}}},
		{"metadata array", `{"metadata":[]}`, []pc{{"metadata", "invalid_type"}}},
		{"metadata string", `{"metadata":"{}"}`, []pc{{"metadata", "invalid_type"}}},
		{"metadata too large", `{"metadata":{"k":"` + strings.Repeat("m", 16<<10) + `"}}`, []pc{{"metadata", "too_large"}}},
		{"status unknown", `{"status":"deleted"}`, []pc{{"status", "invalid_format"}}},
		{"status null", `{"status":null}`, []pc{{"status", "invalid_format"}}},
		{"unknown field", `{"nmae":"typo"}`, []pc{{"nmae", "unknown_field"}}},
		{"several at once, sorted by path", `{"zeta":1,"temperature":9,"agentId":"-x","tools":[""],"name":5}`,
			[]pc{{"agentId", "invalid_format"}, {"name", "invalid_type"}, {"temperature", "out_of_range"}, {"tools[0]", "invalid_format"}, {"zeta", "unknown_field"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, err := agent.ParseRegistration([]byte(tc.body), t0)
			if err == nil {
				t.Fatalf("accepted: %+v", a)
			}
			if got := details(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("details:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func registered(t *testing.T) agent.Agent {
	t.Helper()
	a, err := agent.ParseRegistration([]byte(`{"agentId":"claims-bot","name":"Claims","description":"d","model":"gpt-4.1","temperature":0.2,"tools":["a","b"],"tags":["x"],"metadata":{"team":"ops"},"owner":"o"}`), t0)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestApplyPatch(t *testing.T) {
	cases := []struct {
		name, body   string
		edit         func(a *agent.Agent) // the expected change to the current state
		manifestSame bool
	}{
		{"empty patch changes nothing", `{}`, func(a *agent.Agent) {}, true},
		{"replace description", `{"description":"new"}`, func(a *agent.Agent) { a.Description = "new" }, false},
		{"replace model", `{"model":"gpt-5"}`, func(a *agent.Agent) { a.Model = "gpt-5" }, false},
		{"null clears model", `{"model":null}`, func(a *agent.Agent) { a.Model = "" }, false},
		{"null clears temperature", `{"temperature":null}`, func(a *agent.Agent) { a.Temperature = nil }, false},
		{"temperature zero is not cleared", `{"temperature":0}`, func(a *agent.Agent) { a.Temperature = ptr(0.0) }, false},
		{"null clears tools", `{"tools":null}`, func(a *agent.Agent) { a.Tools = []string{} }, false},
		{"tools replaced, not merged", `{"tools":["c"]}`, func(a *agent.Agent) { a.Tools = []string{"c"} }, false},
		{"tools reordered keep the manifest", `{"tools":["b","a"]}`, func(a *agent.Agent) { a.Tools = []string{"b", "a"} }, true},
		{"null clears tags", `{"tags":null}`, func(a *agent.Agent) { a.Tags = []string{} }, true},
		{"null clears metadata", `{"metadata":null}`, func(a *agent.Agent) { a.Metadata = map[string]any{} }, true},
		{"metadata replaced whole", `{"metadata":{"k":1}}`, func(a *agent.Agent) { a.Metadata = map[string]any{"k": 1.0} }, true},
		{"owner is not manifest", `{"owner":"team-b"}`, func(a *agent.Agent) { a.Owner = "team-b" }, true},
		{"status", `{"status":"retired"}`, func(a *agent.Agent) { a.Status = agent.StatusRetired }, true},
		{"rename", `{"name":"Claims v2"}`, func(a *agent.Agent) { a.Name = "Claims v2" }, false},
		{"same agentId is allowed", `{"agentId":"claims-bot","environment":"prod"}`, func(a *agent.Agent) { a.Environment = "prod" }, true},
		{"several fields", `{"model":"m2","tags":["p","q"],"version":"3"}`, func(a *agent.Agent) {
			a.Model, a.Tags, a.Version = "m2", []string{"p", "q"}, "3"
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cur := registered(t)
			snapshot := registered(t)
			snapshot.AgentID, snapshot.ManifestHash = cur.AgentID, cur.ManifestHash
			next, err := agent.ApplyPatch(cur, []byte(tc.body), t1)
			if err != nil {
				t.Fatalf("ApplyPatch: %v", err)
			}
			want := cur
			want.Tools = slices.Clone(cur.Tools)
			want.Tags = slices.Clone(cur.Tags)
			tc.edit(&want)
			want.UpdatedAt = t1
			want.ManifestHash = want.ComputeManifestHash()
			if !reflect.DeepEqual(next, want) {
				t.Errorf("\n got %+v\nwant %+v", next, want)
			}
			if same := next.ManifestHash == cur.ManifestHash; same != tc.manifestSame {
				t.Errorf("manifest hash unchanged = %v, want %v", same, tc.manifestSame)
			}
			if next.RegisteredAt != t0 {
				t.Errorf("registeredAt changed to %v", next.RegisteredAt)
			}
			if !reflect.DeepEqual(cur, snapshot) {
				t.Errorf("ApplyPatch modified its input:\n now %+v\nwas %+v", cur, snapshot)
			}
		})
	}
}

func TestApplyPatchRejects(t *testing.T) {
	cases := []struct {
		name, body string
		want       []pc
	}{
		{"not an object", `"x"`, []pc{{"", "malformed_json"}}},
		{"agentId changed", `{"agentId":"other"}`, []pc{{"agentId", "immutable"}}},
		{"agentId null", `{"agentId":null}`, []pc{{"agentId", "immutable"}}},
		{"agentId number", `{"agentId":1}`, []pc{{"agentId", "immutable"}}},
		{"name emptied", `{"name":""}`, []pc{{"name", "required"}}},
		{"name nulled", `{"name":null}`, []pc{{"name", "required"}}},
		{"id alias is not patchable", `{"id":"claims-bot"}`, []pc{{"id", "unknown_field"}}},
		{"bad values", `{"temperature":3,"tools":"x","status":"gone"}`, []pc{{"status", "invalid_format"}, {"temperature", "out_of_range"}, {"tools", "invalid_type"}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cur := registered(t)
			next, err := agent.ApplyPatch(cur, []byte(tc.body), t1)
			if err == nil {
				t.Fatalf("accepted: %+v", next)
			}
			if got := details(t, err); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("details:\n got %v\nwant %v", got, tc.want)
			}
		})
	}
}

func TestManifestHash(t *testing.T) {
	base := agent.Agent{Name: "n", Model: "gpt-4.1", Temperature: ptr(0.2), Tools: []string{"a", "b", "c"}}
	h := base.ComputeManifestHash()
	if !hashRe.MatchString(h) {
		t.Fatalf("hash %q", h)
	}
	cases := []struct {
		name string
		edit func(a *agent.Agent)
		same bool
	}{
		{"tools order", func(a *agent.Agent) { a.Tools = []string{"c", "a", "b"} }, true},
		{"non-manifest fields", func(a *agent.Agent) {
			a.AgentID, a.Owner, a.Environment, a.Status, a.Tags, a.Metadata = "x", "o", "e", "paused", []string{"t"}, map[string]any{"k": 1}
			a.RegisteredAt, a.Revision = t1, 9
		}, true},
		{"model", func(a *agent.Agent) { a.Model = "gpt-4.2" }, false},
		{"name", func(a *agent.Agent) { a.Name = "m" }, false},
		{"description", func(a *agent.Agent) { a.Description = "d" }, false},
		{"temperature value", func(a *agent.Agent) { a.Temperature = ptr(0.3) }, false},
		{"temperature unset vs zero", func(a *agent.Agent) { a.Temperature = nil }, false},
		{"tool added", func(a *agent.Agent) { a.Tools = append(slices.Clone(a.Tools), "d") }, false},
		{"tool duplicated", func(a *agent.Agent) { a.Tools = []string{"a", "a", "b", "c"} }, false},
		{"framework", func(a *agent.Agent) { a.Framework = "crewai" }, false},
		{"version", func(a *agent.Agent) { a.Version = "2" }, false},
		{"field boundary", func(a *agent.Agent) { a.Name, a.Description = "", "n" }, false},
	}
	for _, tc := range cases {
		a := base
		a.Tools = slices.Clone(base.Tools)
		tc.edit(&a)
		if got := a.ComputeManifestHash(); (got == h) != tc.same {
			t.Errorf("%s: hash %q vs base %q, want same=%v", tc.name, got, h, tc.same)
		}
	}
	tools := []string{"c", "a", "b"}
	a := agent.Agent{Tools: tools}
	_ = a.ComputeManifestHash()
	if !slices.Equal(tools, []string{"c", "a", "b"}) {
		t.Errorf("ComputeManifestHash reordered the caller's tools: %v", tools)
	}
}

// TestManifestCanonical: the manifest's bytes are in Vigil's canonical
// JSON (what the ledger signs and a verifier recomputes) whatever the
// strings hold, manifestHash is their SHA-256, and a changed manifest
// drops the signature of the old one.
func TestManifestCanonical(t *testing.T) {
	for _, m := range []agent.Manifest{
		{},
		{Name: "n", Description: "<b>&\u2028 \"q\" é \x00", Temperature: ptr(1e-7), Tools: []string{"z", "a"}},
		{Name: "n", Model: "m", Temperature: ptr(2.0), Tools: nil, Framework: "f", Version: "1"},
	} {
		c, err := m.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		again, err := canonjson.Canonicalize(c)
		if err != nil || string(again) != string(c) {
			t.Errorf("%s is not canonical (%s, %v)", c, again, err)
		}
		if !strings.HasPrefix(string(c), `{"description":`) || strings.Contains(string(c), `"tools":null`) {
			t.Errorf("keys not sorted or tools null: %s", c)
		}
		sum := sha256.Sum256(c)
		if h, _ := m.Hash(); h != "sha256:"+hex.EncodeToString(sum[:]) {
			t.Errorf("hash %s is not the SHA-256 of %s", h, c)
		}
	}
	a, err := agent.ParseRegistration([]byte(`{"name":"n"}`), t1)
	if err != nil {
		t.Fatal(err)
	}
	sig := "ed25519:x"
	a.ManifestSignature = &sig
	if same, _ := agent.ApplyPatch(a, []byte(`{"status":"paused"}`), t1); same.ManifestSignature == nil {
		t.Error("a patch outside the manifest dropped its signature")
	}
	if changed, _ := agent.ApplyPatch(a, []byte(`{"model":"m"}`), t1); changed.ManifestSignature != nil || changed.ManifestHash == a.ManifestHash {
		t.Errorf("a changed manifest kept the old signature: %+v", changed)
	}
}

func TestDiscovered(t *testing.T) {
	a := agent.Discovered("my-agent", t0)
	want := agent.Agent{AgentID: "my-agent", Name: "my-agent", Tools: []string{}, Tags: []string{}, Metadata: map[string]any{},
		Status: agent.StatusActive, Source: agent.SourceDiscovered, RegisteredAt: t0, UpdatedAt: t0}
	want.ManifestHash = want.ComputeManifestHash()
	if !reflect.DeepEqual(a, want) {
		t.Errorf("\n got %+v\nwant %+v", a, want)
	}
}

func TestNewID(t *testing.T) {
	seen := map[string]bool{}
	for range 1000 {
		id := agent.NewID()
		if !generatedRe.MatchString(id) || !event.ValidID(id, event.MaxAgentIDLen) {
			t.Fatalf("NewID() = %q", id)
		}
		if seen[id] {
			t.Fatalf("NewID repeated %q", id)
		}
		seen[id] = true
	}
}

func FuzzParseRegistration(f *testing.F) {
	for _, s := range []string{
		klaBody, `{}`, `null`, `[]`, `{"id":"my-agent"}`, `{"agentId":"a b","name":""}`,
		`{"name":null,"tools":null,"tags":[""],"metadata":[],"temperature":"x","status":"paused"}`,
		`{"agentId":"x","id":"y","agentVersion":"1","bogus":true}`, `{"metadata":{"a":{"b":[1,2,{"c":null}]}}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		a, err := agent.ParseRegistration(body, t0)
		if err != nil {
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Kind != apperr.KindValidation || len(ae.Details) == 0 {
				t.Fatalf("error is not a validation error with details: %#v", err)
			}
			return
		}
		if !event.ValidID(a.AgentID, event.MaxAgentIDLen) {
			t.Fatalf("accepted invalid agentId %q", a.AgentID)
		}
		if a.Name == "" {
			t.Errorf("accepted an empty name")
		}
		if a.ManifestHash != a.ComputeManifestHash() || !hashRe.MatchString(a.ManifestHash) {
			t.Errorf("manifest hash %q is not the computed one", a.ManifestHash)
		}
		if a.Tools == nil || a.Tags == nil || a.Metadata == nil {
			t.Errorf("nil collections: %+v", a)
		}
		if a.Status != agent.StatusActive && a.Status != agent.StatusPaused && a.Status != agent.StatusRetired {
			t.Errorf("status %q", a.Status)
		}
		if _, err := json.Marshal(a); err != nil {
			t.Errorf("accepted agent does not encode: %v", err)
		}
		// A patch with the agent's own fields is a no-op on the manifest.
		again, err := agent.ApplyPatch(a, []byte(`{}`), t1)
		if err != nil || again.ManifestHash != a.ManifestHash {
			t.Errorf("empty patch: %v, hash %q vs %q", err, again.ManifestHash, a.ManifestHash)
		}
	})
}

func TestDeclarationNarrows(t *testing.T) {
	cur := &agent.Declaration{Tools: []string{"search", "refund"}, Destinations: []string{"*.example.com"}}
	tests := []struct {
		name string
		cur  *agent.Declaration
		next agent.Declaration
		want bool
	}{
		{"none yet", nil, agent.Declaration{Tools: []string{"anything"}}, true},
		{"same", cur, agent.Declaration{Tools: []string{"refund", "search"}, Destinations: []string{"*.example.com"}}, true},
		{"fewer", cur, agent.Declaration{Tools: []string{"search"}}, true},
		{"nothing", cur, agent.Declaration{}, true},
		{"another tool", cur, agent.Declaration{Tools: []string{"search", "shell"}}, false},
		{"another destination", cur, agent.Declaration{Destinations: []string{"evil.test"}}, false},
		{"a wildcard", cur, agent.Declaration{Destinations: []string{"*"}}, false},
		{"case variant", cur, agent.Declaration{Tools: []string{"Search"}}, false},
	}
	for _, tc := range tests {
		if got := tc.cur.Narrows(tc.next); got != tc.want {
			t.Errorf("%s: Narrows = %v, want %v", tc.name, got, tc.want)
		}
	}
}

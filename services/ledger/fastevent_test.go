package ledger

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

func ingestJSON(t testing.TB, r event.Record) []byte {
	t.Helper()
	b, err := r.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func fastEventCases(t testing.TB) []struct {
	name string
	data []byte
	fast bool
} {
	base := event.Record{Tenant: "acme", SourceMS: 1767323045000, ReceivedMS: 1767323045007, KeyID: "k1",
		Client: event.Client{SDK: "python", Framework: "langchain", AgentVersion: "1.2"},
		Event: event.Event{EventID: "00000000-0000-4000-8000-000000000001", AgentID: "agent-1", SessionID: "s-1",
			SourceTimestamp: "2026-01-02T03:04:05Z", Category: "tool_call", SchemaVersion: "1.0",
			Payload: json.RawMessage(`{"toolName":"web_search","target":"https://example.com","n":1}`)}}
	with := func(f func(r *event.Record)) []byte {
		r := base
		f(&r)
		return ingestJSON(t, r)
	}
	marshal := func(v any) []byte {
		b, _ := json.Marshal(v)
		return b
	}
	return []struct {
		name string
		data []byte
		fast bool
	}{
		{"as ingest writes it", ingestJSON(t, base), true},
		{"previous hash, redactions", with(func(r *event.Record) { r.Event.PreviousHash, r.Redactions = "sha256:ab", 2 }), true},
		{"no client, no key", with(func(r *event.Record) { r.Client, r.KeyID = event.Client{}, "" }), true},
		{"html in payload (escaped by ingest)", with(func(r *event.Record) { r.Event.Payload = json.RawMessage(`{"q":"a<b&c>"}`) }), true},
		{"non-ASCII fields", with(func(r *event.Record) { r.Event.AgentID, r.Event.SessionID = "agent-é", "séance" }), true},
		{"U+2028 in a field", with(func(r *event.Record) { r.Event.AgentID = "a\u2028b" }), false},
		{"quote in a field", with(func(r *event.Record) { r.Event.SessionID = `s"1` }), false},
		{"negative times", with(func(r *event.Record) { r.SourceMS, r.ReceivedMS = -5, 0 }), true},
		{"empty payload object", with(func(r *event.Record) { r.Event.Payload = json.RawMessage(`{}`) }), true},
		{"as json.Marshal of a map writes it", marshal(map[string]any{"tenant": "bench", "event": map[string]any{
			"eventId": "e-1", "agentId": "agent-1", "sessionId": "s-1", "sourceTimestamp": "2026-01-02T03:04:05Z",
			"category": "tool_call", "schemaVersion": "1.0", "payload": map[string]any{"toolName": "search", "n": 1}},
			"sourceMs": 1, "receivedMs": 2, "client": map[string]any{"sdk": "go"}}), true},
		{"white space", []byte(" {\"tenant\" : \"t\" , \"event\" : {\"eventId\" : \"e\" , \"payload\" : { \"b\" : 1 , \"a\" : [ 1 , 2 ] } } } "), true},
		{"no event id", with(func(r *event.Record) { r.Event.EventID = "" }), false},
		{"no payload", []byte(`{"event":{"eventId":"e"}}`), false},
		{"null payload", []byte(`{"event":{"eventId":"e","payload":null}}`), false},
		{"unknown key", []byte(`{"event":{"eventId":"e","payload":{}},"extra":1}`), false},
		{"key in another case", []byte(`{"event":{"EventId":"e","payload":{}}}`), false},
		{"repeated key", []byte(`{"event":{"eventId":"e","eventId":"f","payload":{}}}`), false},
		{"repeated payload", []byte(`{"event":{"eventId":"e","payload":{},"payload":{"a":1}}}`), false},
		{"fraction", []byte(`{"sourceMs":1.5,"event":{"eventId":"e","payload":{}}}`), false},
		{"exponent", []byte(`{"sourceMs":1e3,"event":{"eventId":"e","payload":{}}}`), false},
		{"leading zero", []byte(`{"sourceMs":01,"event":{"eventId":"e","payload":{}}}`), false},
		{"string for a number", []byte(`{"sourceMs":"1","event":{"eventId":"e","payload":{}}}`), false},
		{"trailing data", []byte(`{"event":{"eventId":"e","payload":{}}} x`), false},
		{"duplicate payload key", []byte(`{"event":{"eventId":"e","payload":{"a":1,"a":2}}}`), false},
		{"not JSON", []byte(`{"event":`), false},
	}
}

// The fast path must give exactly the generic path's record, or audit,
// verify and offline checks would disagree with the leaves.
func TestFastEventMatchesGeneric(t *testing.T) {
	for _, c := range fastEventCases(t) {
		t.Run(c.name, func(t *testing.T) {
			_, _, _, ok := fastEvent("acme", c.data)
			if ok != c.fast {
				t.Fatalf("fast path took it = %v, want %v", ok, c.fast)
			}
			checkFastEvent(t, "acme", c.data)
		})
	}
}

func checkFastEvent(t *testing.T, tenant string, data []byte) {
	t.Helper()
	canon, id, session, ok := fastEvent(tenant, data)
	if !ok {
		return
	}
	subject := streams.EventReceivedSubject(tenant, "agent-1")
	want, err := prepareGeneric(source{stream: streams.Ingest, subject: subject, seq: 1, data: data})
	if err != nil {
		t.Fatalf("fast path took %q, the generic path fails: %v", data, err)
	}
	if !bytes.Equal(canon, want.row.canonical) || id != want.row.id || session != want.row.session {
		t.Fatalf("%q:\nfast    %s (%q, %q)\ngeneric %s (%q, %q)", data, canon, id, session, want.row.canonical, want.row.id, want.row.session)
	}
	if _, err := evidence.ParseCanonical(canon); err != nil {
		t.Fatalf("%q: %v", data, err)
	}
	// And prepare, which takes the fast path, gives the generic pending.
	var s Service
	got, err := s.prepare(source{stream: streams.Ingest, subject: subject, seq: 1, data: data})
	if err != nil || got.row.key != want.row.key || !bytes.Equal(got.row.leaf, want.row.leaf) || got.tenant != want.tenant {
		t.Fatalf("%q: prepare %+v (%v), generic %+v", data, got.row, err, want.row)
	}
}

func FuzzFastEvent(f *testing.F) {
	for _, c := range fastEventCases(f) {
		f.Add("acme", c.data)
	}
	f.Fuzz(func(t *testing.T, tenant string, data []byte) {
		if tenant == "" || bytes.ContainsAny([]byte(tenant), ".*> \t\r\n") {
			return // not a subject token
		}
		checkFastEvent(t, tenant, data)
	})
}

func TestSubjectTenant(t *testing.T) {
	for _, c := range []struct {
		subject, tenant string
		ok              bool
	}{
		{"ingest.v1.event.acme.agent-1", "acme", true},
		{"ingest.v1.event.acme.", "acme", true},
		{"ingest.v1.event.acme", "", false},
		{"a.b", "", false},
	} {
		tenant, ok := subjectTenant(c.subject)
		if ok != c.ok || (ok && tenant != c.tenant) {
			t.Errorf("%q: %q %v", c.subject, tenant, ok)
		}
	}
}

func TestLeafHashIsRFC6962(t *testing.T) {
	for _, c := range [][]byte{nil, []byte(`{"a":1}`), bytes.Repeat([]byte("x"), 1000)} {
		if got, want := evidence.LeafHash(c), rfc6962.DefaultHasher.HashLeaf(evidence.RecordDigest(c)); !bytes.Equal(got, want) {
			t.Errorf("%q: %x, want %x", c, got, want)
		}
	}
}

func BenchmarkPrepareEvent(b *testing.B) {
	data := ingestJSON(b, event.Record{Tenant: "acme", SourceMS: 1767323045000, ReceivedMS: 1767323045007, KeyID: "k1",
		Client: event.Client{SDK: "python"}, Event: event.Event{EventID: "00000000-0000-4000-8000-000000000001", AgentID: "agent-1",
			SessionID: "s-1", SourceTimestamp: "2026-01-02T03:04:05Z", Category: "tool_call", SchemaVersion: "1.0",
			Payload: json.RawMessage(`{"toolName":"web_search","target":"https://example.com","n":1,"args":{"q":"vigil","limit":10}}`)}})
	m := source{stream: streams.Ingest, subject: streams.EventReceivedSubject("acme", "agent-1"), seq: 1, data: data}
	var s Service
	b.Run("fast", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := s.prepare(m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("generic", func(b *testing.B) {
		b.ReportAllocs()
		for range b.N {
			if _, err := prepareGeneric(m); err != nil {
				b.Fatal(err)
			}
		}
	})
}

var decisionSeeds = []struct {
	data string
	fast bool
}{
	{`{"decisionId":"d-1","sessionId":"s-1","outcome":"allow","rules":[{"id":"r1","then":{"a":[1,"x]}"]}}],"at":1767323045000}`, true},
	{`{"verdict":{"z":1,"a":"}"},"sessionId":"s-é","decisionId":"d-2"}`, true},
	{`{"decisionId":"d-3"}`, true},
	{` {"decisionId" : "d-4" , "n" : 1.50 } `, true},
	{`{"decisionId":"d\"5"}`, false},
	{`{"decisionId":"d-6","DecisionId":"d-7"}`, false},
	{`{"decisionid":"d-8"}`, false},
	{`{"decisionId":7}`, false},
	{`{"decisionId":null}`, false},
	{`{"decisionId":""}`, false},
	{`{"sessionId":"s"}`, false},
	{`["decisionId","d"]`, false},
	{`{"decisionId":"d-9"} {}`, false},
	{`{"decisionId":"d-1","decisionId":"d-2"}`, false},
}

func TestFastDecisionMatchesGeneric(t *testing.T) {
	for _, c := range decisionSeeds {
		if _, _, ok := fastDecision("acme", []byte(c.data)); ok != c.fast {
			t.Errorf("%s: fast path took it = %v, want %v", c.data, ok, c.fast)
		}
		checkFastDecision(t, "acme", []byte(c.data))
	}
}

func checkFastDecision(t *testing.T, tenant string, data []byte) {
	t.Helper()
	env, canon, ok := fastDecision(tenant, data)
	if !ok {
		return
	}
	want, err := prepareGeneric(source{stream: streams.Policy, subject: streams.DecisionSubject(tenant, "agent-1", "allow"), seq: 1, data: data})
	if err != nil {
		t.Fatalf("fast path took %q, the generic path fails: %v", data, err)
	}
	if !bytes.Equal(canon, want.row.canonical) || env.ID != want.row.id || env.Session != want.row.session || env.Kind != want.row.kind || env.Tenant != want.tenant {
		t.Fatalf("%q:\nfast    %s\ngeneric %s", data, canon, want.row.canonical)
	}
}

func FuzzFastDecision(f *testing.F) {
	for _, c := range decisionSeeds {
		f.Add(c.data)
	}
	f.Fuzz(func(t *testing.T, data string) { checkFastDecision(t, "acme", []byte(data)) })
}

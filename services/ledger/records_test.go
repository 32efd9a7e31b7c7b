package ledger

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// The event fast path (a canonical body written directly) must give the
// bytes the generic canonicalisation gives, or audit and verify would
// disagree with the ledger.
func TestEventCanonicalFastPathMatchesGeneric(t *testing.T) {
	payloads := []string{
		`{}`, `{"z":1,"a":{"y":[1,2,{"b":null,"a":true}],"x":"<&>"}}`, `{"n":1.0,"m":-0,"big":12345678901234567890}`,
		`{"é":"\u2028","e":"\t\"quoted\""}`, ``,
	}
	for _, p := range payloads {
		b := EventBody{Tenant: "acme", EventID: "e1", AgentID: "a<1>", SessionID: "s&1", Category: "tool_call", SchemaVersion: "1.0",
			SourceMS: 1, ReceivedMS: 2, PreviousHash: "h", Payload: json.RawMessage(p), SDK: "go", KeyID: "k"}
		env, err := EventEnvelope(b)
		if err != nil {
			t.Fatal(err)
		}
		fast, err := evidence.CanonicalEnvelope(env.Kind, env.Tenant, env.ID, env.Session, env.Record)
		if err != nil {
			t.Fatal(err)
		}
		generic, err := env.Canonical()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(fast, generic) {
			t.Fatalf("payload %s:\nfast    %s\ngeneric %s", p, fast, generic)
		}
		if _, err := evidence.ParseCanonical(fast); err != nil {
			t.Fatalf("payload %s: %v", p, err)
		}
		if again, err := evidence.Canonicalize(fast); err != nil || !bytes.Equal(again, fast) {
			t.Fatalf("payload %s: envelope is not canonical: %s (%v)", p, again, err)
		}
	}
}

func FuzzEventCanonical(f *testing.F) {
	for _, p := range []string{`{}`, `{"b":1,"a":[{"d":"x","c":1e5}]}`, `{"s":"\u00e9<>"}`} {
		f.Add(p, "agent-1", "s-1")
	}
	f.Fuzz(func(t *testing.T, payload, agent, session string) {
		env, err := EventEnvelope(EventBody{Tenant: "t", EventID: "e", AgentID: agent, SessionID: session, Payload: json.RawMessage(payload)})
		if err != nil {
			return
		}
		fast, err := evidence.CanonicalEnvelope(env.Kind, env.Tenant, env.ID, env.Session, env.Record)
		if err != nil {
			return
		}
		generic, err := env.Canonical()
		if err != nil || !bytes.Equal(fast, generic) {
			t.Fatalf("fast %s, generic %s (%v)", fast, generic, err)
		}
		// And both are a fixed point of the fully generic canonicaliser
		// (parse into maps, write with sorted keys).
		if again, err := evidence.Canonicalize(fast); err != nil || !bytes.Equal(again, fast) {
			t.Fatalf("envelope %s is not canonical: %s (%v)", fast, again, err)
		}
	})
}

// TestTraceOf: only an event whose own payload.traceId is an OTLP trace
// id is filed under its trace; a link's or an attribute's traceId, other
// kinds and other spellings are not.
func TestTraceOf(t *testing.T) {
	const id = "4bf92f3577b34da6a3ce929d0e0e4736"
	env := func(payload string) []byte {
		e, err := EventEnvelope(EventBody{Tenant: "acme", EventID: "e1", SessionID: "s", Payload: json.RawMessage(payload)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := evidence.CanonicalEnvelope(e.Kind, e.Tenant, e.ID, e.Session, e.Record)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	tests := []struct {
		name, kind, payload, want string
	}{
		{"span", evidence.KindEvent, `{"source":"otlp","traceId":"` + id + `"}`, id},
		{"link only", evidence.KindEvent, `{"links":[{"traceId":"` + id + `"}]}`, ""},
		{"attribute only", evidence.KindEvent, `{"attributes":{"traceId":"` + id + `"}}`, ""},
		{"upper case", evidence.KindEvent, `{"traceId":"` + strings.ToUpper(id) + `"}`, ""},
		{"not an event", evidence.KindDecision, `{"traceId":"` + id + `"}`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := traceOf(tt.kind, env(tt.payload)); got != tt.want {
				t.Fatalf("traceOf = %q, want %q", got, tt.want)
			}
		})
	}
}

package ledger

import (
	"bytes"
	"encoding/json"
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

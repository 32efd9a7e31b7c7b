package streams_test

import (
	"testing"

	"github.com/vigilhq/vigil/pkg/streams"
)

var benchTokenSink string

// BenchmarkToken covers both encodings: ids that are used verbatim (the
// common case) and ids that need base64url.
func BenchmarkToken(b *testing.B) {
	for _, tc := range []struct{ name, id string }{
		{"verbatim", "agent-03_support-bot"},
		{"encoded", "agent-03.support-bot@example.com"},
		{"uuid", "7c9e6679-7425-40de-944b-e07fc1f90ae7"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				benchTokenSink = streams.Token(tc.id)
			}
		})
	}
}

func BenchmarkUntoken(b *testing.B) {
	tok := streams.Token("agent-03.support-bot@example.com")
	b.ReportAllocs()
	for b.Loop() {
		s, err := streams.Untoken(tok)
		if err != nil {
			b.Fatal(err)
		}
		benchTokenSink = s
	}
}

// BenchmarkEventReceivedSubject is the subject ingest builds per event.
func BenchmarkEventReceivedSubject(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchTokenSink = streams.EventReceivedSubject("default", "agent-03.support-bot")
	}
}

// BenchmarkDecisionSubject is the subject the policy service builds per
// decision recorded (the shard's hash included).
func BenchmarkDecisionSubject(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		benchTokenSink = streams.DecisionSubject("default", "agent-03_support-bot", "require_approval")
	}
}

package event_test

import (
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/event"
)

// benchEventJSON is a typical tool-call event as an SDK sends it, with a
// payload of about 300 bytes (the size `vigil bench ingest` uses).
const benchEventJSON = `{"eventId":"7c9e6679-7425-40de-944b-e07fc1f90ae7","agentId":"agent-03.support-bot","sessionId":"sess-03-0007","sourceTimestamp":"2025-01-15T10:30:00.123456Z","category":"tool_api","schemaVersion":"1.0","payload":{"toolName":"http_request","argumentsHash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","responseStatus":200,"durationMs":412,"model":"claude-3-5-sonnet","inputTokens":1834,"outputTokens":211,"target":"https://crm.internal.example.net/v1/items/482913?expand=owner","tags":["env:prod","team:support"]}}`

// benchInvalidJSON breaks most fields at once, so Decode walks every
// error path and builds a full list of details.
const benchInvalidJSON = `{"eventId":"not-a-uuid","agentId":"-bad id","sessionId":42,"sourceTimestamp":"yesterday","category":"Tool API","schemaVersion":"2.0","previousHash":null,"payload":[1,2,3]}`

var benchNow = time.Date(2025, 1, 16, 12, 0, 0, 0, time.UTC)

func BenchmarkDecode(b *testing.B) {
	data := []byte(benchEventJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := event.Decode(data, event.DefaultLimits, benchNow, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeBatchItem is Decode as the batch endpoint calls it, with
// an error path prefix.
func BenchmarkDecodeBatchItem(b *testing.B) {
	data := []byte(benchEventJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := event.Decode(data, event.DefaultLimits, benchNow, "events[42]."); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeInvalid(b *testing.B) {
	data := []byte(benchInvalidJSON)
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := event.Decode(data, event.DefaultLimits, benchNow, ""); err == nil {
			b.Fatal("invalid event accepted")
		}
	}
}

// BenchmarkDecodeMalformed is the cheapest rejection: not JSON at all.
func BenchmarkDecodeMalformed(b *testing.B) {
	data := []byte(`{"eventId":"7c9e6679-7425-40de-944b-e07fc1f90ae7","agentId":`)
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := event.Decode(data, event.DefaultLimits, benchNow, ""); err == nil {
			b.Fatal("malformed event accepted")
		}
	}
}

func BenchmarkExtract(b *testing.B) {
	ev, _, err := event.Decode([]byte(benchEventJSON), event.DefaultLimits, benchNow, "")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if a := ev.Extract(); a.ToolName != "http_request" {
			b.Fatalf("Extract = %+v", a)
		}
	}
}

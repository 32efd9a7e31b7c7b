package ingest

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/redact"
)

// prepareBatchBody is 100 events as `vigil bench ingest` sends them.
func prepareBatchBody() []byte {
	var b strings.Builder
	b.WriteString(`{"events":[`)
	for i := range 100 {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"eventId":"7c9e6679-7425-40de-944b-%012x","agentId":"agent-03.support-bot","sessionId":"sess-03-0007","sourceTimestamp":"2025-01-15T10:30:00.123456Z","category":"tool_api","schemaVersion":"1.0","payload":{"toolName":"http_request","argumentsHash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","responseStatus":200,"durationMs":412,"model":"claude-3-5-sonnet","inputTokens":1834,"outputTokens":211,"target":"https://crm.internal.example.net/v1/items/482913?expand=owner","tags":["env:prod","team:support"]}}`, i)
	}
	b.WriteString(`]}`)
	return []byte(b.String())
}

// BenchmarkPrepareBatch100 is the CPU the batch handler spends per
// request before publishing, without HTTP or NATS: split the body, decode
// and validate each event, redact its payload, encode its record and
// build its message. ns/op is per batch of 100.
func BenchmarkPrepareBatch100(b *testing.B) {
	r, err := redact.New(make([]byte, 32))
	if err != nil {
		b.Fatal(err)
	}
	pol := r.Default()
	s := &Service{cfg: DefaultConfig()}
	body := prepareBatchBody()
	now := time.Date(2025, 1, 16, 12, 0, 0, 0, time.UTC)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		items, err := decodeBatch(body)
		if err != nil || len(items) != 100 {
			b.Fatal(err)
		}
		arena := make([]byte, 0, len(body)+100*recordSlack/2) // as storeItems sizes it
		for i, it := range items {
			ev, ms, err := it.DecodeFor(s.cfg.Limits, now, "events["+strconv.Itoa(i)+"].", "")
			if err != nil {
				b.Fatal(err)
			}
			if _, arena, err = s.message(ctx, pol, "bench", ev, ms, event.Client{SDK: "bench/1"}, "key", now, arena); err != nil {
				b.Fatal(err)
			}
		}
	}
}

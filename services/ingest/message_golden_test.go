package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/redact"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata/messages.golden from the current code")

// goldenBatch is a batch body of events whose payloads carry every sample
// of the redaction corpus (as strings, under sensitive keys, as numbers
// where they are numeric) and the JSON corners Decode and the record
// encoder special-case: escapes, HTML characters, U+2028, white space,
// upper-case ids, previousHash, a default agent.
func goldenBatch(t *testing.T) []byte {
	data, err := os.ReadFile("../../pkg/redact/testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Positive []struct{ Value string }
		Labelled []struct{ Label, Value string }
		Negative []string
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	var vals []string
	for _, p := range c.Positive {
		vals = append(vals, p.Value, "x "+p.Value+" y")
	}
	for _, l := range c.Labelled {
		vals = append(vals, l.Label+l.Value)
	}
	vals = append(vals, c.Negative...)
	var b strings.Builder
	b.WriteString("{\"events\": [\n")
	for i, v := range vals {
		enc, _ := json.Marshal(v)
		agent := `"agentId":"agent-03.support-bot",`
		if i%7 == 3 {
			agent = `"agentId":null,` // the default agent
		}
		prev := ""
		if i%5 == 1 {
			prev = `,"previousHash":"sha256:` + strconv.Itoa(i) + `"`
		}
		id := fmt.Sprintf("7c9e6679-7425-40de-944b-%012x", i)
		if i%4 == 2 {
			id = strings.ToUpper(id)
		}
		num := "1"
		if strings.Trim(v, "0123456789") == "" && v != "" {
			num = v
		}
		fmt.Fprintf(&b, `%s{"eventId":"%s",%s"sessionId":"sess-%d","sourceTimestamp":"2025-01-15T10:30:00.%03dZ","category":"tool_api","schemaVersion":"1.0"%s,`+
			`"payload":{"toolName":"http_request","v":%s, "password":%s,"l":[%s,{"Authorization":%s}],"n":%s,"html":"<a>&amp;</a>","ls":"\u2028\u00e9\n","esc":"a\/b\"c"}}`+"\n",
			map[bool]string{true: ",", false: ""}[i > 0], id, agent, i, i%1000, prev, enc, enc, enc, enc, num)
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// TestMessagesMatchGolden: the messages ingest publishes for goldenBatch
// (subject, dedupe id, record bytes) are byte for byte those the code
// before the second ingest performance pass (perf-ingest2) published,
// recorded in testdata/messages.golden. Decode, redaction and the record
// encoder may get faster; what they publish must not change.
func TestMessagesMatchGolden(t *testing.T) {
	r, err := redact.New(bytes.Repeat([]byte{9}, 32))
	if err != nil {
		t.Fatal(err)
	}
	pol := r.Default()
	s := &Service{cfg: DefaultConfig()}
	now := time.Date(2025, 1, 16, 12, 0, 0, 0, time.UTC)
	items, err := decodeBatch(goldenBatch(t))
	if err != nil {
		t.Fatal(err)
	}
	// Into a small arena, as storeItems does (the records that do not fit
	// get their own buffers), printed once all are built: a record that
	// wrote into another's bytes shows.
	arena := make([]byte, 0, 64<<10)
	msgs := make([]*nats.Msg, len(items))
	var out bytes.Buffer
	for i, it := range items {
		ev, ms, err := it.DecodeFor(s.cfg.Limits, now, "events["+strconv.Itoa(i)+"].", "agent-default")
		if err != nil {
			fmt.Fprintf(&out, "%d error %v\n", i, err)
			continue
		}
		if msgs[i], arena, err = s.message(context.Background(), pol, "acme", ev, ms, event.Client{SDK: "golden/1", Framework: "<fw>"}, "key-1", now, arena); err != nil {
			t.Fatal(err)
		}
	}
	for i, m := range msgs {
		if m != nil {
			fmt.Fprintf(&out, "%d %s %s\n%s\n", i, m.Subject, m.Header.Get(jetstream.MsgIDHeader), m.Data)
		}
	}
	if *updateGolden {
		if err := os.WriteFile("testdata/messages.golden", out.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile("testdata/messages.golden")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), want) {
		got := strings.Split(out.String(), "\n")
		for i, w := range strings.Split(string(want), "\n") {
			if i >= len(got) || got[i] != w {
				t.Fatalf("line %d differs:\n got %q\nwant %q", i+1, got[min(i, len(got)-1)], w)
			}
		}
		t.Fatalf("output has %d lines, golden %d", len(got), strings.Count(string(want), "\n")+1)
	}
}

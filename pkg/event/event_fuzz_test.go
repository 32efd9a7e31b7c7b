package event_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
)

// fuzzSeeds are also committed as files under testdata/fuzz/FuzzDecode, so
// that plain `go test` runs them even when the f.Add list changes.
var fuzzSeeds = []string{
	kaplaixExample,
	`{}`,
	`null`,
	`[]`,
	`"x"`,
	`{"eventId":"550E8400-E29B-41D4-A716-446655440000","agentId":"a","sessionId":"s","sourceTimestamp":"2025-01-15T12:30:00.123+02:00","category":"c","schemaVersion":"1.2.3","payload":{"html":"<a href=\"x\">&</a>","ls":"\u2028"},"previousHash":"sha256:00"}`,
	`{"eventId":1,"agentId":{},"sessionId":[],"sourceTimestamp":true,"category":null,"schemaVersion":2,"payload":"{}"}`,
	`{"eventId":"550e8400-e29b-41d4-a716-446655440000","agentId":"a b","sessionId":"","sourceTimestamp":"1999-12-31T23:59:59Z","category":"X","schemaVersion":"2.0","payload":[]}`,
	`{"eventId":"550e8400-e29b-41d4-a716-446655440000","agentId":"a","sessionId":"s","sourceTimestamp":"9999-12-31T23:59:59Z","category":"c","schemaVersion":"1.0","payload":{ "a" : [ 1 , 2 ] }}`,
	`{"payload":{"a":}}`,
}

func FuzzDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	lim := event.Limits{MaxPayloadBytes: 1 << 10, MaxFutureSkew: event.DefaultLimits.MaxFutureSkew}
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, ms, err := event.Decode(data, lim, testNow, "")
		if err != nil {
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Kind != apperr.KindValidation {
				t.Fatalf("error is not a validation *apperr.Error: %#v", err)
			}
			if len(ae.Details) == 0 {
				t.Fatalf("validation error without details: %v", err)
			}
			var obj map[string]json.RawMessage
			isObject := json.Unmarshal(data, &obj) == nil && obj != nil
			for _, d := range ae.Details {
				if isObject && d.Path == "" {
					t.Errorf("detail %+v has an empty path for an object input", d)
				}
				if d.Code == "" || d.Message == "" {
					t.Errorf("detail %+v lacks a code or message", d)
				}
			}
			// Batch prefixes reach every detail.
			_, _, perr := event.Decode(data, lim, testNow, "events[0].")
			var pe *apperr.Error
			if !errors.As(perr, &pe) || len(pe.Details) != len(ae.Details) {
				t.Fatalf("prefixed decode disagrees: %v vs %v", perr, err)
			}
			for i, d := range pe.Details {
				if want := strings.TrimSuffix("events[0]."+ae.Details[i].Path, "."); d.Path != want {
					t.Errorf("prefixed path %q, want %q", d.Path, want)
				}
			}
			return
		}
		if ev.EventID != strings.ToLower(ev.EventID) {
			t.Errorf("eventId %q not lower case", ev.EventID)
		}
		var buf bytes.Buffer
		if err := json.Compact(&buf, ev.Payload); err != nil || !bytes.Equal(buf.Bytes(), ev.Payload) {
			t.Errorf("payload %q is not compact JSON (%v)", ev.Payload, err)
		}
		// Ingest publishes the event through json.Marshal; a consumer that
		// decodes it again must see exactly the same event.
		enc, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		ev2, ms2, err := event.Decode(enc, lim, testNow, "")
		if err != nil {
			t.Fatalf("re-encoded event %s rejected: %v", enc, err)
		}
		if !reflect.DeepEqual(ev, ev2) {
			t.Fatalf("round trip changed the event:\n first %+v\nsecond %+v", ev, ev2)
		}
		if ms != ms2 {
			t.Fatalf("round trip changed sourceMs: %d → %d", ms, ms2)
		}
	})
}

package event

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"
)

// batchSeeds are bodies SplitBatch must split exactly as encoding/json
// does; FuzzSplitBatch starts from them.
var batchSeeds = []string{
	`{"events":[{"a":1},{"b":[2,"]"]}]}`, `[{"a":1}, 2 ,"x",null,[],{}]`, ` [ ] `, `[]`, `{}`, `{"events":[]}`, `{"events":null}`, `null`, ` null `,
	`{"Events":[1]}`, `{"EVENTS":[1],"events":[2,3]}`, `{"events":[1],"events":null}`, `{"events":[1],"other":{"events":[9]}}`,
	`{"ev\u0065nts":[1]}`, "{\"event\u017f\":[1]}", `{"events":5}`, `{"events":"x"}`, `{"events":{}}`, `{"events":true}`, `{"events":5,"events":[1]}`,
	`"events"`, `5`, `true`, ``, ` `, `[`, `{"events":[1,]}`, `{"events":[1]}x`, "[\"\xff\"]", `[{"s":"a\"b\\"}]`, " \t\n[1]\r\n", `{"events":[ {"x" : 1} , {"y":2} ]}`,
}

func TestSplitBatchAgreesWithUnmarshal(t *testing.T) {
	for _, s := range batchSeeds {
		checkSplitBatch(t, []byte(s))
	}
}

func FuzzSplitBatch(f *testing.F) {
	for _, s := range batchSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) { checkSplitBatch(t, body) })
}

// unmarshalBatch is how ingest split a batch before SplitBatch.
func unmarshalBatch(body []byte) ([]json.RawMessage, bool) {
	trimmed := bytes.TrimSpace(body)
	var items []json.RawMessage
	var err error
	if len(trimmed) > 0 && trimmed[0] == '[' {
		err = json.Unmarshal(trimmed, &items)
	} else {
		var wrapper struct {
			Events []json.RawMessage `json:"events"`
		}
		err = json.Unmarshal(trimmed, &wrapper)
		items = wrapper.Events
	}
	return items, err == nil
}

func checkSplitBatch(t *testing.T, body []byte) {
	t.Helper()
	want, wantOK := unmarshalBatch(body)
	got, ok := SplitBatch(body)
	if !wantOK {
		want = nil // the items of a refused body are never used
	}
	if ok != wantOK || len(got) != len(want) {
		t.Fatalf("SplitBatch(%q) = %d items, %v; json.Unmarshal gives %d, %v", body, len(got), ok, len(want), wantOK)
	}
	for i := range got {
		if !bytes.Equal(got[i].Raw(), want[i]) {
			t.Errorf("SplitBatch(%q)[%d] = %q, json.Unmarshal gives %q", body, i, got[i].Raw(), want[i])
		}
		// A split item decodes exactly as the same bytes decoded alone.
		ev, ms, err := got[i].DecodeFor(DefaultLimits, batchTestNow, "events[0].", "")
		ev2, ms2, err2 := DecodeFor(want[i], DefaultLimits, batchTestNow, "events[0].", "")
		if ev.EventID != ev2.EventID || !bytes.Equal(ev.Payload, ev2.Payload) || ms != ms2 || (err == nil) != (err2 == nil) || (err != nil && err.Error() != err2.Error()) {
			t.Errorf("item %q decodes to %+v, %v; alone to %+v, %v", want[i], ev, err, ev2, err2)
		}
	}
}

var batchTestNow = time.Date(2025, 1, 16, 12, 0, 0, 0, time.UTC)

package main

// End-to-end tests: the whole stack in-process (embedded NATS, a real
// ClickHouse database), driven over real HTTP the way a Kaplaix or KLA
// client drives it.

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/auth"
)

// kaplaixExample is the request body of the Kaplaix "Sending an event"
// example, byte for byte.
const kaplaixExample = `{ "eventId": "550e8400-e29b-41d4-a716-446655440000", "agentId": "my-agent", "sessionId": "session-001", "sourceTimestamp": "2025-01-15T10:30:00Z", "category": "tool_api", "schemaVersion": "1.0", "payload": { "toolName": "web_search", "argumentsHash": "sha256-of-args", "responseStatus": 200 } }`

const kaplaixEventID = "550e8400-e29b-41d4-a716-446655440000"

func jsonEqual(t testing.TB, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("not JSON: %s", a)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("not JSON: %s", b)
	}
	return reflect.DeepEqual(x, y)
}

func TestIngestAndReadSessions(t *testing.T) {
	e := newEnv(t)

	// The Kaplaix example, verbatim.
	r := e.post(e.owner, "/v1/events", kaplaixExample)
	expect(t, r, http.StatusAccepted, "POST /v1/events (Kaplaix example)")
	var one itemResult
	r.decode(t, &one)
	if one.Status != "accepted" || !one.Accepted || one.Duplicate || one.EventID != kaplaixEventID || one.Sequence == 0 {
		t.Fatalf("single event result = %+v", one)
	}

	t.Run("batch per-item results", func(t *testing.T) {
		forms := []struct {
			name string
			wrap func([]any) any
		}{
			{"wrapped", func(items []any) any { return map[string]any{"events": items} }},
			{"bare array", func(items []any) any { return items }},
		}
		for i, form := range forms {
			t.Run(form.name, func(t *testing.T) {
				sess := fmt.Sprintf("batch-%d", i)
				at := baseTime.Add(time.Duration(i+1) * time.Hour)
				a, b, c := ev("batch-agent", sess, at), ev("batch-agent", sess, at.Add(time.Second)), ev("batch-agent", sess, at.Add(2*time.Second))
				items := []any{
					a,
					b,
					with(a, "eventId", "not-a-uuid"),
					with(a, "payload", map[string]any{"different": true}), // same eventId as item 0
					json.RawMessage(kaplaixExample),                       // stored by the request above
					with(c, "eventId", newUUID(), "payload", nil, "category", "Tool API"),
					c,
					"not an object",
				}
				type want struct {
					status string
					id     string
					errs   []pair
				}
				wants := []want{
					{"accepted", a["eventId"].(string), nil},
					{"accepted", b["eventId"].(string), nil},
					{"rejected", "", []pair{{"events[2].eventId", "invalid_format"}}},
					{"duplicate", a["eventId"].(string), nil},
					{"duplicate", kaplaixEventID, nil},
					{"rejected", "", []pair{{"events[5].category", "invalid_format"}, {"events[5].payload", "required"}}},
					{"accepted", c["eventId"].(string), nil},
					{"rejected", "", []pair{{"events[7]", "malformed_json"}}},
				}
				r := e.post(e.owner, "/v1/events/batch", form.wrap(items))
				expect(t, r, http.StatusAccepted, "POST /v1/events/batch")
				var br batchResponse
				r.decode(t, &br)
				if br.Accepted != 3 || br.Duplicates != 2 || br.Rejected != 3 || br.Failed != 0 {
					t.Errorf("summary = accepted %d, duplicates %d, rejected %d, failed %d; want 3, 2, 3, 0",
						br.Accepted, br.Duplicates, br.Rejected, br.Failed)
				}
				if len(br.Results) != len(wants) {
					t.Fatalf("%d results for %d items: %s", len(br.Results), len(wants), r)
				}
				for j, w := range wants {
					got := br.Results[j]
					if got.Index != j || got.Status != w.status {
						t.Errorf("item %d: index %d status %q, want %d %q", j, got.Index, got.Status, j, w.status)
					}
					if w.id != "" && got.EventID != w.id {
						t.Errorf("item %d: eventId %q, want %q", j, got.EventID, w.id)
					}
					if got.Accepted != (w.status != "rejected") || got.Duplicate != (w.status == "duplicate") {
						t.Errorf("item %d: accepted=%v duplicate=%v for status %s", j, got.Accepted, got.Duplicate, w.status)
					}
					if w.errs == nil {
						if got.Error != nil {
							t.Errorf("item %d: unexpected error %+v", j, got.Error)
						}
						continue
					}
					if got.Error == nil || got.Error.Code != "VALIDATION_ERROR" || got.Error.Message == "" {
						t.Errorf("item %d: error = %+v, want VALIDATION_ERROR", j, got.Error)
						continue
					}
					var pairs []pair
					for _, d := range got.Error.Details {
						pairs = append(pairs, pair{d.Path, d.Code})
					}
					sort.Slice(pairs, func(x, y int) bool { return pairs[x].path < pairs[y].path })
					if !slices.Equal(pairs, w.errs) {
						t.Errorf("item %d: details %v, want %v", j, pairs, w.errs)
					}
				}
				s := e.waitSession(e.owner, sess, 3)
				if s.AgentID != "batch-agent" || s.FirstEventAt != apiTime(at) || s.LastEventAt != apiTime(at.Add(2*time.Second)) {
					t.Errorf("session %s = %+v", sess, s)
				}
			})
		}
	})

	// The Kaplaix event reads back as it was sent.
	s := e.waitSession(e.owner, "session-001", 1)
	r = e.get(e.owner, "/v1/sessions/session-001")
	expect(t, r, http.StatusOK, "GET /v1/sessions/session-001")
	var d sessionDetail
	r.decode(t, &d)
	if s.AgentID != "my-agent" || d.FirstEventAt != "2025-01-15T10:30:00.000Z" || d.LastEventAt != d.FirstEventAt || d.DurationMS != 0 {
		t.Errorf("session-001 = %+v", d.session)
	}
	if len(d.Events) != 1 {
		t.Fatalf("session-001 events = %d, want 1", len(d.Events))
	}
	got := d.Events[0]
	if got.EventID != kaplaixEventID || got.AgentID != "my-agent" || got.SessionID != "session-001" ||
		got.SourceTimestamp != "2025-01-15T10:30:00.000Z" || got.Category != "tool_api" || got.SchemaVersion != "1.0" ||
		!jsonEqual(t, got.Payload, []byte(`{"toolName":"web_search","argumentsHash":"sha256-of-args","responseStatus":200}`)) {
		t.Errorf("stored Kaplaix event = %+v (payload %s)", got, got.Payload)
	}
	if _, err := time.Parse(time.RFC3339, got.ReceivedAt); err != nil {
		t.Errorf("receivedAt %q: %v", got.ReceivedAt, err)
	}

	// One session of events posted out of order, two sharing a timestamp,
	// one with a payload full of characters JSON encoders treat specially.
	const orderSess = "s-order"
	orderAt := baseTime.Add(5 * time.Hour)
	offsets := []time.Duration{4 * time.Second, 0, 9 * time.Second, 2500 * time.Millisecond, 2500 * time.Millisecond, time.Second, 7 * time.Second}
	var posted []map[string]any
	for _, off := range offsets {
		posted = append(posted, ev("order-agent", orderSess, orderAt.Add(off)))
	}
	posted[2]["payload"] = map[string]any{"note": "<b>Tom & Jerry</b> \u2028 é 😀 \"quoted\"", "nested": map[string]any{"a": []any{1, 2.5, nil, true}}}
	for _, p := range posted[:3] {
		expect(t, e.post(e.owner, "/v1/events", p), http.StatusAccepted, "POST /v1/events")
	}
	var rest []any
	for _, p := range posted[3:] {
		rest = append(rest, p)
	}
	expect(t, e.post(e.owner, "/v1/events/batch", rest), http.StatusAccepted, "POST /v1/events/batch")
	s = e.waitSession(e.owner, orderSess, uint64(len(posted)))
	if s.AgentID != "order-agent" || s.FirstEventAt != apiTime(orderAt) || s.LastEventAt != apiTime(orderAt.Add(9*time.Second)) || s.DurationMS != 9000 {
		t.Errorf("session %s = %+v", orderSess, s)
	}

	// The expected order: source time, then event id.
	type key struct {
		at time.Time
		id string
	}
	var order []key
	for _, p := range posted {
		ts, _ := time.Parse(time.RFC3339Nano, p["sourceTimestamp"].(string))
		order = append(order, key{ts, p["eventId"].(string)})
	}
	sort.Slice(order, func(i, j int) bool {
		if !order[i].at.Equal(order[j].at) {
			return order[i].at.Before(order[j].at)
		}
		return order[i].id < order[j].id
	})
	var wantIDs []string
	for _, k := range order {
		wantIDs = append(wantIDs, k.id)
	}

	t.Run("session events paginate", func(t *testing.T) {
		for _, limit := range []int{1, 2, 3, 7, 100} {
			t.Run(fmt.Sprintf("limit=%d", limit), func(t *testing.T) {
				var ids []string
				var events []storedEvent
				cursor := ""
				pages := 0
				for {
					p := fmt.Sprintf("/v1/sessions/%s?limit=%d", orderSess, limit)
					if cursor != "" {
						p += "&cursor=" + url.QueryEscape(cursor)
					}
					r := e.get(e.owner, p)
					expect(t, r, http.StatusOK, "GET "+p)
					var d sessionDetail
					r.decode(t, &d)
					pages++
					if len(d.Events) > limit || (d.NextCursor != nil && len(d.Events) != limit) {
						t.Fatalf("page %d: %d events for limit %d (nextCursor %v)", pages, len(d.Events), limit, d.NextCursor)
					}
					if d.EventCount != uint64(len(posted)) {
						t.Errorf("page %d: eventCount %d", pages, d.EventCount)
					}
					if d.HasMore != (d.NextCursor != nil) {
						t.Errorf("page %d: hasMore %v, nextCursor %v", pages, d.HasMore, d.NextCursor)
					}
					for _, ev := range d.Events {
						ids = append(ids, ev.EventID)
					}
					events = append(events, d.Events...)
					if d.NextCursor == nil {
						break
					}
					if pages > len(posted)+1 {
						t.Fatal("pagination does not end")
					}
					cursor = *d.NextCursor
				}
				if !slices.Equal(ids, wantIDs) {
					t.Errorf("events in order %v\nwant %v", ids, wantIDs)
				}
				if want := (len(posted) + limit - 1) / limit; pages != want {
					t.Errorf("%d pages, want %d", pages, want)
				}
				for i := 1; i < len(events); i++ {
					if events[i].SourceTimestamp < events[i-1].SourceTimestamp {
						t.Errorf("event %d at %s after %s", i, events[i].SourceTimestamp, events[i-1].SourceTimestamp)
					}
				}
			})
		}
	})

	t.Run("session list ordered by last activity", func(t *testing.T) {
		want := []string{orderSess, "batch-1", "batch-0", "session-001"} // last activity, newest first
		for _, limit := range []int{1, 2, 100} {
			all := e.allSessions(e.owner, "/v1/sessions", limit)
			var ids []string
			for _, s := range all {
				ids = append(ids, s.SessionID)
			}
			if !slices.Equal(ids, want) {
				t.Errorf("limit=%d: sessions %v, want %v", limit, ids, want)
			}
			for i := 1; i < len(all); i++ {
				if all[i].LastEventAt > all[i-1].LastEventAt {
					t.Errorf("limit=%d: %s (last %s) listed after %s (last %s)", limit,
						all[i].SessionID, all[i].LastEventAt, all[i-1].SessionID, all[i-1].LastEventAt)
				}
			}
			for _, s := range all {
				if s.SessionID == orderSess && (s.EventCount != uint64(len(posted)) || s.AgentID != "order-agent") {
					t.Errorf("listed %s = %+v", orderSess, s)
				}
			}
		}
		// Filters.
		filters := []struct {
			query string
			want  []string
		}{
			{"agentId=order-agent", []string{orderSess}},
			{"agentId=nobody", nil},
			{"search=BATCH", []string{"batch-1", "batch-0"}},
			{"from=" + url.QueryEscape(orderAt.Format(time.RFC3339)), []string{orderSess}},
			{"to=" + url.QueryEscape(baseTime.Add(time.Minute).Format(time.RFC3339)), []string{"session-001"}},
		}
		for _, f := range filters {
			var ids []string
			for _, s := range e.allSessions(e.owner, "/v1/sessions?"+f.query, 20) {
				ids = append(ids, s.SessionID)
			}
			if !slices.Equal(ids, f.want) {
				t.Errorf("?%s: sessions %v, want %v", f.query, ids, f.want)
			}
		}
	})

	t.Run("export", func(t *testing.T) {
		r := e.get(e.owner, "/v1/sessions/"+orderSess+"/export.json")
		expect(t, r, http.StatusOK, "GET export.json")
		if cd := r.header.Get("Content-Disposition"); !strings.HasPrefix(cd, "attachment") || !strings.Contains(cd, `filename="session-`+orderSess+`.json"`) {
			t.Errorf("Content-Disposition = %q", cd)
		}
		whole := sha256.Sum256(r.body)
		if want := "sha-256=:" + base64.StdEncoding.EncodeToString(whole[:]) + ":"; r.header.Get("Content-Digest") != want {
			t.Errorf("Content-Digest = %q, want %q", r.header.Get("Content-Digest"), want)
		}
		var x struct {
			Format    string          `json:"format"`
			Session   session         `json:"session"`
			Events    json.RawMessage `json:"events"`
			Integrity struct {
				Algorithm string `json:"algorithm"`
				Covers    string `json:"covers"`
				SHA256    string `json:"sha256"`
			} `json:"integrity"`
		}
		r.decode(t, &x)
		sum := sha256.Sum256(x.Events)
		if x.Integrity.SHA256 != hex.EncodeToString(sum[:]) || x.Integrity.Algorithm != "sha256" || x.Integrity.Covers != "events" {
			t.Errorf("integrity = %+v, sha256(events) = %x", x.Integrity, sum)
		}
		if h := r.header.Get("X-Vigil-Events-SHA256"); h != x.Integrity.SHA256 {
			t.Errorf("X-Vigil-Events-SHA256 = %q, integrity %q", h, x.Integrity.SHA256)
		}
		if x.Session.SessionID != orderSess || x.Session.EventCount != uint64(len(posted)) {
			t.Errorf("export session = %+v", x.Session)
		}
		var events []storedEvent
		if err := json.Unmarshal(x.Events, &events); err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, ev := range events {
			ids = append(ids, ev.EventID)
			if ev.EventID == posted[2]["eventId"] {
				want, _ := json.Marshal(posted[2]["payload"])
				if !jsonEqual(t, ev.Payload, want) {
					t.Errorf("exported payload %s, want %s", ev.Payload, want)
				}
			}
		}
		if !slices.Equal(ids, wantIDs) {
			t.Errorf("exported events %v, want %v", ids, wantIDs)
		}
		checkEnvelope(t, e.get(e.owner, "/v1/sessions/no-such-session/export.json"), http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
		checkEnvelope(t, e.get(e.owner, "/v1/sessions/no-such-session"), http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
	})
}

func TestDuplicateEventsStoredOnce(t *testing.T) {
	e := newEnv(t)
	type step struct {
		batch  bool
		events []int // indexes into the scenario's events
		want   []string
	}
	scenarios := []struct {
		name  string
		n     int // distinct events
		alter func(evs []map[string]any) []map[string]any
		steps []step
	}{
		{name: "single repeated", n: 1, steps: []step{
			{false, []int{0}, []string{"accepted"}},
			{false, []int{0}, []string{"duplicate"}},
			{false, []int{0}, []string{"duplicate"}},
		}},
		{name: "within one batch", n: 2, steps: []step{
			{true, []int{0, 0, 1, 0, 1}, []string{"accepted", "duplicate", "accepted", "duplicate", "duplicate"}},
		}},
		{name: "between batches", n: 3, steps: []step{
			{true, []int{0, 1}, []string{"accepted", "accepted"}},
			{true, []int{1, 0, 2}, []string{"duplicate", "duplicate", "accepted"}},
		}},
		{name: "single then batch then single", n: 2, steps: []step{
			{false, []int{0}, []string{"accepted"}},
			{true, []int{0, 1}, []string{"duplicate", "accepted"}},
			{false, []int{1}, []string{"duplicate"}},
		}},
		// Index 1 re-sends event 0's id with another body and an upper-case
		// id: the id is what identifies an event, and the first body wins.
		{name: "same id other body", n: 2, alter: func(evs []map[string]any) []map[string]any {
			evs[1] = with(evs[0], "eventId", strings.ToUpper(evs[0]["eventId"].(string)),
				"payload", map[string]any{"second": true}, "sourceTimestamp", baseTime.Add(time.Hour).Format(time.RFC3339))
			return evs
		}, steps: []step{
			{false, []int{0}, []string{"accepted"}},
			{false, []int{1}, []string{"duplicate"}},
			{true, []int{1, 0}, []string{"duplicate", "duplicate"}},
		}},
	}
	for i, sc := range scenarios {
		t.Run(sc.name, func(t *testing.T) {
			sess := fmt.Sprintf("dedupe-%d", i)
			var evs []map[string]any
			for j := range sc.n {
				evs = append(evs, ev("dedupe-agent", sess, baseTime.Add(time.Duration(j)*time.Second)))
			}
			if sc.alter != nil {
				evs = sc.alter(evs)
			}
			unique := map[string]bool{}
			for _, st := range sc.steps {
				var statuses []string
				if st.batch {
					var items []map[string]any
					for _, j := range st.events {
						items = append(items, evs[j])
					}
					for _, res := range e.postBatch(e.owner, items).Results {
						statuses = append(statuses, res.Status)
						if res.Status == "accepted" {
							unique[res.EventID] = true
						}
					}
				} else {
					r := e.post(e.owner, "/v1/events", evs[st.events[0]])
					expect(t, r, http.StatusAccepted, "POST /v1/events")
					var res itemResult
					r.decode(t, &res)
					statuses = append(statuses, res.Status)
					if res.Status == "accepted" {
						unique[res.EventID] = true
					}
				}
				if !slices.Equal(statuses, st.want) {
					t.Fatalf("statuses %v, want %v", statuses, st.want)
				}
			}
			e.waitSession(e.owner, sess, uint64(len(unique)))
			for id := range unique {
				if n := chCount(t, e.db, "SELECT count() FROM events FINAL WHERE tenant_id = ? AND event_id = ?", "default", id); n != 1 {
					t.Errorf("event %s: %d rows FINAL, want 1", id, n)
				}
				// Dedupe happens at the stream, so not even an unmerged
				// duplicate row exists.
				if n := chCount(t, e.db, "SELECT count() FROM events WHERE tenant_id = ? AND event_id = ?", "default", id); n != 1 {
					t.Errorf("event %s: %d rows, want 1", id, n)
				}
			}
			r := e.get(e.owner, "/v1/sessions/"+sess)
			var d sessionDetail
			r.decode(t, &d)
			if len(d.Events) != len(unique) {
				t.Errorf("session lists %d events, want %d", len(d.Events), len(unique))
			}
			for _, se := range d.Events {
				if !unique[se.EventID] {
					t.Errorf("unexpected event %s", se.EventID)
				}
				if se.EventID == evs[0]["eventId"] && jsonEqual(t, se.Payload, []byte(`{"second":true}`)) {
					t.Errorf("the duplicate's body replaced the original")
				}
			}
		})
	}
}

func TestEventValidation(t *testing.T) {
	e := newEnv(t)
	good := func() map[string]any { return ev("val-agent", "val-session", baseTime) }
	marshal := func(v any) []byte { b, _ := json.Marshal(v); return b }
	cases := []struct {
		name string
		body any
		want []pair
	}{
		{"empty object", map[string]any{}, []pair{
			{"agentId", "required"}, {"category", "required"}, {"eventId", "required"}, {"payload", "required"},
			{"schemaVersion", "required"}, {"sessionId", "required"}, {"sourceTimestamp", "required"}}},
		{"missing eventId", with(good(), "eventId", nil), []pair{{"eventId", "required"}}},
		{"missing agentId", with(good(), "agentId", nil), []pair{{"agentId", "required"}}},
		{"missing sessionId", with(good(), "sessionId", nil), []pair{{"sessionId", "required"}}},
		{"missing sourceTimestamp", with(good(), "sourceTimestamp", nil), []pair{{"sourceTimestamp", "required"}}},
		{"missing category", with(good(), "category", nil), []pair{{"category", "required"}}},
		{"missing schemaVersion", with(good(), "schemaVersion", nil), []pair{{"schemaVersion", "required"}}},
		{"missing payload", with(good(), "payload", nil), []pair{{"payload", "required"}}},
		{"null payload", strings.Replace(string(marshal(good())), `"payload":{`, `"payload":null,"x":{`, 1), []pair{{"payload", "required"}}},
		{"empty eventId", with(good(), "eventId", ""), []pair{{"eventId", "required"}}},
		{"eventId not a UUID", with(good(), "eventId", "evt-123"), []pair{{"eventId", "invalid_format"}}},
		{"eventId UUID without dashes", with(good(), "eventId", "550e8400e29b41d4a716446655440000"), []pair{{"eventId", "invalid_format"}}},
		{"eventId a number", with(good(), "eventId", 42), []pair{{"eventId", "invalid_type"}}},
		{"agentId with a space", with(good(), "agentId", "my agent"), []pair{{"agentId", "invalid_format"}}},
		{"agentId with a slash", with(good(), "agentId", "a/b"), []pair{{"agentId", "invalid_format"}}},
		{"agentId starting with a dot", with(good(), "agentId", ".hidden"), []pair{{"agentId", "invalid_format"}}},
		{"agentId too long", with(good(), "agentId", strings.Repeat("a", 129)), []pair{{"agentId", "too_long"}}},
		{"sessionId too long", with(good(), "sessionId", strings.Repeat("s", 257)), []pair{{"sessionId", "too_long"}}},
		{"sessionId with a wildcard", with(good(), "sessionId", "s*"), []pair{{"sessionId", "invalid_format"}}},
		{"previousHash too long", with(good(), "previousHash", strings.Repeat("h", 257)), []pair{{"previousHash", "too_long"}}},
		{"timestamp without zone", with(good(), "sourceTimestamp", "2025-01-15T10:30:00"), []pair{{"sourceTimestamp", "invalid_format"}}},
		{"timestamp with a space", with(good(), "sourceTimestamp", "2025-01-15 10:30:00Z"), []pair{{"sourceTimestamp", "invalid_format"}}},
		{"timestamp as epoch", with(good(), "sourceTimestamp", 1736937000), []pair{{"sourceTimestamp", "invalid_type"}}},
		{"timestamp before 2000", with(good(), "sourceTimestamp", "1999-12-31T23:59:59Z"), []pair{{"sourceTimestamp", "out_of_range"}}},
		{"timestamp far in the future", with(good(), "sourceTimestamp", time.Now().AddDate(1, 0, 0).Format(time.RFC3339)), []pair{{"sourceTimestamp", "out_of_range"}}},
		{"bad category", with(good(), "category", "Tool API"), []pair{{"category", "invalid_format"}}},
		{"schemaVersion 2.0", with(good(), "schemaVersion", "2.0"), []pair{{"schemaVersion", "unsupported"}}},
		{"schemaVersion a number", with(good(), "schemaVersion", 1.0), []pair{{"schemaVersion", "invalid_type"}}},
		{"payload an array", with(good(), "payload", []any{1, 2}), []pair{{"payload", "invalid_type"}}},
		{"payload a string", with(good(), "payload", "hello"), []pair{{"payload", "invalid_type"}}},
		{"payload too large", with(good(), "payload", map[string]any{"blob": strings.Repeat("x", 70000)}), []pair{{"payload", "too_large"}}},
		{"several problems", with(good(), "eventId", "x", "agentId", "bad agent", "payload", 1), []pair{
			{"agentId", "invalid_format"}, {"eventId", "invalid_format"}, {"payload", "invalid_type"}}},
		{"malformed JSON", `{"eventId": "550e8400-e29b-41d4-a716-446655440000",`, []pair{{"", "malformed_json"}}},
		{"JSON array", `[]`, []pair{{"", "malformed_json"}}},
		{"JSON null", `null`, []pair{{"", "malformed_json"}}},
		{"empty body", ``, []pair{{"", "malformed_json"}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.post(e.owner, "/v1/events", c.body)
			checkEnvelope(t, r, http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.want)
		})
	}

	t.Run("body too large", func(t *testing.T) {
		body := with(good(), "payload", map[string]any{"blob": strings.Repeat("x", 1<<20)})
		checkEnvelope(t, e.post(e.owner, "/v1/events", body), http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", "payload_too_large", []pair{})
	})

	t.Run("batch", func(t *testing.T) {
		over := make([]map[string]any, 1001)
		for i := range over {
			over[i] = ev("val-agent", "val-batch", baseTime)
		}
		cases := []struct {
			name string
			body any
			want []pair
		}{
			{"empty events", `{"events":[]}`, []pair{{"events", "required"}}},
			{"empty array", `[]`, []pair{{"events", "required"}}},
			{"no events field", `{}`, []pair{{"events", "required"}}},
			{"over 1000", map[string]any{"events": over}, []pair{{"events", "too_long"}}},
			{"over 1000 bare", over, []pair{{"events", "too_long"}}},
			{"malformed", `{"events":[{]}`, []pair{{"events", "malformed_json"}}},
			{"events not an array", `{"events":"x"}`, []pair{{"events", "malformed_json"}}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				checkEnvelope(t, e.post(e.owner, "/v1/events/batch", c.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.want)
			})
		}
		// Nothing from the refused batches was stored.
		if n := chCount(t, e.db, "SELECT count() FROM events WHERE session_id = 'val-batch'"); n != 0 {
			t.Errorf("%d events of refused batches stored", n)
		}
		// Exactly 1000 is fine.
		br := e.postBatch(e.owner, over[:1000])
		if br.Accepted != 1000 {
			t.Errorf("batch of 1000: %d accepted", br.Accepted)
		}
	})

	t.Run("list parameters", func(t *testing.T) {
		// A session to address.
		expect(t, e.post(e.owner, "/v1/events", good()), http.StatusAccepted, "POST /v1/events")
		e.waitSession(e.owner, "val-session", 1)
		cases := []struct {
			path string
			want []pair
		}{
			{"/v1/sessions?limit=0", []pair{{"limit", "out_of_range"}}},
			{"/v1/sessions?limit=abc", []pair{{"limit", "out_of_range"}}},
			{"/v1/sessions?limit=-1", []pair{{"limit", "out_of_range"}}},
			{"/v1/sessions?cursor=not-a-cursor!", []pair{{"cursor", "invalid_format"}}},
			{"/v1/sessions?cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`[1,2]`)), []pair{{"cursor", "invalid_format"}}},
			{"/v1/sessions?from=2025-02-01T00:00:00Z&to=2025-01-01T00:00:00Z", []pair{{"from", "out_of_range"}}},
			{"/v1/sessions?from=yesterday", []pair{{"from", "invalid_format"}}},
			{"/v1/sessions?to=2025-01-01", []pair{{"to", "invalid_format"}}},
			{"/v1/sessions?search=" + strings.Repeat("q", 201), []pair{{"search", "too_long"}}},
			{"/v1/sessions/val-session?limit=0", []pair{{"limit", "out_of_range"}}},
			{"/v1/sessions/val-session?cursor=%25%25", []pair{{"cursor", "invalid_format"}}},
			{"/v1/agents?limit=0", []pair{{"limit", "out_of_range"}}},
			{"/v1/agents?cursor=zzz", []pair{{"cursor", "invalid_format"}}},
			{"/v1/agents?status=deleted", []pair{{"status", "invalid_format"}}},
			{"/v1/agents/val-agent/sessions?limit=0", []pair{{"limit", "out_of_range"}}},
		}
		// val-agent was discovered from the event above.
		eventually(t, catchUp, func() (bool, string) {
			r := e.get(e.owner, "/v1/agents/val-agent")
			return r.status == http.StatusOK, r.String()
		})
		for _, c := range cases {
			t.Run(c.path, func(t *testing.T) {
				checkEnvelope(t, e.get(e.owner, c.path), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.want)
			})
		}
	})
}

// route is one endpoint, with the request an allowed caller makes and the
// status it gets.
type route struct {
	name   string
	method string
	path   string
	body   func() any
	ok     int
	perms  []auth.Permission
}

func TestAuth(t *testing.T) {
	e := newEnv(t)
	// Fixtures: a session (and its discovered agent) and a registered agent.
	expect(t, e.post(e.owner, "/v1/events", ev("authz-agent", "authz-session", baseTime)), http.StatusAccepted, "POST /v1/events")
	expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "authz-reg", "name": "authz"}), http.StatusCreated, "POST /v1/agents")
	e.waitSession(e.owner, "authz-session", 1)
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(e.owner, "/v1/agents/authz-agent")
		return r.status == http.StatusOK, "discovered agent: " + r.String()
	})

	registered := 0
	routes := []route{
		{"post event", http.MethodPost, "/v1/events", func() any { return ev("authz-agent", "authz-session", baseTime) }, http.StatusAccepted, []auth.Permission{auth.EventsWrite}},
		{"post batch", http.MethodPost, "/v1/events/batch", func() any {
			return map[string]any{"events": []any{ev("authz-agent", "authz-session", baseTime)}}
		}, http.StatusAccepted, []auth.Permission{auth.EventsWrite}},
		{"list sessions", http.MethodGet, "/v1/sessions", nil, http.StatusOK, []auth.Permission{auth.SessionsRead}},
		{"get session", http.MethodGet, "/v1/sessions/authz-session", nil, http.StatusOK, []auth.Permission{auth.SessionsRead}},
		{"export session", http.MethodGet, "/v1/sessions/authz-session/export.json", nil, http.StatusOK, []auth.Permission{auth.SessionsRead}},
		// Names are unique per tenant (a second registration is 409), so
		// every role registers its own.
		{"register agent", http.MethodPost, "/v1/agents", func() any {
			registered++
			return map[string]any{"name": fmt.Sprintf("by-role-%d", registered)}
		}, http.StatusCreated, []auth.Permission{auth.AgentsRegister}},
		{"list agents", http.MethodGet, "/v1/agents", nil, http.StatusOK, []auth.Permission{auth.AgentsRead}},
		{"get agent", http.MethodGet, "/v1/agents/authz-reg", nil, http.StatusOK, []auth.Permission{auth.AgentsRead}},
		{"patch agent", http.MethodPatch, "/v1/agents/authz-reg", func() any { return map[string]any{"description": "patched"} }, http.StatusOK, []auth.Permission{auth.AgentsWrite}},
		{"agent sessions", http.MethodGet, "/v1/agents/authz-agent/sessions", nil, http.StatusOK, []auth.Permission{auth.AgentsRead, auth.SessionsRead}},
	}
	body := func(rt route) any {
		if rt.body == nil {
			return nil
		}
		return rt.body()
	}

	t.Run("authentication", func(t *testing.T) {
		// A key of the right form that was never issued, and the owner key
		// with its secret altered.
		_, unknown, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		altered := e.owner[:len(e.owner)-1] + "A"
		if altered == e.owner {
			altered = e.owner[:len(e.owner)-1] + "B"
		}
		creds := []struct {
			name   string
			header string
		}{
			{"no header", ""},
			{"basic scheme", "Basic dXNlcjpwYXNz"},
			{"bearer without token", "Bearer "},
			{"token without scheme", e.owner},
			{"malformed key", "Bearer al_live_your_key_here"},
			{"unknown key", "Bearer " + unknown},
			{"altered secret", "Bearer " + altered},
		}
		for _, rt := range routes {
			for _, c := range creds {
				t.Run(rt.name+"/"+c.name, func(t *testing.T) {
					hdr := map[string]string{}
					if c.header != "" {
						hdr["Authorization"] = c.header
					}
					r := e.do(req{method: rt.method, path: rt.path, body: body(rt), header: hdr})
					checkEnvelope(t, r, http.StatusUnauthorized, "AUTHENTICATION_FAILED", "unauthorized", []pair{})
				})
			}
		}
	})

	t.Run("tenant header", func(t *testing.T) {
		for _, rt := range routes {
			t.Run(rt.name, func(t *testing.T) {
				r := e.do(req{method: rt.method, path: rt.path, key: e.owner, body: body(rt), header: map[string]string{"x-tenant-id": "someone-else"}})
				checkEnvelope(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", []pair{})
				r = e.do(req{method: rt.method, path: rt.path, key: e.owner, body: body(rt), header: map[string]string{"x-tenant-id": "default"}})
				expect(t, r, rt.ok, rt.name+" with matching x-tenant-id")
			})
		}
	})

	t.Run("roles", func(t *testing.T) {
		keys := map[auth.Role]string{auth.RoleOwner: e.owner}
		for _, role := range auth.Roles[1:] {
			keys[role] = e.key("default", role)
		}
		// What each role may do, spelled out rather than derived from
		// auth.Allows, so a change to the grants shows up here. The agent
		// key here is one created before keys were bound to agents: it
		// reports and reads, nothing more (TestAgentKeys covers bound keys).
		allowed := map[string][]auth.Role{
			"post event":     {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleAgent},
			"post batch":     {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleAgent},
			"list sessions":  {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer},
			"get session":    {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer},
			"export session": {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer},
			"register agent": {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember},
			"list agents":    auth.Roles,
			"get agent":      auth.Roles,
			"patch agent":    {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember},
			"agent sessions": {auth.RoleOwner, auth.RoleAdmin, auth.RoleMember, auth.RoleViewer},
		}
		for _, rt := range routes {
			for _, role := range auth.Roles {
				t.Run(rt.name+"/"+string(role), func(t *testing.T) {
					r := e.do(req{method: rt.method, path: rt.path, key: keys[role], body: body(rt)})
					if slices.Contains(allowed[rt.name], role) {
						expect(t, r, rt.ok, rt.method+" "+rt.path+" as "+string(role))
						return
					}
					checkEnvelope(t, r, http.StatusForbidden, "FORBIDDEN", "forbidden", []pair{})
				})
			}
		}
	})
}

func TestTenantIsolation(t *testing.T) {
	e := newEnv(t)
	a, b := e.owner, e.key("tenant-b", auth.RoleOwner)
	bViewer := e.key("tenant-b", auth.RoleViewer)

	// Tenant A's data.
	expect(t, e.post(a, "/v1/events", ev("iso-agent-a", "iso-a", baseTime)), http.StatusAccepted, "A: POST /v1/events")
	expect(t, e.post(a, "/v1/agents", map[string]any{"agentId": "iso-reg-a", "name": "A's agent"}), http.StatusCreated, "A: POST /v1/agents")
	// The same event, id and all, sent by both tenants: each stores it.
	shared := ev("shared-agent", "shared-s", baseTime.Add(time.Minute))
	for _, k := range []string{a, b} {
		r := e.post(k, "/v1/events", shared)
		expect(t, r, http.StatusAccepted, "POST shared event")
		var res itemResult
		r.decode(t, &res)
		if res.Status != "accepted" {
			t.Errorf("shared event: %s (dedupe must be per tenant)", res.Status)
		}
	}
	br := e.postBatch(b, []map[string]any{shared, ev("shared-agent", "shared-s", baseTime.Add(2*time.Minute))})
	if br.Results[0].Status != "duplicate" || br.Results[1].Status != "accepted" {
		t.Errorf("B's batch: %+v", br.Results)
	}
	e.waitSession(a, "iso-a", 1)
	e.waitSession(a, "shared-s", 1)
	e.waitSession(b, "shared-s", 2)
	eventually(t, catchUp, func() (bool, string) {
		r := e.get(a, "/v1/agents/iso-agent-a")
		return r.status == http.StatusOK, "A's discovered agent: " + r.String()
	})

	id := shared["eventId"].(string)
	for _, tn := range []string{"default", "tenant-b"} {
		if n := chCount(t, e.db, "SELECT count() FROM events FINAL WHERE tenant_id = ? AND event_id = ?", tn, id); n != 1 {
			t.Errorf("tenant %s holds the shared event %d times, want 1", tn, n)
		}
	}

	t.Run("B cannot reach A's entities", func(t *testing.T) {
		cases := []struct{ method, path string }{
			{http.MethodGet, "/v1/sessions/iso-a"},
			{http.MethodGet, "/v1/sessions/iso-a/export.json"},
			{http.MethodGet, "/v1/agents/iso-reg-a"},
			{http.MethodPatch, "/v1/agents/iso-reg-a"},
			{http.MethodGet, "/v1/agents/iso-reg-a/sessions"},
			{http.MethodGet, "/v1/agents/iso-agent-a"},
			{http.MethodPatch, "/v1/agents/iso-agent-a"},
			{http.MethodGet, "/v1/agents/iso-agent-a/sessions"},
		}
		for _, k := range []struct {
			name, key string
		}{{"owner", b}, {"viewer", bViewer}} {
			for _, c := range cases {
				if k.name == "viewer" && c.method == http.MethodPatch {
					continue // refused by role before the lookup
				}
				t.Run(k.name+" "+c.method+" "+c.path, func(t *testing.T) {
					var body any
					if c.method == http.MethodPatch {
						body = map[string]any{"description": "hijacked"}
					}
					r := e.do(req{method: c.method, path: c.path, key: k.key, body: body})
					checkEnvelope(t, r, http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
				})
			}
		}
		// And nothing B tried changed A's agent.
		var ag agentDoc
		r := e.get(a, "/v1/agents/iso-reg-a")
		expect(t, r, http.StatusOK, "A: GET own agent")
		r.decode(t, &ag)
		if ag.Description != "" || ag.Name != "A's agent" {
			t.Errorf("A's agent changed: %+v", ag)
		}
	})

	t.Run("lists are per tenant", func(t *testing.T) {
		ids := func(key, path string) []string {
			var out []string
			for _, s := range e.allSessions(key, path, 100) {
				out = append(out, s.SessionID+fmt.Sprintf("(%d)", s.EventCount))
			}
			sort.Strings(out)
			return out
		}
		if got, want := ids(b, "/v1/sessions"), []string{"shared-s(2)"}; !slices.Equal(got, want) {
			t.Errorf("B's sessions %v, want %v", got, want)
		}
		if got, want := ids(a, "/v1/sessions"), []string{"iso-a(1)", "shared-s(1)"}; !slices.Equal(got, want) {
			t.Errorf("A's sessions %v, want %v", got, want)
		}
		for _, q := range []string{"?agentId=iso-agent-a", "?search=iso"} {
			if got := ids(b, "/v1/sessions"+q); len(got) != 0 {
				t.Errorf("B's sessions%s = %v", q, got)
			}
		}
		var pg page[agentDoc]
		r := e.get(b, "/v1/agents?limit=100")
		expect(t, r, http.StatusOK, "B: GET /v1/agents")
		r.decode(t, &pg)
		for _, ag := range pg.Data {
			if strings.HasPrefix(ag.AgentID, "iso-") {
				t.Errorf("B lists A's agent %s", ag.AgentID)
			}
		}
		// B's own discovered agent appears once it is discovered.
		eventually(t, catchUp, func() (bool, string) {
			r := e.get(b, "/v1/agents?limit=100")
			var pg page[agentDoc]
			r.decode(t, &pg)
			var got []string
			for _, ag := range pg.Data {
				got = append(got, ag.AgentID)
			}
			return slices.Equal(got, []string{"shared-agent"}), fmt.Sprintf("B's agents %v", got)
		})
		// A's session keeps only A's copy.
		var d sessionDetail
		e.get(a, "/v1/sessions/shared-s").decode(t, &d)
		if len(d.Events) != 1 || d.Events[0].EventID != id {
			t.Errorf("A's shared-s events: %+v", d.Events)
		}
	})

	t.Run("agent ids are per tenant", func(t *testing.T) {
		r := e.post(b, "/v1/agents", map[string]any{"agentId": "iso-reg-a", "name": "B's agent"})
		expect(t, r, http.StatusCreated, "B registers an id A uses")
		var ag agentDoc
		e.get(a, "/v1/agents/iso-reg-a").decode(t, &ag)
		if ag.Name != "A's agent" {
			t.Errorf("A's agent is now %+v", ag)
		}
		e.get(b, "/v1/agents/iso-reg-a").decode(t, &ag)
		if ag.Name != "B's agent" {
			t.Errorf("B's agent is %+v", ag)
		}
	})
}

var (
	generatedID  = regexp.MustCompile(`^agt_[0-9a-f]{12}$`)
	manifestHash = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

func TestAgents(t *testing.T) {
	e := newEnv(t)

	t.Run("register the KLA body", func(t *testing.T) {
		body := `{"name": "claims-triage", "description": "Triages inbound insurance claims", "model": "gpt-4.1", "temperature": 0.2, "tools": ["lookup_policy", "flag_for_review"]}`
		r := e.post(e.owner, "/v1/agents", body)
		expect(t, r, http.StatusCreated, "POST /v1/agents")
		var ag agentDoc
		r.decode(t, &ag)
		if !generatedID.MatchString(ag.AgentID) || !manifestHash.MatchString(ag.ManifestHash) {
			t.Errorf("agentId %q manifestHash %q", ag.AgentID, ag.ManifestHash)
		}
		if _, err := time.Parse(time.RFC3339, ag.RegisteredAt); err != nil {
			t.Errorf("registeredAt %q: %v", ag.RegisteredAt, err)
		}
		if loc := r.header.Get("Location"); loc != "/v1/agents/"+ag.AgentID {
			t.Errorf("Location = %q", loc)
		}
		// Read-your-writes, with no pause: the entity and the list.
		r = e.get(e.owner, "/v1/agents/"+ag.AgentID)
		expect(t, r, http.StatusOK, "GET right after POST")
		var got agentDoc
		r.decode(t, &got)
		if got.Name != "claims-triage" || got.Model != "gpt-4.1" || got.Temperature == nil || *got.Temperature != 0.2 ||
			!slices.Equal(got.Tools, []string{"lookup_policy", "flag_for_review"}) || got.Source != "registered" ||
			got.Status != "active" || got.ManifestHash != ag.ManifestHash || got.Description != "Triages inbound insurance claims" {
			t.Errorf("GET after POST = %+v", got)
		}
		var pg page[agentDoc]
		r = e.get(e.owner, "/v1/agents?limit=100")
		expect(t, r, http.StatusOK, "GET /v1/agents")
		r.decode(t, &pg)
		if !slices.ContainsFunc(pg.Data, func(a agentDoc) bool { return a.AgentID == ag.AgentID }) {
			t.Errorf("list right after POST lacks %s", ag.AgentID)
		}

		// Update, then read back at once.
		r = e.patch(e.owner, "/v1/agents/"+ag.AgentID, map[string]any{"model": "gpt-5", "temperature": 0.7, "tools": []string{"lookup_policy"}, "status": "paused"})
		expect(t, r, http.StatusOK, "PATCH")
		var patched agentDoc
		r.decode(t, &patched)
		if patched.Model != "gpt-5" || patched.ManifestHash == ag.ManifestHash || patched.Revision <= got.Revision {
			t.Errorf("PATCH result = %+v (before: %+v)", patched, got)
		}
		r = e.get(e.owner, "/v1/agents/"+ag.AgentID)
		r.decode(t, &got)
		if got.Model != "gpt-5" || *got.Temperature != 0.7 || !slices.Equal(got.Tools, []string{"lookup_policy"}) ||
			got.Status != "paused" || got.Name != "claims-triage" || got.ManifestHash != patched.ManifestHash || got.RegisteredAt != ag.RegisteredAt {
			t.Errorf("GET right after PATCH = %+v", got)
		}
		r = e.get(e.owner, "/v1/agents?status=paused&limit=100")
		r.decode(t, &pg)
		if len(pg.Data) != 1 || pg.Data[0].AgentID != ag.AgentID || pg.Data[0].Model != "gpt-5" {
			t.Errorf("paused agents right after PATCH = %+v", pg.Data)
		}
		// Clearing with null (merge patch).
		r = e.patch(e.owner, "/v1/agents/"+ag.AgentID, `{"temperature": null, "description": null}`)
		expect(t, r, http.StatusOK, "PATCH with nulls")
		var cleared agentDoc // fresh: absent fields must not keep old values
		e.get(e.owner, "/v1/agents/"+ag.AgentID).decode(t, &cleared)
		if cleared.Temperature != nil || cleared.Description != "" || cleared.Model != "gpt-5" {
			t.Errorf("after clearing: %+v", cleared)
		}
	})

	t.Run("explicit id twice conflicts", func(t *testing.T) {
		for _, body := range []string{`{"agentId": "twice", "name": "first"}`, `{"id": "twice-kaplaix", "name": "first"}`} {
			r := e.post(e.owner, "/v1/agents", body)
			expect(t, r, http.StatusCreated, "first POST "+body)
			var ag agentDoc
			r.decode(t, &ag)
			r = e.post(e.owner, "/v1/agents", strings.Replace(body, "first", "second", 1))
			checkEnvelope(t, r, http.StatusConflict, "CONFLICT", "conflict", []pair{})
			var got agentDoc
			e.get(e.owner, "/v1/agents/"+ag.AgentID).decode(t, &got)
			if got.Name != "first" {
				t.Errorf("%s: the refused registration changed the agent: %+v", ag.AgentID, got)
			}
		}
	})

	t.Run("claim a discovered agent", func(t *testing.T) {
		expect(t, e.post(e.owner, "/v1/events", ev("found-agent", "found-session", baseTime)), http.StatusAccepted, "POST /v1/events")
		var disc agentDoc
		eventually(t, catchUp, func() (bool, string) {
			r := e.get(e.owner, "/v1/agents?search=found-agent")
			var pg page[agentDoc]
			r.decode(t, &pg)
			if len(pg.Data) != 1 {
				return false, "discovered agent not listed: " + r.String()
			}
			disc = pg.Data[0]
			return true, ""
		})
		if disc.Source != "discovered" || disc.Name != "found-agent" || disc.Status != "active" {
			t.Errorf("discovered agent = %+v", disc)
		}
		r := e.post(e.owner, "/v1/agents", map[string]any{"agentId": "found-agent", "name": "Found", "model": "claude"})
		expect(t, r, http.StatusCreated, "claim")
		var claimed agentDoc
		r.decode(t, &claimed)
		if claimed.Source != "registered" || claimed.Name != "Found" {
			t.Errorf("claimed = %+v", claimed)
		}
		checkEnvelope(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "found-agent", "name": "Again"}),
			http.StatusConflict, "CONFLICT", "conflict", []pair{})
		var got agentDoc
		e.get(e.owner, "/v1/agents/found-agent").decode(t, &got)
		if got.Source != "registered" || got.Name != "Found" || got.Model != "claude" {
			t.Errorf("after claim: %+v", got)
		}
		// More events do not turn it back into a discovered agent.
		expect(t, e.post(e.owner, "/v1/events", ev("found-agent", "found-session", baseTime.Add(time.Second))), http.StatusAccepted, "POST /v1/events")
		e.waitSession(e.owner, "found-session", 2)
		e.get(e.owner, "/v1/agents/found-agent").decode(t, &got)
		if got.Source != "registered" || got.Name != "Found" {
			t.Errorf("after more events: %+v", got)
		}
	})

	t.Run("registration validation", func(t *testing.T) {
		cases := []struct {
			name string
			body any
			want []pair
		}{
			{"bad agentId", map[string]any{"agentId": "bad id!"}, []pair{{"agentId", "invalid_format"}}},
			{"agentId too long", map[string]any{"agentId": strings.Repeat("a", 129)}, []pair{{"agentId", "invalid_format"}}},
			{"temperature out of range", map[string]any{"temperature": 2.5}, []pair{{"temperature", "out_of_range"}}},
			{"temperature a string", map[string]any{"temperature": "hot"}, []pair{{"temperature", "invalid_type"}}},
			{"tools not a list", map[string]any{"tools": "lookup_policy"}, []pair{{"tools", "invalid_type"}}},
			{"empty tool", map[string]any{"tools": []string{"ok", ""}}, []pair{{"tools[1]", "invalid_format"}}},
			{"empty name", map[string]any{"name": ""}, []pair{{"name", "required"}}},
			// Unknown fields are ignored (fidelity_e2e_test.go); the known
			// ones beside them are still checked.
			{"unknown field beside an invalid one", map[string]any{"name": "x", "colour": "blue", "temperature": 9}, []pair{{"temperature", "out_of_range"}}},
			{"not an object", `["x"]`, []pair{{"", "malformed_json"}}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				checkEnvelope(t, e.post(e.owner, "/v1/agents", c.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.want)
			})
		}
	})

	t.Run("patch validation", func(t *testing.T) {
		expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "patchme", "name": "Patch Me", "temperature": 0.1}), http.StatusCreated, "POST")
		var before agentDoc
		e.get(e.owner, "/v1/agents/patchme").decode(t, &before)
		cases := []struct {
			name string
			body any
			want []pair
		}{
			{"unknown field beside an invalid one", map[string]any{"colour": "blue", "status": "gone"}, []pair{{"status", "invalid_format"}}},
			{"temperature too high", map[string]any{"temperature": 3}, []pair{{"temperature", "out_of_range"}}},
			{"temperature negative", map[string]any{"temperature": -0.1}, []pair{{"temperature", "out_of_range"}}},
			{"temperature a string", map[string]any{"temperature": "0.5"}, []pair{{"temperature", "invalid_type"}}},
			{"change agentId", map[string]any{"agentId": "other"}, []pair{{"agentId", "immutable"}}},
			{"empty name", map[string]any{"name": ""}, []pair{{"name", "required"}}},
			{"bad status", map[string]any{"status": "deleted"}, []pair{{"status", "invalid_format"}}},
			{"not an object", `"x"`, []pair{{"", "malformed_json"}}},
			{"valid field with an invalid one", map[string]any{"model": "m", "temperature": 9}, []pair{{"temperature", "out_of_range"}}},
		}
		for _, c := range cases {
			t.Run(c.name, func(t *testing.T) {
				checkEnvelope(t, e.patch(e.owner, "/v1/agents/patchme", c.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", c.want)
			})
		}
		var after agentDoc
		e.get(e.owner, "/v1/agents/patchme").decode(t, &after)
		if after.Revision != before.Revision || after.Model != "" {
			t.Errorf("refused patches changed the agent: %+v → %+v", before, after)
		}
		// Sending its own id is allowed.
		expect(t, e.patch(e.owner, "/v1/agents/patchme", map[string]any{"agentId": "patchme", "owner": "team-a"}), http.StatusOK, "PATCH with own id")
		checkEnvelope(t, e.patch(e.owner, "/v1/agents/no-such-agent", map[string]any{"name": "x"}), http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
		checkEnvelope(t, e.get(e.owner, "/v1/agents/no-such-agent"), http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
	})

	t.Run("agent sessions", func(t *testing.T) {
		for i, s := range []struct{ agent, session string }{
			{"sess-agent", "sa-1"}, {"sess-agent", "sa-2"}, {"sess-agent", "sa-2"}, {"other-agent", "sb-1"},
		} {
			expect(t, e.post(e.owner, "/v1/events", ev(s.agent, s.session, baseTime.Add(time.Duration(i)*time.Minute))), http.StatusAccepted, "POST")
		}
		e.waitSession(e.owner, "sa-2", 2)
		e.waitSession(e.owner, "sb-1", 1)
		eventually(t, catchUp, func() (bool, string) {
			r := e.get(e.owner, "/v1/agents/sess-agent")
			return r.status == http.StatusOK, r.String()
		})
		for _, limit := range []int{1, 20} {
			var got []string
			for _, s := range e.allSessions(e.owner, "/v1/agents/sess-agent/sessions", limit) {
				got = append(got, fmt.Sprintf("%s/%s/%d", s.SessionID, s.AgentID, s.EventCount))
			}
			if want := []string{"sa-2/sess-agent/2", "sa-1/sess-agent/1"}; !slices.Equal(got, want) {
				t.Errorf("limit=%d: sessions of sess-agent %v, want %v", limit, got, want)
			}
		}
		// A registered agent with no events has an empty list.
		expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "quiet-agent"}), http.StatusCreated, "POST")
		if got := e.allSessions(e.owner, "/v1/agents/quiet-agent/sessions", 10); len(got) != 0 {
			t.Errorf("quiet agent sessions = %+v", got)
		}
		checkEnvelope(t, e.get(e.owner, "/v1/agents/no-such-agent/sessions"), http.StatusNotFound, "NOT_FOUND", "not_found", []pair{})
	})

	t.Run("list pages", func(t *testing.T) {
		for i := range 5 {
			expect(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": fmt.Sprintf("pg-%d", i)}), http.StatusCreated, "POST")
		}
		var all []string
		cursor := ""
		for range 20 {
			p := "/v1/agents?limit=2&search=pg-"
			if cursor != "" {
				p += "&cursor=" + cursor
			}
			var pg page[agentDoc]
			r := e.get(e.owner, p)
			expect(t, r, http.StatusOK, p)
			r.decode(t, &pg)
			for _, a := range pg.Data {
				all = append(all, a.AgentID)
			}
			if pg.NextCursor == nil {
				break
			}
			cursor = *pg.NextCursor
		}
		if want := []string{"pg-0", "pg-1", "pg-2", "pg-3", "pg-4"}; !slices.Equal(all, want) {
			t.Errorf("paged agents %v, want %v", all, want)
		}
	})
}

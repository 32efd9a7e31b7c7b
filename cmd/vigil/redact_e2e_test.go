package main

// End-to-end tests of PII and secret redaction: a corpus of samples goes in
// through ingest and the decision API, and none of it may come out of
// ClickHouse, the JetStream streams (raw messages) or the logs.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
)

type redactSample struct{ Class, Value string }

func redactCorpus(t *testing.T) []redactSample {
	t.Helper()
	data, err := os.ReadFile("../../pkg/redact/testdata/corpus.json")
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		Positive []redactSample
		Labelled []struct{ Class, Label, Value string }
	}
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	out := c.Positive
	for _, l := range c.Labelled {
		out = append(out, redactSample{l.Class, l.Label + l.Value})
	}
	return out
}

// leakFinder reports which corpus values (or, for labelled samples, their
// secret part) occur in a blob.
func leaks(blob string, values []string) []string {
	var out []string
	for _, v := range values {
		if strings.Contains(blob, v) {
			out = append(out, v)
		}
	}
	return out
}

// streamDump returns every raw message body of a stream, concatenated.
func streamDump(t *testing.T, js jetstream.JetStream, name string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatalf("stream %s: %v", name, err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			continue // deleted
		}
		b.Write(m.Data)
		b.WriteByte('\n')
	}
	return b.String()
}

var placeholderRe = regexp.MustCompile(`\[EMAIL:[0-9a-f]{8}\]`)

func chStrings(t *testing.T, db *chtest.DB, query string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	rows, err := db.Conn.Query(ctx, query, args...)
	if err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	defer rows.Close()
	var b strings.Builder
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		b.WriteString(s)
		b.WriteByte('\n')
	}
	return b.String()
}

func TestRedactionEndToEnd(t *testing.T) {
	logs := &testkit.Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stack logs:\n%s", logs.String())
		}
	})
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN, Log: slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	owner := s.st.BootstrapKey
	corpus := redactCorpus(t)
	s.register("default", "agent-redact")
	// The secret part of each sample is what must never come out.
	var secrets []string
	for _, c := range corpus {
		v := c.Value
		for _, label := range []string{"Authorization: Bearer ", "aws_secret_access_key = ", "password=", "api_key: "} {
			v = strings.TrimPrefix(v, label)
		}
		secrets = append(secrets, v)
	}

	// Events: one per sample in a single event, plus all of them nested in
	// one batch event, as strings inside objects and arrays.
	session := "sess-redact-" + newUUID()[:8]
	at := baseTime
	var events []map[string]any
	for i, c := range corpus {
		at = at.Add(time.Millisecond)
		e := with(ev("agent-redact", session, at), "payload", map[string]any{
			"toolName": "crm.update",
			"arguments": map[string]any{
				"note":   fmt.Sprintf("sample %d: %s (end)", i, c.Value),
				"nested": []any{map[string]any{"v": c.Value}},
			},
		})
		if i%2 == 0 {
			expect(t, s.post(owner, "/v1/events", e), http.StatusAccepted, "POST /v1/events")
		} else {
			events = append(events, e)
		}
	}
	br := s.postBatch(owner, events)
	if br.Accepted != len(events) {
		t.Fatalf("batch: %+v", br)
	}

	// Decisions: the samples in arguments and context.
	args := map[string]any{}
	for i, c := range corpus {
		args[fmt.Sprintf("a%d", i)] = c.Value
	}
	r := s.post(owner, "/v1/decisions.evaluate", map[string]any{
		"agentId": "agent-redact", "sessionId": session,
		"action":  map[string]any{"kind": "tool_call", "tool": "email.send", "arguments": args},
		"context": map[string]any{"user": corpus[0].Value, "list": []any{corpus[1].Value}},
	})
	expect(t, r, http.StatusOK, "decisions.evaluate")
	if l := leaks(string(r.body), secrets); len(l) > 0 {
		t.Errorf("decision response leaks %q", l)
	}
	var dec struct {
		DecisionID string `json:"decisionId"`
	}
	r.decode(t, &dec)

	// ClickHouse: every event row is there, redacted, with its count.
	n := uint64(len(corpus))
	eventually(t, catchUp, func() (bool, string) {
		got := chCount(t, db, "SELECT count() FROM events WHERE tenant_id = 'default' AND session_id = ?", session)
		return got == n, fmt.Sprintf("%d of %d events in ClickHouse", got, n)
	})
	if z := chCount(t, db, "SELECT count() FROM events WHERE tenant_id = 'default' AND session_id = ? AND redactions < 2", session); z != 0 {
		t.Errorf("%d events record fewer than 2 redactions", z)
	}
	payloads := chStrings(t, db, "SELECT payload FROM events WHERE tenant_id = 'default' AND session_id = ?", session)
	if l := leaks(payloads, secrets); len(l) > 0 {
		t.Errorf("ClickHouse events leak %d values: %q", len(l), l)
	}
	for _, class := range []string{"EMAIL", "PHONE", "CARD", "IBAN", "NATIONAL_ID", "SECRET"} {
		if !strings.Contains(payloads, "["+class+":") {
			t.Errorf("no %s placeholder in the stored payloads", class)
		}
	}
	eventually(t, catchUp, func() (bool, string) {
		got := chCount(t, db, "SELECT count() FROM decisions WHERE tenant_id = 'default' AND decision_id = ?", dec.DecisionID)
		return got == 1, "decision not in ClickHouse yet"
	})
	if l := leaks(chStrings(t, db, "SELECT record FROM decisions WHERE tenant_id = 'default'"), secrets); len(l) > 0 {
		t.Errorf("ClickHouse decisions leak %q", l)
	}
	// Every String column of every table the stack wrote (projections of
	// other services included: risk, ledger, audit …).
	cols := chStrings(t, db, "SELECT concat(table, '\t', name) FROM system.columns WHERE database = ? AND type = 'String'", db.Name)
	if !strings.Contains(cols, "events\tpayload") || !strings.Contains(cols, "decisions\trecord") {
		t.Fatalf("String columns of the test database: %q", cols)
	}
	for _, line := range strings.Split(strings.TrimSpace(cols), "\n") {
		parts := strings.SplitN(line, "\t", 2)
		if len(parts) != 2 {
			continue
		}
		q := fmt.Sprintf("SELECT `%s` FROM `%s`.`%s`", parts[1], db.Name, parts[0])
		if l := leaks(chStrings(t, db, q), secrets); len(l) > 0 {
			t.Errorf("ClickHouse %s.%s leaks %q", parts[0], parts[1], l)
		}
	}

	// Streams: the raw messages of every stream.
	names := s.st.JS.StreamNames(context.Background())
	var all []string
	for name := range names.Name() {
		all = append(all, name)
	}
	if !slices.Contains(all, streams.Ingest) || !slices.Contains(all, streams.Policy) {
		t.Fatalf("streams: %v", all)
	}
	for _, name := range all {
		if l := leaks(streamDump(t, s.st.JS, name), secrets); len(l) > 0 {
			t.Errorf("stream %s leaks %q", name, l)
		}
	}
	// The API's views of them.
	if l := leaks(string(s.get(owner, "/v1/verdicts?limit=100").body), secrets); len(l) > 0 {
		t.Errorf("GET /v1/verdicts leaks %q", l)
	}
	if l := leaks(string(s.get(owner, "/v1/sessions/"+session+"/export.json").body), secrets); len(l) > 0 {
		t.Errorf("session export leaks %q", l)
	}
	// Logs: everything the stack logged, at debug level.
	if l := leaks(logs.String(), secrets); len(l) > 0 {
		t.Errorf("logs leak %q", l)
	}
}

func TestRedactionSettings(t *testing.T) {
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN})
	owner := s.st.BootstrapKey
	other := s.key("globex", auth.RoleOwner)

	// Defaults: every class on, no pattern.
	r := s.get(owner, "/v1/settings/redaction")
	expect(t, r, http.StatusOK, "GET defaults")
	var v struct {
		DisabledClasses []string `json:"disabledClasses"`
		EnabledClasses  []string `json:"enabledClasses"`
		Patterns        []struct{ Name, Regex string }
		Revision        uint64 `json:"revision"`
	}
	r.decode(t, &v)
	if len(v.EnabledClasses) != 6 || len(v.DisabledClasses) != 0 || len(v.Patterns) != 0 || v.Revision != 0 {
		t.Fatalf("defaults: %s", r)
	}

	// Roles: reading needs settings:read, writing settings:manage.
	body := map[string]any{"disabledClasses": []string{"phone"}, "patterns": []any{map[string]any{"name": "employee_id", "regex": `EMP-\d{6}`}}}
	for _, tc := range []struct {
		role      auth.Role
		get, post int
	}{
		{auth.RoleAdmin, 200, 200}, {auth.RoleMember, 200, 403}, {auth.RoleViewer, 403, 403}, {auth.RoleAgent, 403, 403},
	} {
		k := s.key("default", tc.role)
		if got := s.get(k, "/v1/settings/redaction").status; got != tc.get {
			t.Errorf("%s GET: %d, want %d", tc.role, got, tc.get)
		}
		if tc.post != 200 {
			checkEnvelope(t, s.post(k, "/v1/settings/redaction", body), tc.post, "FORBIDDEN", "forbidden", nil)
		}
	}
	if got := s.get("", "/v1/settings/redaction").status; got != http.StatusUnauthorized {
		t.Errorf("anonymous GET: %d", got)
	}

	// Bad inputs: the envelope, with the field at fault.
	for _, tc := range []struct {
		name string
		body any
		path string
	}{
		{"not JSON", "{", ""},
		{"unknown field", map[string]any{"classes": []string{"x"}}, ""},
		{"unknown class", map[string]any{"disabledClasses": []string{"ssn"}}, "disabledClasses[0]"},
		{"bad regex", map[string]any{"patterns": []any{map[string]any{"name": "x", "regex": "("}}}, "patterns[0].regex"},
		{"empty-matching regex", map[string]any{"patterns": []any{map[string]any{"name": "x", "regex": "a*"}}}, "patterns[0].regex"},
		{"huge regex", map[string]any{"patterns": []any{map[string]any{"name": "x", "regex": strings.Repeat("a", 1000)}}}, "patterns[0].regex"},
		{"bad name", map[string]any{"patterns": []any{map[string]any{"name": "X Y", "regex": "x"}}}, "patterns[0].name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := checkEnvelope(t, s.post(owner, "/v1/settings/redaction", tc.body), http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request", nil)
			if len(e.Error.Details) == 0 || e.Error.Details[0].Path != tc.path {
				t.Errorf("details %+v, want path %q", e.Error.Details, tc.path)
			}
		})
	}

	// Set: read back at once; the other tenant still has the defaults.
	r = s.post(owner, "/v1/settings/redaction", body)
	expect(t, r, http.StatusOK, "POST settings")
	r = s.get(owner, "/v1/settings/redaction")
	r.decode(t, &v)
	if len(v.Patterns) != 1 || v.Patterns[0].Name != "employee_id" || len(v.DisabledClasses) != 1 || v.Revision == 0 {
		t.Fatalf("read back: %s", r)
	}
	r = s.get(other, "/v1/settings/redaction")
	var ov struct {
		Patterns []any `json:"patterns"`
	}
	r.decode(t, &ov)
	if len(ov.Patterns) != 0 {
		t.Fatalf("tenant globex sees default's patterns: %s", r)
	}

	// Applied by ingest: the pattern redacts, the phone class is off. A
	// probe value (never asserted on) shows when ingest has the settings.
	session := "sess-settings"
	at := baseTime
	eventually(t, catchUp, func() (bool, string) {
		at = at.Add(time.Millisecond)
		e := with(ev("agent-s", "probe", at), "payload", map[string]any{"toolName": "t", "v": "EMP-000001"})
		expect(t, s.post(owner, "/v1/events", e), http.StatusAccepted, "probe")
		return chCount(t, db, "SELECT count() FROM events WHERE session_id = 'probe' AND positionCaseInsensitive(payload, 'EMPLOYEE_ID') > 0") > 0, "settings not applied yet"
	})
	e := with(ev("agent-s", session, at.Add(time.Second)), "payload", map[string]any{"toolName": "t", "v": "EMP-123456 calls +1 415 555 2671 / jane@example.com"})
	expect(t, s.post(owner, "/v1/events", e), http.StatusAccepted, "event")
	ge := with(ev("agent-s", session, at.Add(time.Second)), "payload", map[string]any{"toolName": "t", "v": "EMP-654321 calls +1 415 555 2671"})
	expect(t, s.post(other, "/v1/events", ge), http.StatusAccepted, "other tenant's event")
	eventually(t, catchUp, func() (bool, string) {
		n := chCount(t, db, "SELECT count() FROM events WHERE session_id = ?", session)
		return n == 2, fmt.Sprintf("%d of 2 events", n)
	})
	mine := chStrings(t, db, "SELECT payload FROM events WHERE tenant_id = 'default' AND session_id = ?", session)
	if strings.Contains(mine, "EMP-123456") || !strings.Contains(mine, "[EMPLOYEE_ID:") || !strings.Contains(mine, "+1 415 555 2671") || strings.Contains(mine, "jane@") {
		t.Errorf("default tenant's payload: %s", mine)
	}
	theirs := chStrings(t, db, "SELECT payload FROM events WHERE tenant_id = 'globex' AND session_id = ?", session)
	if !strings.Contains(theirs, "EMP-654321") || strings.Contains(theirs, "555 2671") {
		t.Errorf("globex payload (its own defaults apply): %s", theirs)
	}
}

// TestRedactionPlaceholdersSurviveRestart: the generated deployment key is
// kept, so the same value gets the same placeholder after a restart.
func TestRedactionPlaceholdersSurviveRestart(t *testing.T) {
	db := chtest.New(t)
	dir := t.TempDir()
	placeholder := func(s *testStack, session string) string {
		e := with(ev("agent-restart", session, baseTime), "payload", map[string]any{"toolName": "t", "to": "restart@example.com"})
		expect(t, s.post(s.st.BootstrapKey, "/v1/events", e), http.StatusAccepted, "event")
		var p string
		eventually(t, catchUp, func() (bool, string) {
			p = chStrings(t, db, "SELECT payload FROM events WHERE session_id = ?", session)
			return p != "", "event not stored yet"
		})
		return placeholderRe.FindString(p)
	}
	s := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir})
	owner := s.st.BootstrapKey
	first := placeholder(s, "restart-1")
	s.Stop()
	s2 := startStack(t, stacktest.Options{DSN: db.DSN, DataDir: dir})
	s2.st.BootstrapKey = owner // created once, on the first start
	second := placeholder(s2, "restart-2")
	if first == "" || first != second {
		t.Fatalf("placeholders before and after restart: %q, %q", first, second)
	}
}

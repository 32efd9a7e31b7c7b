package main

// Helpers for the end-to-end tests: an in-process stack on a real
// ClickHouse database, a small HTTP client, event builders, polling, and a
// TCP proxy that can cut the stack off from ClickHouse.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
)

// catchUp bounds how long a test waits for projections in normal operation;
// recovery bounds the wait after an outage or a restart.
const (
	catchUp  = 10 * time.Second
	recovery = 60 * time.Second
)

// ---- logs ----

func testLogger(t testing.TB) *slog.Logger {
	log, _ := testkit.Logger(t, slog.LevelInfo)
	return log
}

// ---- the stack ----

// testSigningSeed is the policy pack signing seed of every test stack.
var testSigningSeed = stacktest.SigningSeed

// unlimited lifts the rate limits, for tests that load the stack to check
// durability rather than admission.
func unlimited(c *api.Config) { c.RateLimits = ratelimit.Limits{} }

// testStack is a running in-process stack serving HTTP on a loopback port
// (see stacktest), with the helpers of these tests.
type testStack struct {
	t    *testing.T
	st   *Stack
	base string
	srv  *stacktest.Server
	// httpc, if set, sends the requests instead of httpClient (a
	// contract-checking client, contract_test.go).
	httpc *http.Client
}

func startStack(t *testing.T, o stacktest.Options) *testStack {
	t.Helper()
	if o.Log == nil {
		o.Log = testLogger(t)
	}
	return served(t, stacktest.Start(t, o))
}

// served wraps a stacktest server.
func served(t *testing.T, srv *stacktest.Server) *testStack {
	return &testStack{t: t, st: srv.Stack, base: srv.URL, srv: srv}
}

// Stop shuts the stack down (see stacktest.Server.Stop).
func (s *testStack) Stop() { s.srv.Stop() }

// env is one stack on a fresh ClickHouse database, with its owner key.
type env struct {
	*testStack
	db    *chtest.DB
	owner string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN})
	if s.st.BootstrapKey == "" {
		t.Fatal("a fresh stack created no bootstrap key")
	}
	return &env{testStack: s, db: db, owner: s.st.BootstrapKey}
}

// key creates an API key for tenant with role, bound to agents (an agent
// key with none is one created before keys were bound).
func (s *testStack) key(tenant string, role auth.Role, agents ...string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, tok, err := s.st.Store.IssueKey(ctx, control.KeySpec{Tenant: tenant, Role: role, Name: "e2e-" + string(role), By: "e2e test", Agents: agents})
	if err != nil {
		s.t.Fatalf("CreateKey(%s, %s): %v", tenant, role, err)
	}
	return tok
}

// registerAgents puts agents in tenant's registry (registerAgentIDs).
func registerAgents(t testing.TB, store *control.Store, tenant string, ids ...string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := registerAgentIDs(ctx, store, tenant, "e2e test", ids...); err != nil {
		t.Fatal(err)
	}
}

// register puts agents in tenant's registry (registerAgents).
func (s *testStack) register(tenant string, ids ...string) {
	s.t.Helper()
	registerAgents(s.t, s.st.Store, tenant, ids...)
}

// ---- HTTP ----

var httpClient = &http.Client{Timeout: 60 * time.Second}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) String() string {
	b := r.body
	if len(b) > 2000 {
		b = append(slices.Clip(b[:2000]), "…"...)
	}
	return fmt.Sprintf("HTTP %d %s", r.status, b)
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r response) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

// req is one request. body is sent verbatim when it is []byte or string,
// as JSON otherwise; header holds extra headers.
type req struct {
	method, path, key string
	body              any
	header            map[string]string
}

func (s *testStack) do(r req) response {
	s.t.Helper()
	res, err := s.try(r)
	if err != nil {
		s.t.Fatalf("%s %s: %v", r.method, r.path, err)
	}
	return res
}

// try is do without failing the test, for use from other goroutines.
func (s *testStack) try(r req) (response, error) {
	if s.httpc != nil {
		return sendVia(s.httpc, s.base, r)
	}
	return send(s.base, r)
}

// send performs r against base. A []byte or string body is sent verbatim,
// anything else as JSON; r.header entries (a Content-Type among them)
// come last.
func send(base string, r req) (response, error) { return sendVia(httpClient, base, r) }

// sendVia is send with client.
func sendVia(client *http.Client, base string, r req) (response, error) {
	var body io.Reader
	switch b := r.body.(type) {
	case nil:
	case []byte:
		body = bytes.NewReader(b)
	case string:
		body = strings.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			return response{}, err
		}
		body = bytes.NewReader(data)
	}
	hr, err := http.NewRequest(r.method, base+r.path, body)
	if err != nil {
		return response{}, err
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.key != "" {
		hr.Header.Set("Authorization", "Bearer "+r.key)
	}
	for k, v := range r.header {
		hr.Header.Set(k, v)
	}
	res, err := client.Do(hr)
	if err != nil {
		return response{}, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: res.StatusCode, header: res.Header, body: data}, nil
}

func (s *testStack) get(key, path string) response {
	s.t.Helper()
	return s.do(req{method: http.MethodGet, path: path, key: key})
}

func (s *testStack) post(key, path string, body any) response {
	s.t.Helper()
	return s.do(req{method: http.MethodPost, path: path, key: key, body: body})
}

func (s *testStack) patch(key, path string, body any) response {
	s.t.Helper()
	return s.do(req{method: http.MethodPatch, path: path, key: key, body: body})
}

// expect fails the test unless r has the given status.
func expect(t testing.TB, r response, status int, what string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("%s: want HTTP %d, got %s", what, status, r)
	}
}

// ---- the error envelope ----

type fieldErr struct {
	Path    string `json:"path"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

type envelope struct {
	Error *struct {
		Code    string     `json:"code"`
		Message string     `json:"message"`
		Details []fieldErr `json:"details"`
	} `json:"error"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// pair is an expected (path, code) detail.
type pair struct{ path, code string }

func (p pair) String() string { return p.path + ":" + p.code }

// checkEnvelope asserts the status, both codes, non-empty messages, and
// that the details hold exactly the wanted (path, code) pairs (nil wants
// is not checked; an empty non-nil slice wants no details).
func checkEnvelope(t testing.TB, r response, status int, code, short string, wants []pair) envelope {
	t.Helper()
	if r.status != status {
		t.Fatalf("want HTTP %d, got %s", status, r)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("error Content-Type = %q, want application/json", ct)
	}
	// The shape first, as raw JSON: every field must be present.
	var raw map[string]json.RawMessage
	r.decode(t, &raw)
	for _, k := range []string{"error", "code", "message"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("envelope lacks %q: %s", k, r.body)
		}
	}
	var inner map[string]json.RawMessage
	if err := json.Unmarshal(raw["error"], &inner); err != nil {
		t.Fatalf("error is not an object: %s", r.body)
	}
	for _, k := range []string{"code", "message", "details"} {
		if _, ok := inner[k]; !ok {
			t.Errorf("envelope.error lacks %q: %s", k, r.body)
		}
	}
	if !bytes.HasPrefix(bytes.TrimSpace(inner["details"]), []byte("[")) {
		t.Errorf("error.details is not an array: %s", r.body)
	}
	var e envelope
	r.decode(t, &e)
	if e.Error.Code != code || e.Code != short {
		t.Errorf("codes = (%q, %q), want (%q, %q): %s", e.Error.Code, e.Code, code, short, r.body)
	}
	if e.Error.Message == "" || e.Message == "" {
		t.Errorf("empty message: %s", r.body)
	}
	if wants != nil {
		var got []string
		for _, d := range e.Error.Details {
			got = append(got, pair{d.Path, d.Code}.String())
			if d.Message == "" {
				t.Errorf("detail %s:%s has no message", d.Path, d.Code)
			}
		}
		var want []string
		for _, w := range wants {
			want = append(want, w.String())
		}
		sort.Strings(got)
		sort.Strings(want)
		if !slices.Equal(got, want) {
			t.Errorf("details = %v, want %v\n%s", got, want, r.body)
		}
	}
	return e
}

// ---- events ----

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// baseTime is a fixed past instant all test events are placed after, in
// one month so that they land in one ClickHouse partition.
var baseTime = time.Date(2025, 1, 15, 10, 30, 0, 0, time.UTC)

// ev is a valid event body.
func ev(agentID, sessionID string, at time.Time) map[string]any {
	return map[string]any{
		"eventId":         newUUID(),
		"agentId":         agentID,
		"sessionId":       sessionID,
		"sourceTimestamp": at.UTC().Format(time.RFC3339Nano),
		"category":        "tool_api",
		"schemaVersion":   "1.0",
		"payload":         map[string]any{"toolName": "web_search", "argumentsHash": "sha256-of-args", "responseStatus": 200},
	}
}

// with returns a copy of e with the given fields set; a nil value deletes
// the field.
func with(e map[string]any, kv ...any) map[string]any {
	out := make(map[string]any, len(e))
	for k, v := range e {
		out[k] = v
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] == nil {
			delete(out, kv[i].(string))
		} else {
			out[kv[i].(string)] = kv[i+1]
		}
	}
	return out
}

// apiTime is how the API renders an instant.
func apiTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z07:00") }

type itemResult struct {
	Index     int    `json:"index"`
	EventID   string `json:"eventId"`
	Status    string `json:"status"`
	Accepted  bool   `json:"accepted"`
	Duplicate bool   `json:"duplicate"`
	Sequence  uint64 `json:"sequence"`
	Error     *struct {
		Code    string     `json:"code"`
		Message string     `json:"message"`
		Details []fieldErr `json:"details"`
	} `json:"error"`
}

type batchResponse struct {
	Accepted   int          `json:"accepted"`
	Duplicates int          `json:"duplicates"`
	Rejected   int          `json:"rejected"`
	Failed     int          `json:"failed"`
	Results    []itemResult `json:"results"`
}

// postBatch posts events as {"events":[...]} and requires a 202.
func (s *testStack) postBatch(key string, events []map[string]any) batchResponse {
	s.t.Helper()
	r := s.post(key, "/v1/events/batch", map[string]any{"events": events})
	expect(s.t, r, http.StatusAccepted, "POST /v1/events/batch")
	var br batchResponse
	r.decode(s.t, &br)
	if len(br.Results) != len(events) {
		s.t.Fatalf("batch of %d got %d results", len(events), len(br.Results))
	}
	return br
}

// ---- reads ----

type session struct {
	SessionID    string `json:"sessionId"`
	AgentID      string `json:"agentId"`
	FirstEventAt string `json:"firstEventAt"`
	LastEventAt  string `json:"lastEventAt"`
	DurationMS   int64  `json:"durationMs"`
	EventCount   uint64 `json:"eventCount"`
}

type storedEvent struct {
	EventID         string          `json:"eventId"`
	AgentID         string          `json:"agentId"`
	SessionID       string          `json:"sessionId"`
	SourceTimestamp string          `json:"sourceTimestamp"`
	Category        string          `json:"category"`
	SchemaVersion   string          `json:"schemaVersion"`
	Payload         json.RawMessage `json:"payload"`
	ReceivedAt      string          `json:"receivedAt"`
}

type sessionDetail struct {
	session
	Events     []storedEvent `json:"events"`
	NextCursor *string       `json:"nextCursor"`
	HasMore    bool          `json:"hasMore"`
}

type page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"nextCursor"`
	HasMore    bool    `json:"hasMore"`
}

type agentDoc struct {
	AgentID      string         `json:"agentId"`
	Name         string         `json:"name"`
	Description  string         `json:"description"`
	Model        string         `json:"model"`
	Temperature  *float64       `json:"temperature"`
	Tools        []string       `json:"tools"`
	Status       string         `json:"status"`
	Source       string         `json:"source"`
	ManifestHash string         `json:"manifestHash"`
	RegisteredAt string         `json:"registeredAt"`
	UpdatedAt    string         `json:"updatedAt"`
	Revision     uint64         `json:"revision"`
	Metadata     map[string]any `json:"metadata"`
}

// eventually is testkit.EventuallyWithin for the stack's tests, whose
// conditions describe themselves.
func eventually(t testing.TB, within time.Duration, cond func() (bool, string)) {
	t.Helper()
	testkit.EventuallyWithin(t, within, "the stack", cond)
}

// waitSession waits until the session has n events, and returns it.
func (s *testStack) waitSession(key, id string, n uint64) session {
	s.t.Helper()
	var got session
	eventually(s.t, catchUp, func() (bool, string) {
		r := s.get(key, "/v1/sessions/"+id+"?limit=1")
		if r.status != http.StatusOK {
			return false, r.String()
		}
		r.decode(s.t, &got)
		return got.EventCount == n, fmt.Sprintf("session %s has %d events, want %d", id, got.EventCount, n)
	})
	return got
}

// allSessions pages through a session list with the given page size.
func (s *testStack) allSessions(key, path string, limit int) []session {
	s.t.Helper()
	var out []session
	sep := "?"
	if strings.Contains(path, "?") {
		sep = "&"
	}
	cursor := ""
	for i := 0; ; i++ {
		if i > 10000 {
			s.t.Fatal("session pagination does not end")
		}
		p := fmt.Sprintf("%s%slimit=%d", path, sep, limit)
		if cursor != "" {
			p += "&cursor=" + cursor
		}
		r := s.get(key, p)
		expect(s.t, r, http.StatusOK, "GET "+p)
		var pg page[session]
		r.decode(s.t, &pg)
		if len(pg.Data) > limit {
			s.t.Fatalf("page of limit %d has %d items", limit, len(pg.Data))
		}
		out = append(out, pg.Data...)
		if pg.HasMore != (pg.NextCursor != nil) {
			s.t.Fatalf("hasMore %v but nextCursor %v", pg.HasMore, pg.NextCursor)
		}
		if pg.NextCursor == nil {
			return out
		}
		cursor = *pg.NextCursor
	}
}

// ---- ClickHouse ----

// chCount runs a count query on the test's own connection (never the
// stack's, which may be behind a stopped proxy).
func chCount(t testing.TB, db *chtest.DB, query string, args ...any) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var n uint64
	if err := db.Conn.QueryRow(ctx, query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

// ---- a TCP proxy to cut ClickHouse off (see stacktest.Proxy) ----

type tcpProxy = stacktest.Proxy

var newProxy = stacktest.NewProxy

package conformance

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// Case is one request of a seed document's scenario and what the document
// says it answers. Path, header values and string values anywhere in Body
// may name a value an earlier case saved, as {name}; {uuid} is a fresh
// UUID each time it appears.
type Case struct {
	// Section is where in the seed document the case comes from.
	Section string
	// Name says what the case checks.
	Name         string
	Method, Path string
	// As is the credential: owner (the default), admin, member, viewer,
	// agent (bound to the agent "agent-key-bot"), other (the owner of
	// another tenant), none (no Authorization) or invalid (a well-formed
	// token no tenant issued).
	As     string
	Header map[string]string
	// Body is sent verbatim when it is a string, as JSON otherwise.
	Body   any
	Status int
	// Types are the documented fields of the answer that must be present,
	// each with its JSON type: string, number, boolean, array, object or
	// null, or several joined by | ("number|null"). Paths are dotted, with
	// numeric segments indexing arrays: "data.0.sessionId". An error
	// answer is always checked for the whole error envelope.
	Types map[string]string
	// Values are documented values the answer must hold, compared as JSON.
	Values map[string]any
	// Headers are response headers that must be present (non-empty).
	Headers []string
	// Save keeps values of the answer (path → name) for later cases.
	Save map[string]string
	// Deviation, when set, says where and why Vigil departs from the
	// document on purpose; the case checks what Vigil does instead.
	Deviation string
	// Pending, when set, names a known gap another change is closing: the
	// case still runs, and while Vigil fails it the case is skipped with
	// what failed (and counted as such in the run's log); once Vigil
	// passes it, the case passes and the mark should go.
	Pending string
	// ClickHouseDown cuts the stack off from ClickHouse for this request
	// (and restores it after), to reach the documented 5xx answers.
	ClickHouseDown bool
	// Wait marks a read of a projection: the request is repeated (bounded
	// by catchUp) until it answers as the case documents. See
	// docs/conformance.md on read-after-write.
	Wait bool
}

// catchUp bounds how long a Wait case waits for a projection.
const catchUp = 15 * time.Second

// agentKeyAgent is the agent the "agent" credential is bound to.
const agentKeyAgent = "agent-key-bot"

// errorEnvelope is the error shape every seed document's clients read
// (Kaplaix's error.{code,message,details}, KLA's and Kaizen's top-level
// code and message), checked on every error answer.
var errorEnvelope = map[string]string{
	"error.code": "string", "error.message": "string", "error.details": "array",
	"code": "string", "message": "string",
}

// suite is one stack (one ClickHouse database, one embedded NATS) shared
// by a document's scenario, with its credentials and saved values.
type suite struct {
	t    *testing.T
	srv  *stacktest.Server
	ch   *stacktest.Proxy
	keys map[string]string
	vars map[string]string
	http *http.Client
	// token merges the consistency tokens of every write so far; each
	// request sends it, so a read reflects what the scenario wrote, as
	// a client that carries Vigil-Consistency does.
	token consistency.Token
}

// newSuite starts a stack for one seed document and issues its
// credentials: every role of the tenant "conformance", an agent key and
// the owner of another tenant.
func newSuite(t *testing.T) *suite {
	t.Helper()
	_, proxy, dsn := stacktest.ProxiedClickHouse(t)
	log, _ := testkit.Logger(t, 0)
	srv := stacktest.Start(t, stacktest.Options{DSN: dsn, Log: log})
	s := &suite{t: t, srv: srv, ch: proxy, keys: map[string]string{"none": "", "invalid": "vgl_0000000000000000_" + strings.Repeat("A", 43) + "AAAAAA"},
		vars: map[string]string{}, http: stacktest.ContractClient(t)} // every answer checked against the OpenAPI document
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, k := range []struct {
		name, tenant string
		role         auth.Role
		agents       []string
	}{
		{"owner", "conformance", auth.RoleOwner, nil},
		{"admin", "conformance", auth.RoleAdmin, nil},
		{"member", "conformance", auth.RoleMember, nil},
		{"viewer", "conformance", auth.RoleViewer, nil},
		{"agent", "conformance", auth.RoleAgent, []string{agentKeyAgent}},
		{"other", "conformance-other", auth.RoleOwner, nil},
	} {
		_, tok, err := srv.Store.IssueKey(ctx, control.KeySpec{Tenant: k.tenant, Role: k.role, Name: "conformance-" + k.name, By: "conformance suite", Agents: k.agents})
		if err != nil {
			t.Fatalf("issue the %s key: %v", k.name, err)
		}
		s.keys[k.name] = tok
	}
	return s
}

// run runs a scenario in order, each case as a subtest named after its
// position, section and name; a failed case does not stop the others,
// but a case needing a value a failed case should have saved fails.
func (s *suite) run(cases []Case) {
	s.t.Helper()
	for i, c := range cases {
		if c.Section == "" || c.Name == "" || c.Status == 0 || c.Method == "" {
			s.t.Fatalf("case %d (%q) lacks its section, name, method or status", i, c.Name)
		}
		s.t.Run(fmt.Sprintf("%03d %s: %s", i, c.Section, c.Name), func(t *testing.T) {
			if c.Deviation != "" {
				t.Logf("deliberate deviation: %s", c.Deviation)
			}
			s.check(t, c)
		})
	}
}

// answer is an HTTP response with its body parsed as JSON (nil if empty
// or not JSON).
type answer struct {
	status int
	header http.Header
	body   []byte
	json   any
}

func (a answer) String() string {
	b := a.body
	if len(b) > 1500 {
		b = append(slices.Clip(b[:1500]), "…"...)
	}
	return fmt.Sprintf("HTTP %d %s", a.status, b)
}

// check performs c (repeatedly, for a Wait case) and reports every way
// the answer departs from what c documents.
func (s *suite) check(t *testing.T, c Case) {
	t.Helper()
	values := make(map[string]any, len(c.Values))
	for k, v := range c.Values {
		values[k] = s.expandJSON(t, v)
	}
	c.Values = values
	var a answer
	var problems []string
	attempt := func() (bool, string) {
		var err error
		if a, err = s.do(t, c); err != nil {
			t.Fatalf("%s %s: %v", c.Method, c.Path, err)
		}
		problems = verify(c, a)
		return len(problems) == 0, strings.Join(problems, "; ") + "\n" + a.String()
	}
	if c.ClickHouseDown {
		s.ch.Stop()
		defer func() {
			if err := s.ch.Start(); err != nil {
				t.Fatalf("restore ClickHouse: %v", err)
			}
		}()
	}
	if c.Pending != "" {
		if ok, state := attempt(); !ok {
			t.Skipf("pending (%s): %s", c.Pending, state)
		}
		t.Logf("passes although marked pending (%s): drop the mark", c.Pending)
	} else if c.Wait {
		testkit.EventuallyWithin(t, catchUp, c.Method+" "+c.Path+" to answer as documented", attempt)
	} else {
		attempt()
	}
	for _, p := range problems {
		t.Error(p)
	}
	if len(problems) > 0 {
		t.Logf("%s %s answered %s", c.Method, c.Path, a)
		return
	}
	for path, name := range c.Save {
		v, ok := lookup(a.json, path)
		if !ok {
			t.Fatalf("save %s: no %s in %s", name, path, a)
		}
		switch x := v.(type) {
		case string:
			s.vars[name] = x
		case float64:
			s.vars[name] = strconv.FormatFloat(x, 'f', -1, 64)
		default:
			t.Fatalf("save %s: %s is %T, want a string or number", name, path, v)
		}
	}
}

// verify lists how a departs from what c documents.
func verify(c Case, a answer) []string {
	var out []string
	if a.status != c.Status {
		out = append(out, fmt.Sprintf("status %d, want %d", a.status, c.Status))
	}
	types := c.Types
	if c.Status >= 400 {
		types = merged(errorEnvelope, c.Types)
	}
	if len(types) > 0 || len(c.Values) > 0 {
		if a.json == nil {
			return append(out, "the answer is not JSON")
		}
	}
	for path, want := range types {
		v, ok := lookup(a.json, path)
		if !ok {
			out = append(out, fmt.Sprintf("%s is missing", path))
			continue
		}
		if got := jsonType(v); !slices.Contains(strings.Split(want, "|"), got) {
			out = append(out, fmt.Sprintf("%s is a %s, want %s", path, got, want))
		}
	}
	for path, want := range c.Values {
		v, ok := lookup(a.json, path)
		if !ok {
			out = append(out, fmt.Sprintf("%s is missing (want %v)", path, want))
			continue
		}
		if !sameJSON(v, want) {
			out = append(out, fmt.Sprintf("%s = %v, want %v", path, v, want))
		}
	}
	for _, h := range c.Headers {
		if a.header.Get(h) == "" {
			out = append(out, fmt.Sprintf("header %s is missing", h))
		}
	}
	return out
}

func merged(a, b map[string]string) map[string]string {
	out := make(map[string]string, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

// do sends c's request.
func (s *suite) do(t *testing.T, c Case) (answer, error) {
	t.Helper()
	var body io.Reader
	switch b := c.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(s.expand(t, b))
	default:
		data, err := json.Marshal(s.expandJSON(t, b))
		if err != nil {
			return answer{}, err
		}
		body = bytes.NewReader(data)
	}
	r, err := http.NewRequest(c.Method, s.srv.URL+s.expand(t, c.Path), body)
	if err != nil {
		return answer{}, err
	}
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	as := c.As
	if as == "" {
		as = "owner"
	}
	key, ok := s.keys[as]
	if !ok {
		t.Fatalf("unknown credential %q", as)
	}
	if key != "" {
		r.Header.Set("Authorization", "Bearer "+key)
	}
	if len(s.token) > 0 {
		r.Header.Set(consistency.Header, s.token.String())
	}
	for k, v := range c.Header {
		r.Header.Set(k, s.expand(t, v))
	}
	res, err := s.http.Do(r)
	if err != nil {
		return answer{}, err
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		return answer{}, err
	}
	a := answer{status: res.StatusCode, header: res.Header, body: data}
	if h := res.Header.Get(consistency.Header); h != "" {
		tok, err := consistency.Parse(h)
		if err != nil {
			return a, fmt.Errorf("the answer's %s: %w", consistency.Header, err)
		}
		s.token = s.token.Merge(tok)
	}
	if len(bytes.TrimSpace(data)) > 0 {
		d := json.NewDecoder(bytes.NewReader(data))
		d.UseNumber()
		var v any
		if d.Decode(&v) == nil {
			a.json = normalise(v)
		}
	}
	return a, nil
}

var placeholder = regexp.MustCompile(`\{([A-Za-z][A-Za-z0-9_]*)\}`)

// expand replaces {name} with a saved value; {uuid} is a fresh UUID.
func (s *suite) expand(t *testing.T, in string) string {
	t.Helper()
	return placeholder.ReplaceAllStringFunc(in, func(m string) string {
		name := m[1 : len(m)-1]
		if name == "uuid" {
			return uuid.NewString()
		}
		v, ok := s.vars[name]
		if !ok {
			t.Fatalf("needs {%s}, which no earlier case saved (did it fail?)", name)
		}
		return v
	})
}

// expandJSON expands placeholders in every string of a JSON value.
func (s *suite) expandJSON(t *testing.T, v any) any {
	switch x := v.(type) {
	case string:
		return s.expand(t, x)
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = s.expandJSON(t, e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.expandJSON(t, e)
		}
		return out
	}
	return v
}

// normalise turns json.Numbers into float64 (the answer's numbers are
// compared as JSON numbers).
func normalise(v any) any {
	switch x := v.(type) {
	case json.Number:
		f, _ := x.Float64()
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = normalise(e)
		}
	case []any:
		for i, e := range x {
			x[i] = normalise(e)
		}
	}
	return v
}

// lookup finds a dotted path in a JSON value; a numeric segment indexes
// an array.
func lookup(v any, path string) (any, bool) {
	for _, seg := range strings.Split(path, ".") {
		switch x := v.(type) {
		case map[string]any:
			e, ok := x[seg]
			if !ok {
				return nil, false
			}
			v = e
		case []any:
			i, err := strconv.Atoi(seg)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			v = x[i]
		default:
			return nil, false
		}
	}
	return v, true
}

func jsonType(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case float64:
		return "number"
	case bool:
		return "boolean"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// sameJSON compares an answer's value with a Go value as JSON.
func sameJSON(got, want any) bool {
	data, err := json.Marshal(want)
	if err != nil {
		return false
	}
	var w any
	if json.Unmarshal(data, &w) != nil {
		return false
	}
	return reflect.DeepEqual(got, w)
}

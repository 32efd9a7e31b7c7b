package idempotency_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/idempotency"
	"github.com/vigilhq/vigil/pkg/natstest"
)

// tokens maps bearer tokens to principals; "member-2" is a second
// sign-in token of the same member as "member-1".
type tokens map[string]auth.Principal

func (m tokens) Authenticate(_ context.Context, tok string) (auth.Principal, error) {
	if p, ok := m[tok]; ok {
		return p, nil
	}
	return auth.Principal{}, apperr.Unauthenticated("unknown token")
}

var callers = tokens{
	"owner":    {Tenant: "acme", Role: auth.RoleOwner, KeyID: "k-owner"},
	"admin":    {Tenant: "acme", Role: auth.RoleAdmin, KeyID: "k-admin"},
	"member-1": {Tenant: "acme", Role: auth.RoleOwner, Member: "ann@example.com"},
	"member-2": {Tenant: "acme", Role: auth.RoleOwner, Member: "ann@example.com"},
	"other":    {Tenant: "globex", Role: auth.RoleOwner, KeyID: "k-owner"},
}

type fixture struct {
	srv   *httptest.Server
	calls atomic.Int64
	env   *natstest.Env
}

// newFixture serves POST /v1/keys (sealed: it answers a fresh secret, and
// only owners may create owner keys, as the real route) and POST
// /v1/things/:id (plain) behind real authentication.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	f := &fixture{env: natstest.Start(t)}
	store, err := idempotency.Open(context.Background(), f.env.JS, 1)
	if err != nil {
		t.Fatal(err)
	}
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	g := e.Group("/v1", httpkit.Authenticate(callers))
	g.POST("/keys", func(c echo.Context) error {
		f.calls.Add(1)
		var in struct{ Role string }
		if err := json.NewDecoder(c.Request().Body).Decode(&in); err != nil {
			return apperr.Validation("bad body")
		}
		if p := httpkit.Principal(c); !p.Role.Grants(auth.Role(in.Role)) {
			return apperr.Forbidden("a " + string(p.Role) + " cannot create " + in.Role + " keys")
		}
		b := make([]byte, 16)
		_, _ = rand.Read(b)
		return c.JSON(http.StatusCreated, map[string]string{"key": "vgl_secret_" + hex.EncodeToString(b)})
	}, store.Sealed())
	g.POST("/things/:id", func(c echo.Context) error {
		f.calls.Add(1)
		return c.JSON(http.StatusCreated, map[string]any{"n": f.calls.Load()})
	}, store.Middleware())
	f.srv = httptest.NewServer(e)
	t.Cleanup(f.srv.Close)
	return f
}

type answer struct {
	status   int
	replayed bool
	body     []byte
}

func (f *fixture) post(t *testing.T, token, path, idemKey, body string, hdr ...string) answer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(idempotency.Header, idemKey)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return answer{res.StatusCode, res.Header.Get("Idempotent-Replayed") == "true", b}
}

// TestReplayIsScopedToTheCaller is the reproduction of issue 14 item 1:
// an owner creates an owner key with Idempotency-Key k-1, and an admin
// replaying the same body with k-1 must not receive it.
func TestReplayIsScopedToTheCaller(t *testing.T) {
	f := newFixture(t)
	const body = `{"name":"deploys","role":"owner"}`
	first := f.post(t, "owner", "/v1/keys", "k-1", body)
	if first.status != 201 || first.replayed || !bytes.Contains(first.body, []byte("vgl_secret_")) {
		t.Fatalf("first create: %d %s", first.status, first.body)
	}
	var created struct{ Key string }
	_ = json.Unmarshal(first.body, &created)

	again := f.post(t, "owner", "/v1/keys", "k-1", body)
	if again.status != 201 || !again.replayed || !bytes.Equal(again.body, first.body) {
		t.Fatalf("the creator's replay: %d replayed=%v %s", again.status, again.replayed, again.body)
	}

	cases := []struct {
		name, token, path, agent string
		status                   int
		replayed                 bool
	}{
		{"an admin replaying the owner's key gets its own 403", "admin", "/v1/keys", "", 403, false},
		{"another tenant's key with the same id is another caller", "other", "/v1/keys", "", 201, false},
		{"the same member with another sign-in token gets no secret", "member-2", "/v1/keys", "", 201, false},
		{"the same credential acting as an agent is another request", "owner", "/v1/keys", "agent-7", 201, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := f.post(t, tc.token, tc.path, "k-1", body, idempotency.AgentHeader, tc.agent)
			if a.status != tc.status {
				t.Fatalf("status %d, want %d: %s", a.status, tc.status, a.body)
			}
			if a.replayed != tc.replayed || bytes.Contains(a.body, []byte(created.Key)) {
				t.Fatalf("replayed=%v body %s reveals the owner's key", a.replayed, a.body)
			}
		})
	}

	// A member's refreshed token is the same principal but not the same
	// credential: the sealed response is refused, never shown.
	m1 := f.post(t, "member-1", "/v1/keys", "k-2", body)
	if m1.status != 201 {
		t.Fatalf("member create: %d %s", m1.status, m1.body)
	}
	m2 := f.post(t, "member-2", "/v1/keys", "k-2", body)
	if m2.status != 409 || m2.replayed || bytes.Contains(m2.body, []byte("vgl_secret_")) {
		t.Fatalf("replay under a refreshed token: %d replayed=%v %s", m2.status, m2.replayed, m2.body)
	}
	if m := f.post(t, "member-1", "/v1/keys", "k-2", body); !m.replayed || !bytes.Equal(m.body, m1.body) {
		t.Fatalf("replay under the creating token: %d %s", m.status, m.body)
	}
}

// TestNoSecretAtRest reads every record in the bucket after key creation:
// none holds the key.
func TestNoSecretAtRest(t *testing.T) {
	f := newFixture(t)
	a := f.post(t, "owner", "/v1/keys", "k-1", `{"role":"viewer"}`)
	var created struct{ Key string }
	if err := json.Unmarshal(a.body, &created); err != nil || created.Key == "" {
		t.Fatalf("create: %d %s", a.status, a.body)
	}
	plain := f.post(t, "owner", "/v1/things/1", "k-1", `{}`)
	if plain.status != 201 {
		t.Fatalf("plain route: %d %s", plain.status, plain.body)
	}
	kv, err := f.env.JS.KeyValue(context.Background(), idempotency.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := kv.Keys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 {
		t.Fatalf("records: %v, want the key creation and the plain request", keys)
	}
	sealed, readable := 0, 0
	for _, k := range keys {
		e, err := kv.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(k, "acme.") {
			t.Fatalf("record %s is not under its tenant", k)
		}
		// Body is []byte, base64 in JSON: decode before looking for the key.
		var rec struct {
			Body   []byte `json:"body"`
			Sealed string `json:"sealed"`
		}
		if err := json.Unmarshal(e.Value(), &rec); err != nil {
			t.Fatal(err)
		}
		for _, b := range [][]byte{e.Value(), rec.Body, []byte(rec.Sealed)} {
			if bytes.Contains(b, []byte(created.Key)) {
				t.Fatalf("record %s holds the key: %s", k, b)
			}
		}
		if rec.Sealed != "" {
			sealed++
		}
		if bytes.Equal(rec.Body, plain.body) {
			readable++
		}
	}
	if sealed != 1 || readable != 1 {
		t.Fatalf("want the key creation sealed and the plain response stored as is: sealed %d, readable %d", sealed, readable)
	}
}

func TestPlainReplayAndConflicts(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name, path, key, body string
		status                int
		replayed              bool
		calls                 int64
	}{
		{"first request runs", "/v1/things/9", "p-1", `{"a":1}`, 201, false, 1},
		{"same key and body replays", "/v1/things/9", "p-1", `{"a":1}`, 201, true, 1},
		{"same key, other body is a conflict", "/v1/things/9", "p-1", `{"a":2}`, 409, false, 1},
		{"another key runs", "/v1/things/9", "p-2", `{"a":1}`, 201, false, 2},
		{"the same key on another concrete path runs", "/v1/things/10", "p-1", `{"a":1}`, 201, false, 3},
	}
	for _, tc := range cases {
		a := f.post(t, "owner", tc.path, tc.key, tc.body)
		if a.status != tc.status || a.replayed != tc.replayed || f.calls.Load() != tc.calls {
			t.Fatalf("%s: %d replayed=%v calls=%d: %s", tc.name, a.status, a.replayed, f.calls.Load(), a.body)
		}
	}
}

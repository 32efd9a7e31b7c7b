package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
)

// apiEnv is the api service alone, as its binary runs it (its component,
// the catalog, the approval board and the limiter under one supervisor),
// on an embedded NATS server and a fresh ClickHouse database, with the
// tables it reads migrated by their owners' migrations.
type apiEnv struct {
	url  string
	keys map[string]string // "owner", "viewer", "globex" → bearer key
}

func newAPIEnv(t *testing.T) *apiEnv { return newAPIEnvSigning(t, true) }

// newAPIEnvSigning is newAPIEnv, with (sign) or without a stand-in for the
// ledger's manifest-signing responder: the ledger is another service, and
// its signatures are tested end to end in cmd/vigil.
func newAPIEnvSigning(t *testing.T, sign bool) *apiEnv {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n := natstest.Start(t)
	// Streams of the services the api reads or audits, which their own
	// services would create.
	if err := natsx.EnsureStreams(ctx, n.JS, streams.PolicyConfig(streams.DefaultOptions), streams.GuardianConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	for _, owner := range []string{readmodel.Ingest, readmodel.Policy, readmodel.Risk} {
		if _, err := chx.Migrate(ctx, db.Conn, os.DirFS("../"+owner+"/migrations"), owner); err != nil {
			t.Fatalf("migrate %s: %v", owner, err)
		}
	}
	log, _ := testkit.Logger(t, slog.LevelInfo)
	nc, js := n.ConnectAs(t, streams.ServiceAPI)
	if sign {
		serveManifestSigner(t, n, log)
	}
	catalog, board := control.NewCatalog(n.JS, log), approval.NewBoard(n.JS, log)
	cfg := api.DefaultConfig()
	cfg.Judge.SealSecret = make([]byte, 32)
	_, _ = rand.Read(cfg.Judge.SealSecret)
	limiter := ratelimit.New(n.Conn, "api-test", func(t string) ratelimit.Limits { return catalog.Limits(t, cfg.RateLimits) }, log)
	reg := daemon.Registry()
	svc, err := api.New(cfg, api.Deps{NC: nc, JS: js, CH: db.Conn, Catalog: catalog, Board: board, Store: control.NewStore(js),
		Log: log, Registerer: reg, Limiter: limiter})
	if err != nil {
		t.Fatal(err)
	}
	sup := &daemon.Supervisor{Log: log, Reg: reg, Components: []daemon.Component{svc.Component(), catalog.Component(), board.Component(), limiter.Component()}}
	if err := sup.Start(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- sup.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
		sup.Close()
	})
	e := &apiEnv{url: "http://" + ln.Addr().String(), keys: map[string]string{}}
	store := control.NewStore(n.JS)
	for name, k := range map[string]struct {
		tenant string
		role   auth.Role
	}{"owner": {"acme", auth.RoleOwner}, "viewer": {"acme", auth.RoleViewer}, "globex": {"globex", auth.RoleOwner}} {
		_, tok, err := store.CreateKey(ctx, k.tenant, k.role, name, "test")
		if err != nil {
			t.Fatal(err)
		}
		e.keys[name] = tok
	}
	if err := catalog.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// serveManifestSigner answers agent.SignEndpoint as the ledger does, with
// a key of its own.
func serveManifestSigner(t *testing.T, n *natstest.Env, log *slog.Logger) {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	lnc, _ := n.ConnectAs(t, streams.ServiceLedger)
	srv, err := rpc.Serve(lnc, "test-ledger", "manifest signatures", func(svc micro.Service) error {
		return agent.SignEndpoint.Handle(svc, log, func(_ context.Context, req agent.SignRequest) (agent.SignResponse, error) {
			c, err := req.Manifest.Canonical()
			if err != nil {
				return agent.SignResponse{}, err
			}
			h, err := req.Manifest.Hash()
			return agent.SignResponse{ManifestHash: h, ManifestSignature: "ed25519:" + base64.StdEncoding.EncodeToString(ed25519.Sign(key, c))}, err
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
}

type apiReq struct {
	method, path, key string
	header            map[string]string
	body              string
}

type apiRes struct {
	status int
	header http.Header
	body   []byte
}

func (e *apiEnv) do(t *testing.T, r apiReq) apiRes {
	t.Helper()
	req, err := http.NewRequest(r.method, e.url+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if r.key != "" {
		req.Header.Set("Authorization", "Bearer "+e.keys[r.key])
	}
	if r.body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apiRes{status: res.StatusCode, header: res.Header, body: b}
}

// envelope is the documented error body.
type envelope struct {
	Error struct {
		Code    *string `json:"code"`
		Message *string `json:"message"`
		Details []struct {
			Path string `json:"path"`
			Code string `json:"code"`
		} `json:"details"`
	} `json:"error"`
	Code    *string `json:"code"`
	Message *string `json:"message"`
}

// checkEnvelope asserts an error answer has every field of
// {"error":{"code","message","details"},"code","message"} with the
// expected codes, and that detailPath (if any) is among the details.
func checkEnvelope(t *testing.T, r apiRes, status int, code, short, detailPath string) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
	}
	var env envelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("not a JSON envelope: %v: %s", err, r.body)
	}
	if env.Error.Code == nil || env.Error.Message == nil || env.Code == nil || env.Message == nil || !bytes.Contains(r.body, []byte(`"details":`)) {
		t.Fatalf("envelope lacks a field: %s", r.body)
	}
	if *env.Error.Code != code || *env.Code != short || *env.Message == "" {
		t.Fatalf("codes %q/%q, want %q/%q: %s", *env.Error.Code, *env.Code, code, short, r.body)
	}
	if detailPath == "" {
		return
	}
	for _, d := range env.Error.Details {
		if d.Path == detailPath {
			return
		}
	}
	t.Fatalf("no detail for %q: %s", detailPath, r.body)
}

// TestAPIErrors: authentication, tenant and role checks, paging
// parameters and body validation answer in the one envelope with stable
// codes, through the real routes and middleware.
func TestAPIErrors(t *testing.T) {
	e := newAPIEnv(t)
	tests := []struct {
		name               string
		req                apiReq
		status             int
		code, short, field string
	}{
		{"no key", apiReq{method: "GET", path: "/v1/agents"}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"a key that is not one", apiReq{method: "GET", path: "/v1/agents", header: map[string]string{"Authorization": "Bearer vk_nope"}}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"x-tenant-id of another tenant", apiReq{method: "GET", path: "/v1/agents", key: "owner", header: map[string]string{"x-tenant-id": "globex"}}, 403, "FORBIDDEN", "forbidden", ""},
		{"viewer writes a policy", apiReq{method: "POST", path: "/v1/policies", key: "viewer", body: `{}`}, 403, "FORBIDDEN", "forbidden", ""},
		{"viewer changes rate limits", apiReq{method: "POST", path: "/v1/settings/rate-limits", key: "viewer", body: `{}`}, 403, "FORBIDDEN", "forbidden", ""},
		{"limit not a number", apiReq{method: "GET", path: "/v1/agents?limit=abc", key: "owner"}, 400, "VALIDATION_ERROR", "invalid_request", "limit"},
		{"limit zero", apiReq{method: "GET", path: "/v1/sessions?limit=0", key: "owner"}, 400, "VALIDATION_ERROR", "invalid_request", "limit"},
		{"negative limit", apiReq{method: "GET", path: "/v1/verdicts?limit=-5", key: "owner"}, 400, "VALIDATION_ERROR", "invalid_request", "limit"},
		{"cursor that is not one", apiReq{method: "GET", path: "/v1/agents?cursor=not!base64", key: "owner"}, 400, "VALIDATION_ERROR", "invalid_request", "cursor"},
		{"body not JSON", apiReq{method: "POST", path: "/v1/agents", key: "owner", body: `{"name":`}, 400, "VALIDATION_ERROR", "invalid_request", ""},
		{"unknown agent", apiReq{method: "GET", path: "/v1/agents/no-such-agent", key: "owner"}, 404, "NOT_FOUND", "not_found", ""},
		{"unknown route", apiReq{method: "GET", path: "/v1/no-such-route", key: "owner"}, 404, "NOT_FOUND", "not_found", ""},
		{"rate limits past the deployment's bounds", apiReq{method: "POST", path: "/v1/settings/rate-limits", key: "owner", body: `{"decisions":{"rate":1e12,"burst":1e12}}`}, 400, "VALIDATION_ERROR", "invalid_request", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			checkEnvelope(t, e.do(t, tt.req), tt.status, tt.code, tt.short, tt.field)
		})
	}
}

// TestAPIPaging: a list pages with limit and the cursor it returns, a
// limit above the maximum is clamped rather than refused, and each tenant
// sees only its own agents.
func TestAPIPaging(t *testing.T) {
	e := newAPIEnv(t)
	for _, id := range []string{"a1", "a2", "a3"} {
		r := e.do(t, apiReq{method: "POST", path: "/v1/agents", key: "owner", body: `{"agentId":"` + id + `","name":"` + id + `"}`})
		if r.status != http.StatusCreated {
			t.Fatalf("register %s: %d %s", id, r.status, r.body)
		}
	}
	type page struct {
		Data []struct {
			AgentID string `json:"agentId"`
		} `json:"data"`
		HasMore    bool   `json:"hasMore"`
		NextCursor string `json:"nextCursor"`
	}
	list := func(key, query string) page {
		var p page
		r := e.do(t, apiReq{method: "GET", path: "/v1/agents" + query, key: key})
		if r.status != http.StatusOK {
			t.Fatalf("list %s: %d %s", query, r.status, r.body)
		}
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Registration returns once CONTROL has it; the list reads the
	// projection, so wait for all three.
	testkit.Eventually(t, "three agents listed", func() bool { return len(list("owner", "").Data) == 3 })
	tests := []struct {
		name  string
		key   string
		query string
		want  int
		more  bool
	}{
		{"first page", "owner", "?limit=2", 2, true},
		{"limit above the maximum is clamped", "owner", "?limit=100000", 3, false},
		{"another tenant sees none", "globex", "", 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := list(tt.key, tt.query)
			if len(p.Data) != tt.want || p.HasMore != tt.more {
				t.Fatalf("%d agents, hasMore %v; want %d, %v", len(p.Data), p.HasMore, tt.want, tt.more)
			}
		})
	}
	first := list("owner", "?limit=2")
	rest := list("owner", "?limit=2&cursor="+first.NextCursor)
	if len(rest.Data) != 1 || rest.HasMore || rest.Data[0].AgentID == first.Data[0].AgentID || rest.Data[0].AgentID == first.Data[1].AgentID {
		t.Fatalf("second page %+v after %+v", rest, first)
	}
}

// TestAPIIdempotentRegistration: a retried registration with the same
// Idempotency-Key answers the original 201 (marked replayed) instead of a
// conflict; the same key from another tenant is another record.
func TestAPIIdempotentRegistration(t *testing.T) {
	e := newAPIEnv(t)
	body := `{"name":"by-name"}`
	first := e.do(t, apiReq{method: "POST", path: "/v1/agents", key: "owner", body: body, header: map[string]string{"Idempotency-Key": "k-1"}})
	if first.status != http.StatusCreated {
		t.Fatalf("first: %d %s", first.status, first.body)
	}
	tests := []struct {
		name     string
		key      string
		idem     string
		status   int
		replayed bool
	}{
		{"retry with the key", "owner", "k-1", http.StatusCreated, true},
		{"same name without the key", "owner", "", http.StatusConflict, false},
		{"same key, other tenant", "globex", "k-1", http.StatusCreated, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := map[string]string{}
			if tt.idem != "" {
				h["Idempotency-Key"] = tt.idem
			}
			r := e.do(t, apiReq{method: "POST", path: "/v1/agents", key: tt.key, body: body, header: h})
			if r.status != tt.status || (r.header.Get("Idempotent-Replayed") == "true") != tt.replayed {
				t.Fatalf("%d replayed=%q: %s", r.status, r.header.Get("Idempotent-Replayed"), r.body)
			}
			if tt.replayed && !bytes.Equal(r.body, first.body) {
				t.Fatalf("replay %s differs from %s", r.body, first.body)
			}
		})
	}
}

// TestAPIManifestSignature: a registration carries the ledger's
// signature of its manifest; a patch that changes the manifest is signed
// again, one that does not keeps the signature;
// without the ledger a registration is refused (503, KLA's internal_error
// with Vigil's finer code in details) and nothing is recorded.
func TestAPIManifestSignature(t *testing.T) {
	type view struct {
		ManifestHash      string  `json:"manifestHash"`
		ManifestSignature *string `json:"manifestSignature"`
	}
	read := func(t *testing.T, r apiRes, status int) view {
		t.Helper()
		if r.status != status {
			t.Fatalf("status %d, want %d: %s", r.status, status, r.body)
		}
		var v view
		if err := json.Unmarshal(r.body, &v); err != nil || v.ManifestSignature == nil || !strings.HasPrefix(*v.ManifestSignature, "ed25519:") {
			t.Fatalf("no manifest signature (%v): %s", err, r.body)
		}
		return v
	}
	e := newAPIEnv(t)
	reg := read(t, e.do(t, apiReq{method: "POST", path: "/v1/agents", key: "owner", body: `{"agentId":"signed","name":"signed","tools":["b","a"]}`}), http.StatusCreated)
	paused := read(t, e.do(t, apiReq{method: "PATCH", path: "/v1/agents/signed", key: "owner", body: `{"status":"paused"}`}), http.StatusOK)
	if paused.ManifestHash != reg.ManifestHash || *paused.ManifestSignature != *reg.ManifestSignature {
		t.Fatalf("a status change re-signed: %+v then %+v", reg, paused)
	}
	changed := read(t, e.do(t, apiReq{method: "PATCH", path: "/v1/agents/signed", key: "owner", body: `{"description":"now with a description"}`}), http.StatusOK)
	if changed.ManifestHash == reg.ManifestHash || *changed.ManifestSignature == *reg.ManifestSignature {
		t.Fatalf("a manifest change kept the hash or signature: %+v then %+v", reg, changed)
	}
	if got := read(t, e.do(t, apiReq{method: "GET", path: "/v1/agents/signed", key: "owner"}), http.StatusOK); *got.ManifestSignature != *changed.ManifestSignature {
		t.Fatalf("read %+v, want the last signature %+v", got, changed)
	}

	t.Run("without the ledger", func(t *testing.T) {
		e := newAPIEnvSigning(t, false)
		r := e.do(t, apiReq{method: "POST", path: "/v1/agents", key: "owner", body: `{"agentId":"unsigned"}`})
		checkEnvelope(t, r, http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "internal_error", "")
		if !bytes.Contains(r.body, []byte(`"code":"unavailable"`)) || r.header.Get("Retry-After") == "" {
			t.Fatalf("503 without the finer code or Retry-After: %v %s", r.header, r.body)
		}
		if r := e.do(t, apiReq{method: "GET", path: "/v1/agents/unsigned", key: "owner"}); r.status != http.StatusNotFound {
			t.Fatalf("an unsigned registration was recorded: %d %s", r.status, r.body)
		}
	})
}

package main

// Helpers for the policy end-to-end tests (policy_e2e_test.go): an
// in-process stack on a real ClickHouse database, an api-only stack with no
// policy service, a small HTTP client and the shapes the decision endpoints
// return. Every name starts with "pol" so as not to collide with the other
// end-to-end helpers of this package.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
	policysvc "github.com/vigilhq/vigil/services/policy"
)

// polWait bounds how long a test waits for a ClickHouse-backed read
// (decisions are queryable within about a second).
const polWait = 15 * time.Second

func polLogger(t *testing.T) *slog.Logger {
	log, _ := testkit.Logger(t, slog.LevelInfo)
	return log
}

// polStack is an all-in-one Vigil (ingest, api, policy) serving HTTP on a
// loopback port, on a fresh ClickHouse database.
type polStack struct {
	t    *testing.T
	st   *Stack
	db   *chtest.DB
	base string
}

// polStart starts a stack with the zero policy config (defaults and an
// ephemeral signing key) and stops it when the test ends.
func polStart(t *testing.T) *polStack { t.Helper(); return polStartWith(t, nil) }

// polStartWith is polStart with a configuration adjust may change.
func polStartWith(t *testing.T, adjust func(*StackConfig)) *polStack {
	t.Helper()
	db := chtest.New(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cfg := StackConfig{
		DataDir: t.TempDir(), NATSHost: "127.0.0.1", NATSPort: -1,
		ClickHouseDSN: db.DSN, ClickHouseWait: 10 * time.Second,
		Ingest: ingest.DefaultConfig(), API: api.DefaultConfig(), Log: polLogger(t),
	}
	if adjust != nil {
		adjust(&cfg)
	}
	st, err := StartStack(ctx, cfg)
	if err != nil {
		t.Fatalf("StartStack: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		st.Close()
		t.Fatalf("listen: %v", err)
	}
	sctx, stop := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- st.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Errorf("Serve did not return within 60s of cancel")
		}
		st.Close()
	})
	return &polStack{t: t, st: st, db: db, base: "http://" + ln.Addr().String()}
}

// polKey creates an API key of tenant with role on store, bound to
// agents (an agent key with none is one created before keys were bound).
func polKey(t testing.TB, store *control.Store, tenant string, role auth.Role, agents ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, tok, err := store.IssueKey(ctx, control.KeySpec{Tenant: tenant, Role: role, Name: "pol-" + string(role), By: "policy e2e", Agents: agents})
	if err != nil {
		t.Fatalf("CreateKey(%s, %s): %v", tenant, role, err)
	}
	return tok
}

func (s *polStack) key(tenant string, role auth.Role, agents ...string) string {
	s.t.Helper()
	return polKey(s.t, s.st.Store, tenant, role, agents...)
}

// register puts agents in tenant's registry (registerAgents).
func (s *polStack) register(tenant string, ids ...string) {
	s.t.Helper()
	registerAgents(s.t, s.st.Store, tenant, ids...)
}

// polClient is one caller: a base URL and an API key.
type polClient struct {
	t    testing.TB
	base string
	key  string
}

func (s *polStack) as(key string) polClient { return polClient{t: s.t, base: s.base, key: key} }

// polResp is an HTTP response, read fully.
type polResp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r polResp) String() string {
	b := r.Body
	if len(b) > 3000 {
		b = append(slices.Clip(b[:3000]), "…"...)
	}
	return fmt.Sprintf("HTTP %d %s", r.Status, b)
}

// decode unmarshals the body into v, failing the test if it is not JSON.
func (r polResp) decode(t testing.TB, v any) {
	t.Helper()
	if err := json.Unmarshal(r.Body, v); err != nil {
		t.Fatalf("decode %s: %v", r, err)
	}
}

// object is the body as a generic JSON object.
func (r polResp) object(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	r.decode(t, &m)
	return m
}

// want fails the test unless the status is status.
func (r polResp) want(t testing.TB, status int, what string) polResp {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want HTTP %d, got %s", what, status, r)
	}
	return r
}

// do sends a request (see send); hdr are extra header name/value pairs
// (a Content-Type among them replaces application/json).
func (c polClient) do(method, path string, body any, hdr ...string) polResp {
	c.t.Helper()
	h := map[string]string{}
	for i := 0; i+1 < len(hdr); i += 2 {
		h[hdr[i]] = hdr[i+1]
	}
	r, err := send(c.base, req{method: method, path: path, key: c.key, body: body, header: h})
	if err != nil {
		c.t.Fatalf("%s %s: %v", method, path, err)
	}
	return polResp{Status: r.status, Header: r.header, Body: r.body}
}

func (c polClient) get(path string) polResp { c.t.Helper(); return c.do(http.MethodGet, path, nil) }

func (c polClient) post(path string, body any, hdr ...string) polResp {
	c.t.Helper()
	return c.do(http.MethodPost, path, body, hdr...)
}

// ---- shapes ----

type polMatch struct {
	PolicyID    string   `json:"policyId"`
	RuleID      string   `json:"ruleId"`
	Outcome     string   `json:"outcome"`
	ReasonCodes []string `json:"reasonCodes"`
	Message     string   `json:"message"`
}

// polKLA is the response of POST /v1/decisions.evaluate.
type polKLA struct {
	Decision             string     `json:"decision"`
	ReasonCodes          []string   `json:"reasonCodes"`
	RequiresDeskApproval bool       `json:"requiresDeskApproval"`
	DecisionID           string     `json:"decisionId"`
	PackHash             string     `json:"packHash"`
	Matches              []polMatch `json:"matches"`
	ApprovalTimeoutSec   int        `json:"approvalTimeoutSeconds"`
}

func (d polKLA) String() string {
	return fmt.Sprintf("%s %v (%s, pack %s)", d.Decision, d.ReasonCodes, d.DecisionID, d.PackHash)
}

// polVerdict is a Kaizen verdict as Vigil returns it.
type polVerdict struct {
	ID          string          `json:"id"`
	DecisionID  string          `json:"decisionId"`
	Decision    string          `json:"decision"`
	Outcome     string          `json:"outcome"`
	Reason      string          `json:"reason"`
	ReasonCodes []string        `json:"reasonCodes"`
	Evidence    []polMatch      `json:"evidence"`
	Confidence  *float64        `json:"confidence"`
	Agent       string          `json:"agent"`
	Action      json.RawMessage `json:"action"`
	Source      string          `json:"source"`
	Status      string          `json:"status"`
	PackHash    string          `json:"packHash"`
	CreatedAt   time.Time       `json:"createdAt"`
}

type polVerdictPage struct {
	Data    []polVerdict `json:"data"`
	Limit   int          `json:"limit"`
	Offset  int          `json:"offset"`
	HasMore bool         `json:"hasMore"`
}

// newestFirst reports whether the page is ordered newest first, to the
// millisecond the decision store keeps.
func (p polVerdictPage) newestFirst() bool {
	for i := 1; i < len(p.Data); i++ {
		if p.Data[i].CreatedAt.UnixMilli() > p.Data[i-1].CreatedAt.UnixMilli() {
			return false
		}
	}
	return true
}

// sameIDs compares two id lists as sets.
func polSameIDs(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// String lists the page as id@createdAt, for failure messages.
func (p polVerdictPage) String() string {
	parts := make([]string, 0, len(p.Data))
	for _, v := range p.Data {
		parts = append(parts, v.ID+"@"+v.CreatedAt.Format("15:04:05.000000"))
	}
	return fmt.Sprintf("[%s] (limit %d, offset %d, hasMore %v)", strings.Join(parts, " "), p.Limit, p.Offset, p.HasMore)
}

func (p polVerdictPage) ids() []string {
	out := make([]string, 0, len(p.Data))
	for _, v := range p.Data {
		out = append(out, v.ID)
	}
	return out
}

// polEnvelope is the error envelope.
type polEnvelope struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
		Details []struct {
			Path    string `json:"path"`
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"details"`
	} `json:"error"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

// polError checks r is an error with status and both codes, and returns
// the envelope.
func polError(t testing.TB, r polResp, status int, code, short, what string) polEnvelope {
	t.Helper()
	if r.Status != status {
		t.Fatalf("%s: want HTTP %d, got %s", what, status, r)
	}
	var e polEnvelope
	r.decode(t, &e)
	if e.Error.Code != code || e.Code != short || e.Message == "" || e.Error.Message != e.Message {
		t.Fatalf("%s: want error.code %s and code %s with a message, got %s", what, code, short, r)
	}
	return e
}

// ---- decision helpers ----

// evaluate asks POST /v1/decisions.evaluate and expects 200.
func (c polClient) evaluate(body any, hdr ...string) polKLA {
	c.t.Helper()
	r := c.post("/v1/decisions.evaluate", body, hdr...).want(c.t, http.StatusOK, "decisions.evaluate")
	var d polKLA
	r.decode(c.t, &d)
	if d.DecisionID == "" || d.PackHash == "" || len(d.ReasonCodes) == 0 {
		c.t.Fatalf("decisions.evaluate: incomplete decision %s", r)
	}
	return d
}

// verdict reports a Kaizen action (POST /v1/verdicts) and expects 201.
func (c polClient) verdict(body any) polVerdict {
	c.t.Helper()
	r := c.post("/v1/verdicts", body).want(c.t, http.StatusCreated, "POST /v1/verdicts")
	var v polVerdict
	r.decode(c.t, &v)
	return v
}

// verdicts lists GET /v1/verdicts?query and expects 200.
func (c polClient) verdicts(query string) polVerdictPage {
	c.t.Helper()
	r := c.get("/v1/verdicts?"+query).want(c.t, http.StatusOK, "GET /v1/verdicts?"+query)
	var p polVerdictPage
	r.decode(c.t, &p)
	return p
}

// createPolicy posts a policy (YAML when the source does not start with
// "{") and returns its id.
func (c polClient) createPolicy(src string) string {
	c.t.Helper()
	var r polResp
	if strings.HasPrefix(strings.TrimSpace(src), "{") {
		r = c.post("/v1/policies", src)
	} else {
		r = c.post("/v1/policies", src, "Content-Type", "application/yaml")
	}
	r.want(c.t, http.StatusCreated, "create policy")
	id, _ := r.object(c.t)["id"].(string)
	if id == "" {
		c.t.Fatalf("create policy: no id in %s", r)
	}
	return id
}

// polEventually is testkit.EventuallyWithin under its harness name.
func polEventually(t testing.TB, within time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	testkit.EventuallyWithin(t, within, what, cond)
}

// waitDecision polls GET /v1/decisions/:id until the record is queryable.
func (c polClient) waitDecision(id string) map[string]any {
	c.t.Helper()
	var rec map[string]any
	polEventually(c.t, polWait, "decision "+id+" queryable", func() (bool, string) {
		r := c.get("/v1/decisions/" + id)
		if r.Status == http.StatusOK {
			rec = r.object(c.t)
			return true, ""
		}
		return false, r.String()
	})
	return rec
}

// polEvent is a valid Kaplaix event with payload p, timestamped now.
func polEvent(agentID, sessionID string, payload map[string]any) map[string]any {
	return map[string]any{
		"eventId": uuid.NewString(), "agentId": agentID, "sessionId": sessionID,
		"sourceTimestamp": time.Now().UTC().Format(time.RFC3339), "category": "tool_api",
		"schemaVersion": "1.0", "payload": payload,
	}
}

// ---- an api with no policy service ----

// polAPIOnly is the api service on its own: embedded NATS with CONTROL
// and the idempotency bucket, a catalog, real ClickHouse for reads, and
// nothing answering rpc.policy.v1.evaluate.
type polAPIOnly struct {
	env   *natstest.Env
	db    *chtest.DB
	cat   *control.Catalog
	store *control.Store
	base  string
	log   *slog.Logger
}

func polStartAPIOnly(t *testing.T, cfg api.Config) *polAPIOnly {
	t.Helper()
	env := natstest.Start(t)
	db := chtest.New(t)
	log := polLogger(t)
	inst := serveAPI(t, cfg, env.Conn, env.JS, db.Conn, prometheus.NewRegistry(), log, false)
	return &polAPIOnly{env: env, db: db, cat: inst.cat, store: inst.store, base: inst.base, log: log}
}

// apiInstance is an api service serving HTTP with its own catalog and
// approval board, and no workers (projectors belong to another instance,
// or to none).
type apiInstance struct {
	base  string
	cat   *control.Catalog
	store *control.Store
}

// serveAPI starts an api instance on the given NATS connection and
// ClickHouse; it stops when the test ends. Its approval board follows
// GUARDIAN only with followBoard (a NATS without the guardian has none).
func serveAPI(t testing.TB, cfg api.Config, nc *nats.Conn, js jetstream.JetStream, ch driver.Conn, reg prometheus.Registerer, log *slog.Logger, followBoard bool) apiInstance {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cat, store, board := control.NewCatalog(js, log), control.NewStore(js), approval.NewBoard(js, log)
	if cfg.Judge.SealSecret == nil {
		cfg.Judge.SealSecret = make([]byte, 32)
	}
	svc, err := api.New(cfg, api.Deps{NC: nc, JS: js, CH: ch, Catalog: cat, Board: board, Store: store, Log: log, Registerer: reg})
	if err != nil {
		t.Fatalf("api.New: %v", err)
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		t.Fatalf("api EnsureStreams: %v", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	t.Cleanup(stop)
	if err := cat.Run(runCtx); err != nil {
		t.Fatalf("catalog: %v", err)
	}
	if followBoard {
		if err := board.Run(runCtx); err != nil {
			t.Fatalf("approval board: %v", err)
		}
	}
	if err := cat.Sync(ctx); err != nil {
		t.Fatalf("catalog sync: %v", err)
	}
	e, err := httpkit.NewServer(log, prometheus.NewRegistry())
	if err != nil {
		t.Fatalf("http server: %v", err)
	}
	svc.Routes(e)
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return apiInstance{base: srv.URL, cat: cat, store: store}
}

// client is a caller whose failures are reported on t (a subtest's).
func (s *polStack) client(t testing.TB, key string) polClient {
	return polClient{t: t, base: s.base, key: key}
}

// policyReplica is a second policy service on a stack's NATS.
type policyReplica struct {
	svc *policysvc.Service
	// cat is its catalog of CONTROL.
	cat *control.Catalog
	// reg counts what the replica decided.
	reg *prometheus.Registry
	// stop stops it (once; also when the test ends).
	stop func()
}

// startPolicyReplica runs a second policy service on the stack's NATS, as
// the policy service's own NATS user with its own catalog: it answers
// decision requests in the same queue group as the stack's, so requests
// are spread over both, and (unless adjust turns it off) shares the
// judging of ingested events. No ClickHouse: the stack's replica
// projects the decisions.
func startPolicyReplica(t *testing.T, st *stack.Stack, dataDir string, adjust func(*policysvc.Config)) policyReplica {
	t.Helper()
	log := testLogger(t)
	nc, js, err := st.Connect(streams.ServicePolicy, "policy-replica", log)
	if err != nil {
		t.Fatalf("policy replica: connect: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fail := func(err error) {
		cancel()
		nc.Close()
		t.Fatal(err)
	}
	cat := control.NewCatalog(js, log)
	if err := cat.Run(ctx); err != nil {
		fail(err)
	}
	sctx, scancel := context.WithTimeout(ctx, 20*time.Second)
	defer scancel()
	// Like every replica: the catalog is current before it answers.
	if err := cat.Sync(sctx); err != nil {
		fail(err)
	}
	cfg := policysvc.DefaultConfig()
	cfg.SigningSeed = stacktest.SigningSeed
	// The deployment's secrets, as `vigil dev` keeps them in its data dir.
	if cfg.RedactionKey, err = stack.KeyFile(filepath.Join(dataDir, stack.RedactionKeyFile)); err != nil {
		fail(err)
	}
	if cfg.Judge.SealSecret, err = stack.KeyFile(filepath.Join(dataDir, stack.JudgeSealKeyFile)); err != nil {
		fail(err)
	}
	if adjust != nil {
		adjust(&cfg)
	}
	reg := prometheus.NewRegistry()
	svc, err := policysvc.New(cfg, policysvc.Deps{NC: nc, JS: js, Catalog: cat, Log: log, Registerer: reg})
	if err != nil {
		fail(err)
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		fail(err)
	}
	if err := svc.Start(ctx); err != nil {
		fail(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("policy replica: %v", err)
			}
			nc.Close()
		})
	}
	t.Cleanup(stop)
	return policyReplica{svc: svc, cat: cat, reg: reg, stop: stop}
}

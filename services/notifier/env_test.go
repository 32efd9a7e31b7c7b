package notifier_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/notifier"
)

type env struct {
	t     testing.TB
	nats  *natstest.Env
	js    jetstream.JetStream
	cfg   notifier.Config
	deps  notifier.Deps
	svc   *notifier.Service
	srv   *httptest.Server
	logs  *testkit.Logs
	keys  map[string]string // "tenant/role" → token
	stop  func()
	store *control.Store
}

// testConfig retries fast: 3 attempts, 20 ms → 100 ms.
func testConfig() notifier.Config {
	cfg := notifier.DefaultConfig()
	cfg.Schedule = notifier.Schedule{InitialInterval: 20 * time.Millisecond, Multiplier: 2, Jitter: 0.2, MaxInterval: 100 * time.Millisecond, MaxAttempts: 3, RetryAfterCap: time.Hour}
	cfg.AttemptTimeout = 2 * time.Second
	cfg.BusyDelay = 20 * time.Millisecond
	cfg.UnhealthyAfter = 2
	cfg.ShutdownTimeout = 2 * time.Second
	cfg.AllowPrivate = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
	cfg.SecretKey = make([]byte, 32)
	_, _ = rand.Read(cfg.SecretKey)
	return cfg
}

// staticResolver answers host lookups made when a channel is configured.
type staticResolver map[string][]netip.Addr

func (r staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, fmt.Errorf("no such host %s", host)
}

func newEnv(t testing.TB, mod func(*notifier.Config)) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), logs: &testkit.Logs{}, keys: map[string]string{}}
	e.js = e.nats.JS
	ctx := context.Background()
	o := streams.DefaultOptions
	// The producers' streams, as policy, guardian, risk and api create them.
	if err := natsx.EnsureStreams(ctx, e.js, streams.ControlConfig(o), streams.PolicyConfig(o), streams.GuardianConfig(o), streams.RiskConfig(o)); err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	catalog := control.NewCatalog(e.js, log)
	cctx, cancelCat := context.WithCancel(ctx)
	t.Cleanup(cancelCat)
	if err := catalog.Run(cctx); err != nil {
		t.Fatal(err)
	}
	e.store = control.NewStore(e.js)
	for _, tenant := range []string{"acme", "globex"} {
		for _, role := range []auth.Role{auth.RoleOwner, auth.RoleAdmin, auth.RoleViewer} {
			_, tok, err := e.store.CreateKey(ctx, tenant, role, string(role), "test")
			if err != nil {
				t.Fatal(err)
			}
			e.keys[tenant+"/"+string(role)] = tok
		}
	}
	e.cfg = testConfig()
	if mod != nil {
		mod(&e.cfg)
	}
	e.deps = notifier.Deps{JS: e.js, CH: db.Conn, Auth: catalog, Log: log, Registerer: prometheus.NewRegistry(),
		Resolver: staticResolver{"hooks.example.com": {netip.MustParseAddr("93.184.216.34")}, "localhost": {netip.MustParseAddr("93.184.216.34")}}}
	e.start()
	return e
}

// start runs a fresh service instance (also after stop, as a restart).
func (e *env) start() {
	t := e.t
	t.Helper()
	e.deps.Registerer = prometheus.NewRegistry()
	svc, err := notifier.New(e.cfg, e.deps)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := svc.EnsureStreams(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.Migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := svc.StartRegistry(ctx); err != nil {
		t.Fatal(err)
	}
	ec, err := httpkit.NewServer(e.deps.Log, prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	svc.Routes(ec)
	srv := httptest.NewServer(ec)
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	e.svc, e.srv = svc, srv
	e.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
			srv.Close()
		})
	}
	t.Cleanup(e.stop)
}

type response struct {
	status int
	body   []byte
	header http.Header
}

func (r response) json(t testing.TB) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response %d is not JSON: %s", r.status, r.body)
	}
	return m
}

// do calls the API as tenant/role ("" for no credentials).
func (e *env) do(who, method, path string, body any, hdr ...string) response {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		data, _ := json.Marshal(b)
		rd = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(method, e.srv.URL+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+e.keys[who])
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, body: data, header: resp.Header}
}

// createChannel creates a channel as acme's (or another tenant's) owner
// and returns its id and, for webhooks, the signing secret.
func (e *env) createChannel(tenant string, body map[string]any) (string, string) {
	e.t.Helper()
	r := e.do(tenant+"/owner", "POST", "/v1/notification-channels", body)
	if r.status != http.StatusCreated {
		e.t.Fatalf("create channel: %d %s", r.status, r.body)
	}
	m := r.json(e.t)
	secret, _ := m["secret"].(string)
	return m["id"].(string), secret
}

// waitSettled waits until each named notifier consumer has nothing
// pending or awaiting an ack.
func (e *env) waitSettled(durables ...string) {
	e.t.Helper()
	ctx := context.Background()
	streamOf := map[string]string{
		notifier.ConsumerPolicy: streams.Policy, notifier.ConsumerGuardian: streams.Guardian, notifier.ConsumerRisk: streams.Risk,
		notifier.ConsumerDeliver: streams.Notifier, notifier.ConsumerProject: streams.Notifier,
	}
	for _, d := range durables {
		testkit.Eventually(e.t, d+" settled", func() (bool, string) {
			c, err := e.nats.JS.Consumer(ctx, streamOf[d], d)
			if err != nil {
				return false, err.Error()
			}
			i, err := c.Info(ctx)
			if err != nil {
				return false, err.Error()
			}
			return i.NumPending == 0 && i.NumAckPending == 0, fmt.Sprintf("pending %d, ack pending %d", i.NumPending, i.NumAckPending)
		})
	}
}

func (e *env) publish(subject string, v any) {
	e.t.Helper()
	data, _ := json.Marshal(v)
	if _, err := e.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: data}); err != nil {
		e.t.Fatal(err)
	}
}

// decide records a policy decision as the policy service would.
func (e *env) decide(tenant, id string, outcome policy.Outcome) {
	e.t.Helper()
	e.publish(streams.DecisionSubject(tenant, "agent-1", outcome.String()), policy.DecisionRecord{
		ID: id, Tenant: tenant, AgentID: "agent-1", SessionID: "sess-1", Source: policy.SourceDecision,
		Input:    policy.Input{Action: policy.Action{Kind: "tool_call", Tool: "shell"}},
		Decision: policy.Decision{Outcome: outcome, ReasonCodes: []string{"TEST_RULE"}}, At: time.Now().UTC(),
	})
}

// approvalChange records a GUARDIAN change as the guardian would.
func (e *env) approvalChange(tenant, id, op string, status approval.Status) {
	e.t.Helper()
	now := time.Now().UTC()
	e.publish(streams.ApprovalSubject(tenant, id), approval.Change{Op: op, At: now, Action: approval.Action{
		ID: id, DecisionID: "dec_" + id, Tenant: tenant, AgentID: "agent-1", Status: status, Priority: "high",
		Action: policy.Action{Kind: "tool_call", Tool: "payments"}, CreatedAt: now, ExpiresAt: now.Add(time.Hour),
	}})
}

// risk publishes a RISK record with exactly the fields the contract in
// pkg/streams documents (the risk service is written separately).
func (e *env) risk(subject string, rec map[string]any) {
	e.t.Helper()
	e.publish(subject, rec)
}

// receiver is a real HTTP target on loopback that records what it gets
// and answers with whatever its behaviour says.
type receiver struct {
	*httptest.Server
	mu       sync.Mutex
	got      []received
	behave   func(n int, r *http.Request) int // status for the n-th request (1-based)
	header   http.Header
	arrivals chan struct{}
}

type received struct {
	header http.Header
	body   []byte
	at     time.Time
}

func newReceiver(t testing.TB, behave func(n int, r *http.Request) int) *receiver {
	rc := &receiver{behave: behave, arrivals: make(chan struct{}, 10000)}
	rc.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rc.mu.Lock()
		rc.got = append(rc.got, received{header: r.Header.Clone(), body: body, at: time.Now()})
		n := len(rc.got)
		h := rc.header
		rc.mu.Unlock()
		rc.arrivals <- struct{}{}
		status := 200
		if rc.behave != nil {
			status = rc.behave(n, r)
		}
		for k, v := range h {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
	}))
	t.Cleanup(rc.Close)
	return rc
}

func (rc *receiver) requests() []received {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]received(nil), rc.got...)
}

func (rc *receiver) waitCount(t testing.TB, n int) []received {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("%d requests at %s", n, rc.URL), func() (bool, string) {
		got := rc.requests()
		return len(got) >= n, fmt.Sprintf("%d requests", len(got))
	})
	return rc.requests()
}

func bodyOf(t *testing.T, r received) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("delivered body is not JSON: %s", r.body)
	}
	return m
}

// deliveries lists a channel's recorded attempts through the API, waiting
// until at least n are visible (the projection is asynchronous).
func (e *env) deliveries(tenant, id string, n int, query string) []map[string]any {
	e.t.Helper()
	var data []any
	testkit.Eventually(e.t, fmt.Sprintf("%d recorded attempts", n), func() (bool, string) {
		r := e.do(tenant+"/viewer", "GET", "/v1/notification-channels/"+id+"/deliveries"+query, nil)
		if r.status != 200 {
			return false, string(r.body)
		}
		data, _ = r.json(e.t)["data"].([]any)
		return len(data) >= n, fmt.Sprintf("%d attempts", len(data))
	})
	out := make([]map[string]any, len(data))
	for i, d := range data {
		out[i] = d.(map[string]any)
	}
	return out
}

var _ = ssrf.ErrForbidden

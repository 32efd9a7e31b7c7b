package ledger

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

var testSeed = bytes.Repeat([]byte{7}, 32)

// env is a real JetStream server, a real ClickHouse database and the
// ledger's source streams.
type env struct {
	t    *testing.T
	nats *natstest.Env
	db   *chtest.DB
}

func newEnv(t *testing.T) *env {
	o := streams.DefaultOptions
	return newEnvWith(t, streams.IngestConfig(o), streams.PolicyConfig(o), streams.ControlConfig(o), streams.GuardianConfig(o), streams.RiskConfig(o))
}

// newEnvWith creates only the given source streams.
func newEnvWith(t *testing.T, cfgs ...jetstream.StreamConfig) *env {
	t.Helper()
	e := &env{t: t, nats: natstest.Start(t), db: chtest.New(t)}
	if err := natsx.EnsureStreams(testCtx(t), e.nats.JS, cfgs...); err != nil {
		t.Fatal(err)
	}
	return e
}

// A deployment without some producers (no guardian, no policy) still
// seals what the others record, and picks a stream up once it appears.
func TestSealsWhateverStreamsExist(t *testing.T) {
	o := streams.DefaultOptions
	e := newEnvWith(t, streams.IngestConfig(o))
	r := e.start()
	e.event("acme", "s-1", 1)
	r.waitSize(t, "acme", 1)
	if err := natsx.EnsureStreams(testCtx(t), e.nats.JS, streams.PolicyConfig(o)); err != nil {
		t.Fatal(err)
	}
	e.decision("acme", "s-1", "sha256:aa")
	r.waitSize(t, "acme", 2)
}

func testCtx(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// running is a started ledger.
type running struct {
	svc  *Service
	reg  *prometheus.Registry
	stop func()
}

func (e *env) start(mods ...func(*Config)) *running {
	e.t.Helper()
	cfg := DefaultConfig()
	cfg.Seed, cfg.Linger = testSeed, 20*time.Millisecond
	for _, m := range mods {
		m(&cfg)
	}
	reg := prometheus.NewRegistry()
	svc, err := New(cfg, Deps{JS: e.nats.JS, CH: e.db.Conn, Log: slog.New(slog.DiscardHandler), Registerer: reg})
	if err != nil {
		e.t.Fatal(err)
	}
	ctx := testCtx(e.t)
	if err := svc.EnsureStreams(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Migrate(ctx); err != nil {
		e.t.Fatal(err)
	}
	rctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(rctx) }()
	r := &running{svc: svc, reg: reg}
	r.stop = func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("ledger Run: %v", err)
		}
		r.stop = func() {}
	}
	e.t.Cleanup(func() { r.stop() })
	return r
}

func (e *env) publish(subject string, v any, msgID string) {
	e.t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	m := nats.NewMsg(subject)
	m.Data = data
	if msgID != "" {
		m.Header.Set(jetstream.MsgIDHeader, msgID)
	}
	if _, err := e.nats.JS.PublishMsg(testCtx(e.t), m); err != nil {
		e.t.Fatal(err)
	}
}

// event publishes an accepted event and returns its id.
func (e *env) event(tenant, session string, n int) string {
	id := uuid.NewString()
	e.eventWithID(tenant, session, id, n)
	return id
}

func (e *env) eventWithID(tenant, session, id string, n int) {
	r := event.Record{Tenant: tenant, Event: event.Event{
		EventID: id, AgentID: "agent-1", SessionID: session, SourceTimestamp: "2026-01-02T03:04:05.678Z",
		Category: "tool_call", SchemaVersion: "1.0", Payload: json.RawMessage(fmt.Sprintf(`{"n":%d,"toolName":"search <q>"}`, n)),
	}, SourceMS: 1767323045678, ReceivedMS: 1767323046000 + int64(n), Client: event.Client{SDK: "go"}, KeyID: "k1"}
	e.publish(streams.EventReceivedSubject(tenant, "agent-1"), r, "")
}

// decision publishes a recorded decision and returns its id.
func (e *env) decision(tenant, session, pack string) string {
	id := "dec_" + uuid.NewString()[:8]
	e.publish(streams.DecisionSubject(tenant, "agent-1", "allow"), map[string]any{
		"decisionId": id, "tenant": tenant, "agentId": "agent-1", "sessionId": session, "source": "evaluate",
		"result": map[string]any{"decision": "allow", "packHash": pack, "reasonCodes": []string{}}, "at": time.Now().UTC(),
	}, id)
	return id
}

// waitSize waits until the tenant's log has want leaves.
func (r *running) waitSize(t *testing.T, tenant string, want uint64) Checkpoint {
	t.Helper()
	var cp Checkpoint
	testkit.Eventually(t, fmt.Sprintf("tenant %s log at %d leaves", tenant, want), func() (bool, string) {
		var err error
		cp, err = r.svc.LatestCheckpoint(testCtx(t), tenant)
		if err != nil {
			t.Fatal(err)
		}
		if cp.TreeSize > want {
			t.Fatalf("tenant %s log has %d leaves, want %d", tenant, cp.TreeSize, want)
		}
		return cp.TreeSize == want, fmt.Sprintf("%d leaves", cp.TreeSize)
	})
	return cp
}

// checkLineage verifies a lineage answer with the library's verifier
// against the signed checkpoint.
func checkLineage(t *testing.T, svc *Service, tenant string, l Lineage) {
	t.Helper()
	if !l.Anchored || l.LedgerIndex == nil {
		t.Fatalf("%s not anchored: %+v", l.LineageID, l)
	}
	cp, err := evidence.OpenCheckpoint([]byte(l.Checkpoint), svc.Origin(tenant), svc.VerifierKey())
	if err != nil {
		t.Fatalf("checkpoint of %s: %v", l.LineageID, err)
	}
	if l.RootHash == nil || cp.Size != l.TreeSize || evidence.HashString(cp.Hash) != *l.RootHash {
		t.Fatalf("lineage tree %d/%v differs from its checkpoint %d/%x", l.TreeSize, l.RootHash, cp.Size, cp.Hash)
	}
	recs := l.Records
	if len(recs) == 0 {
		recs = []LineageRecord{{LedgerIndex: *l.LedgerIndex, LeafHash: l.LeafHash, MerklePath: l.MerklePath}}
	}
	for _, r := range recs {
		leaf, err := evidence.ParseHash(r.LeafHash)
		if err != nil {
			t.Fatal(err)
		}
		p, err := evidence.DecodeProof(r.MerklePath)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, r.LedgerIndex, cp.Size, leaf, p, cp.Hash); err != nil {
			t.Fatalf("inclusion of %s #%d: %v", l.LineageID, r.LedgerIndex, err)
		}
	}
}

func TestEveryRecordIsProvable(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	var events, decisions []string
	for i := range 7 {
		events = append(events, e.event("acme", "s-1", i))
	}
	decisions = append(decisions, e.decision("acme", "s-1", "sha256:aa"), e.decision("acme", "s-2", "sha256:bb"))
	events = append(events, e.event("acme", "s-2", 99))
	r.waitSize(t, "acme", 10)

	cases := []struct {
		name, id string
		records  int
	}{
		{"first event", events[0], 1},
		{"last event", events[len(events)-1], 1},
		{"decision", decisions[0], 1},
		{"session of 8 records", "s-1", 8},
		{"session of 2 records", "s-2", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			l, err := r.svc.Lineage(testCtx(t), "acme", tc.id)
			if err != nil {
				t.Fatal(err)
			}
			checkLineage(t, r.svc, "acme", l)
			if n := max(1, len(l.Records)); n != tc.records {
				t.Fatalf("%d records proven, want %d", n, tc.records)
			}
		})
	}
	for i := range events {
		l, err := r.svc.Lineage(testCtx(t), "acme", events[i])
		if err != nil {
			t.Fatal(err)
		}
		checkLineage(t, r.svc, "acme", l)
	}
	// The id index (records this process committed) answers exactly what
	// the ClickHouse lookup answers, and that lookup refills the index.
	kindOf := func(id string) string {
		if slices.Contains(decisions, id) {
			return evidence.KindDecision
		}
		return evidence.KindEvent
	}
	all := append(slices.Clone(events), decisions...)
	for _, id := range all {
		if _, ok := r.svc.ids.get("acme", kindOf(id)+":"+id); !ok {
			t.Fatalf("%s committed but not in the id index", id)
		}
	}
	fast := map[string]Lineage{}
	for _, id := range all {
		l, err := r.svc.Lineage(testCtx(t), "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		fast[id] = l
	}
	for _, id := range all {
		kind := kindOf(id)
		r.svc.ids.reset()
		slow, err := r.svc.Lineage(testCtx(t), "acme", id)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(fast[id], slow) {
			t.Fatalf("lineage of %s from the index %+v, from ClickHouse %+v", id, fast[id], slow)
		}
		if _, ok := r.svc.ids.get("acme", kind+":"+id); !ok {
			t.Fatalf("the lookup of %s did not refill the id index", id)
		}
		if _, ok := r.svc.ids.get("beta", kind+":"+id); ok {
			t.Fatalf("%s is indexed for another tenant", id)
		}
	}
}

// What a crashed ledger held comes back within seconds: every source
// consumer has the short AckWait the running ledger keeps its messages
// alive against (natsx.Held), not the minute it used to wait.
func TestSourceConsumersRedeliverQuickly(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	e.event("acme", "s-1", 1)
	r.waitSize(t, "acme", 1)
	ctx := testCtx(t)
	for _, src := range sources {
		testkit.Eventually(t, src.durable+" created", func() (bool, string) {
			c, err := e.nats.JS.Consumer(ctx, src.stream, src.durable)
			if err != nil {
				return false, err.Error()
			}
			if got := c.CachedInfo().Config.AckWait; got != chx.AckWait {
				t.Fatalf("%s AckWait %s, want %s", src.durable, got, chx.AckWait)
			}
			return true, ""
		})
	}
}

func TestRedeliveryAppendsOnce(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	id := e.event("acme", "s-1", 1)
	e.event("acme", "s-1", 2)
	r.waitSize(t, "acme", 2)
	// The same event again after JetStream's dedupe window (a new stream
	// message with the same eventId), in a later batch.
	e.eventWithID("acme", "s-1", id, 1)
	e.event("acme", "s-1", 3)
	r.waitSize(t, "acme", 3)
	// The same event twice within one batch.
	dup := uuid.NewString()
	e.eventWithID("acme", "s-1", dup, 4)
	e.eventWithID("acme", "s-1", dup, 4)
	r.waitSize(t, "acme", 4)

	// Every source message delivered again from the start, to a ledger
	// restarted on the same state: nothing is appended twice.
	r.stop()
	ctx := testCtx(t)
	for _, src := range sources {
		if err := e.nats.JS.DeleteConsumer(ctx, src.stream, src.durable); err != nil {
			t.Fatal(err)
		}
	}
	r2 := e.start()
	e.event("acme", "s-1", 5)
	r2.waitSize(t, "acme", 5)
	// The ledger acks a message only once its checkpoint is committed, so
	// once every source consumer is settled the log is final.
	testkit.Eventually(t, "every redelivered message settled", func() (bool, string) {
		for _, src := range sources {
			c, err := e.nats.JS.Consumer(ctx, src.stream, src.durable)
			if err != nil {
				return false, err.Error()
			}
			i, err := c.Info(ctx)
			if err != nil || i.NumPending+uint64(i.NumAckPending) > 0 {
				return false, fmt.Sprintf("%s: %+v %v", src.durable, i, err)
			}
		}
		return true, ""
	})
	if cp, err := r2.svc.LatestCheckpoint(ctx, "acme"); err != nil || cp.TreeSize != 5 {
		t.Fatalf("size %d (%v) after every message was redelivered, want 5", cp.TreeSize, err)
	}
}

// A record that cannot be sealed (not an event) is terminated, and the
// records of its batch around it are sealed, each once.
func TestUnsealableRecordIsTerminated(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t)
	// On the stream before the ledger starts, so they share a batch.
	e.event("acme", "s-1", 1)
	if _, err := e.nats.JS.Publish(ctx, streams.EventReceivedSubject("acme", "agent-1"), []byte("not json")); err != nil {
		t.Fatal(err)
	}
	e.event("acme", "s-1", 2)
	r := e.start()
	r.waitSize(t, "acme", 2)
	e.event("acme", "s-1", 3)
	r.waitSize(t, "acme", 3)
	testkit.Eventually(t, "every message settled", func() (bool, string) {
		c, err := e.nats.JS.Consumer(ctx, streams.Ingest, "ledger-ingest")
		if err != nil {
			return false, err.Error()
		}
		i, err := c.Info(ctx)
		if err != nil || i.NumPending+uint64(i.NumAckPending)+uint64(i.NumRedelivered) > 0 {
			return false, fmt.Sprintf("%+v %v", i, err)
		}
		return true, ""
	})
	if cp, err := r.svc.LatestCheckpoint(ctx, "acme"); err != nil || cp.TreeSize != 3 {
		t.Fatalf("size %d (%v), want 3", cp.TreeSize, err)
	}
}

func TestConsistencyAcrossRestart(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	for i := range 300 {
		e.event("acme", "s-1", i)
	}
	before := r.waitSize(t, "acme", 300)
	r.stop()

	r2 := e.start()
	for i := range 50 {
		e.event("acme", "s-2", i)
	}
	after := r2.waitSize(t, "acme", 350)
	for _, cp := range []Checkpoint{before, after} {
		if _, err := evidence.OpenCheckpoint([]byte(cp.Checkpoint), r2.svc.Origin("acme"), r2.svc.VerifierKey()); err != nil {
			t.Fatalf("checkpoint at %d: %v", cp.TreeSize, err)
		}
	}
	// The latest checkpoint is also the last message on the tenant's
	// LEDGER subject.
	ls, err := e.nats.JS.Stream(testCtx(t), streams.Ledger)
	if err != nil {
		t.Fatal(err)
	}
	last, err := ls.GetLastMsgForSubject(testCtx(t), streams.CheckpointSubject("acme"))
	if err != nil {
		t.Fatal(err)
	}
	var published CheckpointMsg
	if err := json.Unmarshal(last.Data, &published); err != nil {
		t.Fatal(err)
	}
	if published.TreeSize != after.TreeSize || published.Checkpoint != after.Checkpoint || published.RootHash != after.RootHash {
		t.Fatalf("LEDGER has %+v, want the checkpoint at %d", published, after.TreeSize)
	}
	c, err := r2.svc.ConsistencyProof(testCtx(t), "acme", before.TreeSize, 0)
	if err != nil {
		t.Fatal(err)
	}
	if c.FromCheckpoint != before.Checkpoint || c.ToCheckpoint != after.Checkpoint {
		t.Fatal("consistency answer does not carry both signed checkpoints")
	}
	p, err := evidence.DecodeProof(c.Proof)
	if err != nil {
		t.Fatal(err)
	}
	r1, _ := evidence.ParseHash(before.RootHash)
	r2h, _ := evidence.ParseHash(after.RootHash)
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, before.TreeSize, after.TreeSize, p, r1, r2h); err != nil {
		t.Fatalf("log did not extend its pre-restart checkpoint: %v", err)
	}
	// A forged older root fails.
	forged := bytes.Clone(r1)
	forged[0] ^= 1
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, before.TreeSize, after.TreeSize, p, forged, r2h); err == nil {
		t.Fatal("consistency proof accepted a forged root")
	}
}

func TestTenantLogsAreSeparate(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	a := e.event("acme", "s-1", 1)
	e.event("acme", "s-1", 2)
	b := e.event("beta", "s-1", 1)
	ca, cb := r.waitSize(t, "acme", 2), r.waitSize(t, "beta", 1)
	if ca.Origin == cb.Origin || ca.RootHash == cb.RootHash {
		t.Fatalf("tenants share a log: %+v %+v", ca, cb)
	}
	for _, tc := range []struct{ tenant, id string }{{"beta", a}, {"acme", b}, {"acme", "no-such-id"}} {
		if _, err := r.svc.Lineage(testCtx(t), tc.tenant, tc.id); err == nil {
			t.Errorf("tenant %s sees %s", tc.tenant, tc.id)
		}
	}
	bundle, err := r.svc.Evidence(testCtx(t), "beta", "s-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(bundle.Records) != 1 || bundle.Records[0].ID != b {
		t.Fatalf("beta's session s-1 bundle holds %d records", len(bundle.Records))
	}
}

// TestMetricsCarryNoTenantIDs: by default no metric names a tenant;
// TenantMetrics opts in to the per-tenant tree size.
func TestMetricsCarryNoTenantIDs(t *testing.T) {
	for _, tc := range []struct {
		name       string
		optIn      bool
		wantTenant bool
	}{{"default", false, false}, {"opted in", true, true}} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t)
			r := e.start(func(c *Config) { c.TenantMetrics = tc.optIn })
			e.event("tenant-xyzzy", "s-1", 1)
			r.waitSize(t, "tenant-xyzzy", 1)
			fams, err := r.reg.Gather()
			if err != nil {
				t.Fatal(err)
			}
			seen := false
			for _, f := range fams {
				for _, m := range f.GetMetric() {
					for _, l := range m.GetLabel() {
						seen = seen || l.GetValue() == "tenant-xyzzy"
					}
				}
			}
			if seen != tc.wantTenant {
				t.Fatalf("a metric names the tenant: %v, want %v", seen, tc.wantTenant)
			}
			// What the checkpoint-age alert (deploy/observability) reads.
			if at := testutil.ToFloat64(r.svc.lastCheckpoint); at < float64(time.Now().Add(-time.Minute).Unix()) {
				t.Errorf("vigil_ledger_last_checkpoint_timestamp_seconds = %v after a checkpoint", at)
			}
			if n := testutil.CollectAndCount(r.reg, "vigil_consumer_pending_messages"); n < 2 {
				t.Errorf("%d vigil_consumer_pending_messages series, want one per source consumer", n)
			}
		})
	}
}

// httpEnv serves the ledger routes with real API keys.
func (e *env) http(r *running) (*httptest.Server, map[string]string) {
	e.t.Helper()
	ctx := testCtx(e.t)
	store := control.NewStore(e.nats.JS)
	cat := control.NewCatalog(e.nats.JS, slog.New(slog.DiscardHandler))
	cctx, cancel := context.WithCancel(context.Background())
	e.t.Cleanup(cancel)
	if err := cat.Run(cctx); err != nil {
		e.t.Fatal(err)
	}
	keys := map[string]string{}
	for _, k := range []struct {
		name, tenant string
		role         auth.Role
	}{{"acme-viewer", "acme", auth.RoleViewer}, {"beta-owner", "beta", auth.RoleOwner}, {"acme-agent", "acme", auth.RoleAgent}} {
		_, tok, err := store.CreateKey(ctx, k.tenant, k.role, k.name, "test")
		if err != nil {
			e.t.Fatal(err)
		}
		keys[k.name] = tok
	}
	if err := cat.Sync(ctx); err != nil {
		e.t.Fatal(err)
	}
	ec, err := httpkit.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	r.svc.Routes(ec, cat)
	srv := httptest.NewServer(ec)
	e.t.Cleanup(srv.Close)
	return srv, keys
}

func get(t *testing.T, url, key string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var buf bytes.Buffer
	_, _ = buf.ReadFrom(res.Body)
	if out != nil {
		if err := json.Unmarshal(buf.Bytes(), out); err != nil {
			t.Fatalf("GET %s: %d %s: %v", url, res.StatusCode, buf.String(), err)
		}
	}
	return res.StatusCode
}

func TestHTTP(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	srv, keys := e.http(r)
	ev := e.event("acme", "s-1", 1)
	e.decision("acme", "s-1", "sha256:aa")
	// The two acme API keys created above are control changes: sealed
	// too, next to the event and the decision.
	cpNow := r.waitSize(t, "acme", 4)
	r.waitSize(t, "beta", 1)

	type envelope struct {
		Code  string `json:"code"`
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	cases := []struct {
		name, path, key string
		status          int
		code            string
	}{
		{"checkpoint", "/v1/ledger/checkpoint", keys["acme-viewer"], 200, ""},
		{"key", "/v1/ledger/key", keys["acme-viewer"], 200, ""},
		{"lineage", "/v1/lineage/" + ev + "/verify", keys["acme-viewer"], 200, ""},
		{"session lineage", "/v1/lineage/s-1/verify", keys["acme-viewer"], 200, ""},
		{"evidence", "/v1/sessions/s-1/evidence", keys["acme-viewer"], 200, ""},
		{"consistency", fmt.Sprintf("/v1/ledger/consistency?from=1&to=%d", cpNow.TreeSize), keys["acme-viewer"], 200, ""},
		{"no key", "/v1/ledger/checkpoint", "", 401, "unauthorized"},
		{"agent role", "/v1/ledger/checkpoint", keys["acme-agent"], 403, "forbidden"},
		{"other tenant's event", "/v1/lineage/" + ev + "/verify", keys["beta-owner"], 404, "not_found"},
		{"other tenant's session", "/v1/sessions/s-1/evidence", keys["beta-owner"], 404, "not_found"},
		{"unknown id", "/v1/lineage/nope/verify", keys["acme-viewer"], 404, "not_found"},
		{"consistency missing from", "/v1/ledger/consistency", keys["acme-viewer"], 400, ""},
		{"consistency bad number", "/v1/ledger/consistency?from=x", keys["acme-viewer"], 400, ""},
		{"consistency beyond log", "/v1/ledger/consistency?from=1&to=99999", keys["acme-viewer"], 400, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var env envelope
			if got := get(t, srv.URL+tc.path, tc.key, &env); got != tc.status {
				t.Fatalf("status %d, want %d", got, tc.status)
			}
			if tc.status >= 400 && (env.Code == "" || env.Error.Code == "") {
				t.Fatalf("error not in the envelope: %+v", env)
			}
			if tc.code != "" && env.Code != tc.code {
				t.Fatalf("code %q, want %q", env.Code, tc.code)
			}
		})
	}
	var l Lineage
	get(t, srv.URL+"/v1/lineage/"+ev+"/verify", keys["acme-viewer"], &l)
	checkLineage(t, r.svc, "acme", l)
	var b evidence.Bundle
	get(t, srv.URL+"/v1/sessions/s-1/evidence", keys["acme-viewer"], &b)
	if rep := evidence.Verify(b, r.svc.VerifierKey()); !rep.OK() || rep.Records != 2 {
		t.Fatalf("bundle over HTTP: %+v", rep)
	}
}

// An id the projections know but the log has not integrated yet is
// anchored:false, not an error; an id nobody knows is not found.
func TestUnanchoredIDs(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	ctx := testCtx(t)
	// The events projection, with only the columns the ledger reads.
	events := readmodel.Table{Name: "events", Owner: readmodel.Ingest, Columns: []string{"tenant_id", "event_id", "session_id", "payload"}}
	if err := e.db.Conn.Exec(ctx, "CREATE TABLE events (tenant_id String, event_id String, session_id String, payload String) ENGINE = MergeTree ORDER BY (tenant_id, session_id, event_id)"); err != nil {
		t.Fatal(err)
	}
	// A span of a trace inside a conversation: known by its trace id.
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	if err := (store{ch: e.db.Conn}).insert(ctx, events, [][]any{{"acme", "ev-pending", "s-pending", "{}"},
		{"acme", "ev-span", "conv-1", `{"source":"otlp","traceId":"` + trace + `"}`}}); err != nil {
		t.Fatal(err)
	}
	e.event("acme", "s-1", 1)
	r.waitSize(t, "acme", 1)
	cases := []struct {
		tenant, id string
		found      bool
	}{
		{"acme", "ev-pending", true},
		{"acme", "s-pending", true},
		{"beta", "ev-pending", false},
		{"acme", "ev-unknown", false},
		{"acme", trace, true},
		{"beta", trace, false},
		{"acme", "5bf92f3577b34da6a3ce929d0e0e4736", false},
	}
	for _, tc := range cases {
		l, err := r.svc.Lineage(ctx, tc.tenant, tc.id)
		if !tc.found {
			if err == nil {
				t.Errorf("%s/%s: found %+v", tc.tenant, tc.id, l)
			}
			continue
		}
		if err != nil || l.Anchored || l.LedgerIndex != nil || len(l.MerklePath) != 0 {
			t.Errorf("%s/%s: %+v, %v; want anchored:false", tc.tenant, tc.id, l, err)
		}
		// KLA's shape: the proof fields are present, as null.
		if b, _ := json.Marshal(l); !bytes.Contains(b, []byte(`"ledgerIndex":null`)) || !bytes.Contains(b, []byte(`"rootHash":null`)) {
			t.Errorf("%s/%s: %s; want ledgerIndex and rootHash null", tc.tenant, tc.id, b)
		}
	}
	// A session the projections know with nothing sealed yet: an empty
	// bundle, which verifies and commits to zero records.
	b, err := r.svc.Evidence(ctx, "acme", "s-pending")
	if err != nil {
		t.Fatal(err)
	}
	if rep := evidence.Verify(b, r.svc.VerifierKey()); !rep.OK() || b.RecordCount != 0 {
		t.Fatalf("empty bundle: %+v", rep)
	}
}

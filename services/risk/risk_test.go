package risk_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/readmodel"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/testkit"
	"github.com/vigilhq/vigil/services/risk"
)

// t0 is the scripted history's start. Everything is in event time, so the
// tests do not depend on the clock.
var t0 = time.Date(2026, 11, 20, 10, 0, 0, 0, time.UTC)

type env struct {
	t       *testing.T
	nats    *natstest.Env
	ch      *chtest.DB
	cat     *control.Catalog
	store   *control.Store
	tokens  map[string]string // "acme", "globex", "viewer" → key
	log     *slog.Logger
	nextSeq int
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	n := natstest.Start(t)
	if err := natsx.EnsureStreams(ctx, n.JS, streams.ControlConfig(streams.DefaultOptions), streams.PolicyConfig(streams.DefaultOptions)); err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	// The decisions table belongs to the policy service, which migrates
	// it; the risk verdict projection and the actions view write and read
	// it.
	if _, err := chx.Migrate(ctx, db.Conn, os.DirFS("../policy/migrations"), readmodel.Policy); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	cat := control.NewCatalog(n.JS, log)
	cctx, cancel := context.WithCancel(ctx)
	t.Cleanup(cancel)
	if err := cat.Run(cctx); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, nats: n, ch: db, cat: cat, store: control.NewStore(n.JS), tokens: map[string]string{}, log: log}
	for name, k := range map[string]struct {
		tenant string
		role   auth.Role
	}{"acme": {"acme", auth.RoleOwner}, "globex": {"globex", auth.RoleOwner}, "viewer": {"acme", auth.RoleViewer}} {
		_, tok, err := e.store.CreateKey(ctx, k.tenant, k.role, name, "test")
		if err != nil {
			t.Fatal(err)
		}
		e.tokens[name] = tok
	}
	for _, a := range []struct{ tenant, id string }{{"acme", "bot"}, {"acme", "decl"}, {"globex", "other"}} {
		if _, err := e.store.PutAgent(ctx, agent.Change{Op: agent.OpDiscovered, Tenant: a.tenant, Agent: agent.Discovered(a.id, t0), At: t0}, 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := cat.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	return e
}

// instance is one running risk service with its own HTTP server.
type instance struct {
	svc  *risk.Service
	url  string
	stop func()
	reg  *prometheus.Registry
}

func testConfig(partitions int) risk.Config {
	cfg := risk.DefaultConfig()
	cfg.Partitions = partitions
	cfg.LeaseTTL = 1500 * time.Millisecond
	cfg.Baseline.Warmup = 5
	cfg.Baseline.BurstCount = 3
	cfg.Baseline.SpikeMin = 10
	return cfg
}

func (e *env) start(cfg risk.Config) *instance {
	e.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	svc, err := risk.New(cfg, risk.Deps{NC: e.nats.Conn, JS: e.nats.JS, CH: e.ch.Conn, Catalog: e.cat, Log: e.log, Registerer: reg})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := svc.Migrate(ctx); err != nil {
		e.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	ech, err := httpkit.NewServer(e.log, prometheus.NewRegistry())
	if err != nil {
		e.t.Fatal(err)
	}
	svc.Routes(ech)
	srv := httptest.NewServer(ech)
	var once bool
	stop := func() {
		if once {
			return
		}
		once = true
		srv.Close()
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("risk Run: %v", err)
		}
	}
	e.t.Cleanup(stop)
	return &instance{svc: svc, url: srv.URL, stop: stop, reg: reg}
}

// waitOwned waits until the instances together own every partition, each
// at least min of them.
func (e *env) waitOwned(n, minEach int, insts ...*instance) {
	e.t.Helper()
	testkit.Eventually(e.t, "partitions owned", func() bool {
		total := 0
		for _, in := range insts {
			o := len(in.svc.Owned())
			if o < minEach {
				return false
			}
			total += o
		}
		return total == n
	})
}

// step is one scripted action.
type step struct {
	agent, session   string
	at               time.Duration
	kind, tool, host string
	publisher        string
	status           int
	outcome          rules.Outcome
	reason           string
	declared         bool
	dTools, dDests   []string
	tenant           string
	// form is the subject form the decision is recorded in: 0 the
	// current one, 6 the one before the shard (<tenant>.<agent>.<outcome>),
	// 5 the one before the outcome (<tenant>.<agent>).
	form int
}

func (e *env) publish(steps ...step) {
	e.t.Helper()
	ctx := context.Background()
	for _, s := range steps {
		e.nextSeq++
		tenant := s.tenant
		if tenant == "" {
			tenant = "acme"
		}
		reason := s.reason
		if reason == "" {
			reason = rules.ReasonDefaultAllow
		}
		rec := rules.DecisionRecord{
			ID: fmt.Sprintf("dec_%06d", e.nextSeq), Tenant: tenant, AgentID: s.agent, SessionID: s.session, Source: rules.SourceEvent,
			Input: rules.Input{Tenant: tenant,
				Agent:   rules.AgentState{ID: s.agent, Declared: s.declared, Tools: s.dTools, Destinations: s.dDests},
				Action:  rules.Action{Kind: s.kind, Tool: s.tool, Target: s.host, Publisher: s.publisher},
				Context: map[string]any{}},
			Decision:  rules.Decision{Outcome: s.outcome, ReasonCodes: []string{reason}},
			Signature: "sig_x", At: t0.Add(s.at),
		}
		if s.status != 0 {
			rec.Input.Context["responseStatus"] = s.status
		}
		data, _ := json.Marshal(rec)
		subj := streams.DecisionSubject(tenant, s.agent, s.outcome.String())
		for range max(0, 7-s.form) % 7 {
			subj = subj[:strings.LastIndexByte(subj, '.')]
		}
		if _, err := e.nats.JS.Publish(ctx, subj, data); err != nil {
			e.t.Fatal(err)
		}
	}
}

// history is the scripted agent: five normal searches (the warm-up),
// then a new tool, destination and publisher, a new kind, three failures
// within a minute and one blocked action.
func history() []step {
	var h []step
	for i := 0; i < 5; i++ {
		h = append(h, step{agent: "bot", session: "s1", at: time.Duration(i) * time.Minute, kind: "tool_call", tool: "search", host: "api.search.com", publisher: "acme-search"})
	}
	h = append(h,
		step{agent: "bot", session: "s1", at: 6 * time.Minute, kind: "tool_call", tool: "refund", host: "https://api.stripe.com/v1/refunds", publisher: "stripe"},
		step{agent: "bot", session: "s1", at: 7 * time.Minute, kind: "file"},
		step{agent: "bot", session: "s1", at: 8 * time.Minute, kind: "tool_call", tool: "search", host: "api.search.com", publisher: "acme-search", status: 500},
		step{agent: "bot", session: "s1", at: 8*time.Minute + 10*time.Second, kind: "tool_call", tool: "search", host: "api.search.com", publisher: "acme-search", status: 502},
		step{agent: "bot", session: "s1", at: 8*time.Minute + 20*time.Second, kind: "tool_call", tool: "search", host: "api.search.com", publisher: "acme-search", status: 503},
		step{agent: "bot", session: "s1", at: 9 * time.Minute, kind: "tool_call", tool: "search", host: "api.search.com", publisher: "acme-search", outcome: rules.Block, reason: "ORG_BLOCKLIST_TOOL"},
	)
	return h
}

func (e *env) get(url, who string, v any) int {
	e.t.Helper()
	return e.do(http.MethodGet, url, who, v)
}

func (e *env) do(method, url, who string, v any) int {
	e.t.Helper()
	req, _ := http.NewRequest(method, url, nil)
	if who != "" {
		req.Header.Set("Authorization", "Bearer "+e.tokens[who])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 400 {
		var env struct {
			Code  string `json:"code"`
			Error struct {
				Code string `json:"code"`
			} `json:"error"`
		}
		if json.Unmarshal(body, &env) != nil || env.Code == "" || env.Error.Code == "" {
			e.t.Fatalf("%s %s: %d without the error envelope: %s", method, url, resp.StatusCode, body)
		}
		return resp.StatusCode
	}
	if v != nil {
		if err := json.Unmarshal(body, v); err != nil {
			e.t.Fatalf("%s %s: %v: %s", method, url, err, body)
		}
	}
	return resp.StatusCode
}

// anomalies reads every anomaly on RISK as "type:value" sorted, with
// their ids.
func (e *env) anomalies() (kinds []string, ids []string) {
	e.t.Helper()
	ctx := context.Background()
	oc, err := e.nats.JS.OrderedConsumer(ctx, streams.Risk, jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.AllAnomalies}})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		b, err := oc.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		n := 0
		for m := range b.Messages() {
			n++
			var a risk.Anomaly
			if err := json.Unmarshal(m.Data(), &a); err != nil {
				e.t.Fatal(err)
			}
			for _, f := range []string{a.ID, a.Tenant, a.AgentID, a.SessionID, a.Severity, a.Summary} {
				if f == "" {
					e.t.Fatalf("anomaly lacks a field the notifier needs: %s", m.Data())
				}
			}
			kinds = append(kinds, a.AgentID+"/"+a.Type+":"+a.Value)
			ids = append(ids, a.ID)
		}
		if n == 0 {
			break
		}
	}
	sort.Strings(kinds)
	sort.Strings(ids)
	return kinds, ids
}

func (e *env) risk(in *instance, session, who string) (risk.SessionRisk, int) {
	var r risk.SessionRisk
	code := e.get(in.url+"/v1/sessions/"+session+"/risk", who, &r)
	return r, code
}

func (e *env) profiles(in *instance, who string) map[string]risk.AgentProfile {
	var page struct {
		Data []risk.AgentProfile `json:"data"`
	}
	if code := e.get(in.url+"/v1/agents/profiles", who, &page); code != 200 {
		e.t.Fatalf("profiles: %d", code)
	}
	out := map[string]risk.AgentProfile{}
	for _, p := range page.Data {
		out[p.AgentID] = p
	}
	return out
}

func TestScriptedHistory(t *testing.T) {
	e := newEnv(t)
	in := e.start(testConfig(1))
	e.waitOwned(1, 1, in)
	e.publish(history()...)

	want := []string{"bot/error_burst:", "bot/new_destination:api.stripe.com", "bot/new_kind:file", "bot/new_publisher:stripe", "bot/new_tool:refund"}
	testkit.Eventually(t, "the score of the last record", func() bool {
		r, code := e.risk(in, "s1", "acme")
		return code == 200 && r.DecisionID == "dec_000011"
	})
	got, _ := e.anomalies()
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("anomalies:\n got %v\nwant %v", got, want)
	}

	r, _ := e.risk(in, "s1", "acme")
	// policy 25 (one block) + behavior min(40, 10+20+5+10+20) + reliability 3×4.
	if r.Score != 77 || r.Severity != "critical" || r.RiskLevel != "critical" || r.Actions != 11 {
		t.Fatalf("score %d %s (%s), %d actions; want 77 critical over 11", r.Score, r.Severity, r.RiskLevel, r.Actions)
	}
	dims := map[string]int{}
	for _, d := range r.Dimensions {
		dims[d.Name] = d.Score
	}
	if dims["policy"] != 25 || dims["behavior"] != 40 || dims["reliability"] != 12 {
		t.Fatalf("dimensions %+v", r.Dimensions)
	}
	factors := map[string]string{}
	for _, f := range r.Factors {
		factors[f.Code] = fmt.Sprintf("%d×%d=%d %v", f.Count, f.Weight, f.Points, len(f.Records))
	}
	for code, want := range map[string]string{
		"blocked_actions": "1×25=25 1", "failed_actions": "3×4=12 3", "new_destination": "1×20=20 1",
		"error_burst": "1×20=20 1", "new_kind": "1×10=10 1", "new_tool": "1×10=10 1", "new_publisher": "1×5=5 1",
	} {
		if factors[code] != want {
			t.Errorf("factor %s = %q, want %q", code, factors[code], want)
		}
	}
	if len(r.Recommendations) == 0 || r.Formula != "risk-v1" || r.OccurredAt != t0.Add(9*time.Minute) {
		t.Fatalf("recommendations %v formula %q occurredAt %v", r.Recommendations, r.Formula, r.OccurredAt)
	}

	p := e.profiles(in, "acme")["bot"]
	if p.Observations != 11 || !p.Warm || p.ObservationDepth != "shallow" || p.Activity.Errors != 3 || p.Activity.Blocks != 1 {
		t.Fatalf("profile %+v", p)
	}
	if len(p.Baseline.Tools) != 2 || p.Baseline.Tools[0].Value != "search" || p.Baseline.Tools[0].Count != 9 || len(p.Baseline.Destinations) != 2 {
		t.Fatalf("baseline %+v", p.Baseline)
	}
	if _, ok := e.profiles(in, "acme")["decl"]; !ok {
		t.Fatal("a registered agent without observations is missing from profiles")
	}

	// Anomalies are verdicts with source baseline, in the policy
	// service's decisions table; and metrics count them.
	testkit.Eventually(t, "anomaly verdicts in ClickHouse", func() bool {
		var n uint64
		row := e.ch.Conn.QueryRow(context.Background(), "SELECT count() FROM decisions WHERE tenant_id = 'acme' AND source = 'baseline'")
		return row.Scan(&n) == nil && n == 5
	})
	var ts risk.Timeseries
	testkit.Eventually(t, "anomalies in the daily metrics", func() bool {
		code := e.get(in.url+"/v1/metrics/timeseries?interval=day&days=3&to=2026-11-21T00:00:00Z", "acme", &ts)
		return code == 200 && len(ts.Data) == 3 && ts.Data[1].Anomalies == 5
	})
	if ts.Data[1].Date != "2026-11-20" || ts.Data[0].Anomalies != 0 {
		t.Fatalf("timeseries %+v", ts)
	}
	// The views run one after the other within an insert: wait for the
	// hourly one too.
	var hourly risk.Timeseries
	testkit.Eventually(t, "anomalies in the hourly metrics", func() bool {
		code := e.get(in.url+"/v1/metrics/timeseries?interval=hour&hours=2&to=2026-11-20T10:59:00Z", "acme", &hourly)
		return code == 200 && len(hourly.Data) == 2 && hourly.Data[1].Anomalies == 5
	})
	if hourly.Data[0].Anomalies != 0 || hourly.Data[1].Date != "2026-11-20T10:00Z" {
		t.Fatalf("hourly %+v", hourly)
	}
}

func TestResetLearnAndFalsePositive(t *testing.T) {
	e := newEnv(t)
	in := e.start(testConfig(2))
	e.waitOwned(2, 2, in)
	decl := func(at time.Duration, tool string, tools ...string) step {
		return step{agent: "decl", session: "d1", at: at, kind: "tool_call", tool: tool, declared: true, dTools: tools}
	}
	e.publish(decl(0, "search", "search"), decl(time.Minute, "export", "search"))
	testkit.Eventually(t, "two observations", func() bool { return e.profiles(in, "acme")["decl"].Observations == 2 })
	got, _ := e.anomalies()
	if strings.Join(got, ",") != "decl/undeclared_tool:export" {
		t.Fatalf("anomalies %v", got)
	}

	// Reset forgets the baseline at once and re-arms declaration checks.
	var rr risk.ResetResult
	if code := e.do(http.MethodPost, in.url+"/v1/agents/decl/reset", "acme", &rr); code != 200 || !rr.Reset {
		t.Fatalf("reset: %d %+v", code, rr)
	}
	if p := e.profiles(in, "acme")["decl"]; p.Observations != 0 || p.Resets != 1 || len(p.Baseline.Tools) != 0 {
		t.Fatalf("profile after reset %+v", p)
	}
	// Learn: the declaration now includes export (what the api's learn
	// writes to CONTROL, and policy then records on each decision), so
	// export is no longer flagged; delete still is.
	e.publish(decl(2*time.Minute, "export", "search", "export"), decl(3*time.Minute, "delete", "search", "export"))
	testkit.Eventually(t, "two observations after reset", func() bool { return e.profiles(in, "acme")["decl"].Observations == 2 })
	got, ids := e.anomalies()
	if strings.Join(got, ",") != "decl/undeclared_tool:delete,decl/undeclared_tool:export" {
		t.Fatalf("anomalies %v", got)
	}

	// A false positive is not raised again for the same signature, even
	// after a reset re-arms it.
	var fp risk.Anomaly
	readAnomaly(t, e, ids, "delete", &fp)
	if _, err := e.store.PutTriage(context.Background(), rules.Triage{Tenant: "acme", DecisionID: fp.ID, Status: rules.TriageFalsePositive, Signature: fp.Signature, At: t0}); err != nil {
		t.Fatal(err)
	}
	if err := e.cat.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := e.do(http.MethodPost, in.url+"/v1/agents/decl/reset", "acme", nil); code != 200 {
		t.Fatal(code)
	}
	e.publish(decl(4*time.Minute, "delete", "search", "export"), decl(5*time.Minute, "wipe", "search", "export"))
	testkit.Eventually(t, "two observations after the second reset", func() bool { return e.profiles(in, "acme")["decl"].Observations == 2 })
	got, _ = e.anomalies()
	if strings.Join(got, ",") != "decl/undeclared_tool:delete,decl/undeclared_tool:export,decl/undeclared_tool:wipe" {
		t.Fatalf("anomalies %v", got)
	}
	var review risk.Timeseries
	testkit.Eventually(t, "the review in the metrics", func() bool {
		return e.get(in.url+"/v1/metrics/timeseries?interval=day&days=1&to=2026-11-20T12:00:00Z", "acme", &review) == 200 && review.Data[0].Reviews == 1
	})
}

func readAnomaly(t *testing.T, e *env, ids []string, value string, out *risk.Anomaly) {
	t.Helper()
	st, err := e.nats.JS.Stream(context.Background(), streams.Risk)
	if err != nil {
		t.Fatal(err)
	}
	m, err := st.GetLastMsgForSubject(context.Background(), streams.AnomalySubject("acme", "decl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(m.Data, out); err != nil || out.Value != value {
		t.Fatalf("last anomaly %s (%v), want %s", m.Data, err, value)
	}
}

// manyAgents spreads a history over agents in several partitions.
func manyAgents() []step {
	var h []step
	for _, a := range []string{"bot", "decl", "a1", "a2", "a3", "a4", "a5"} {
		for _, s := range history() {
			s.agent, s.session = a, a+"-s"
			h = append(h, s)
		}
	}
	return h
}

type snapshot struct {
	anomalies []string
	profiles  string
	scores    map[string]string
}

func (e *env) snapshot(in *instance, agents []string) snapshot {
	kinds, ids := e.anomalies()
	ps := e.profiles(in, "acme")
	var b strings.Builder
	for _, a := range agents {
		p := ps[a]
		p.Name, p.Status = "", ""
		j, _ := json.Marshal(p)
		b.Write(j)
	}
	sc := map[string]string{}
	for _, a := range agents {
		r, code := e.risk(in, a+"-s", "acme")
		r.ID = ""
		j, _ := json.Marshal(r)
		sc[a] = fmt.Sprint(code, string(j))
	}
	return snapshot{anomalies: append(kinds, ids...), profiles: b.String(), scores: sc}
}

func TestRestartAndTwoInstances(t *testing.T) {
	agents := []string{"bot", "decl", "a1", "a2", "a3", "a4", "a5"}
	settle := func(e *env, in *instance) {
		testkit.Eventually(t, "every agent's history processed", func() bool {
			ps := e.profiles(in, "acme")
			for _, a := range agents {
				if ps[a].Observations != 11 {
					return false
				}
			}
			return true
		})
	}

	// One instance, four partitions. RISK's duplicate window is short,
	// so that only the checkpoint can keep a rebuild from republishing.
	short := testConfig(4)
	short.Streams.DuplicateWindow = 200 * time.Millisecond
	one := newEnv(t)
	solo := one.start(short)
	one.waitOwned(4, 4, solo)
	one.publish(manyAgents()...)
	settle(one, solo)
	want := one.snapshot(solo, agents)
	if len(want.anomalies) != 2*5*len(agents) {
		t.Fatalf("want %d anomalies, got %v", 5*len(agents), want.anomalies)
	}

	// Restart: a new instance rebuilds the same baselines from the
	// streams and publishes nothing twice, although RISK no longer
	// remembers the ids (the duplicate window has passed).
	solo.stop()
	one.waitCheckpoints(4)
	one.waitIDsForgotten()
	again := one.start(short)
	one.waitOwned(4, 4, again)
	settle(one, again)
	if got := one.snapshot(again, agents); !equal(got, want) {
		t.Fatalf("after restart: %s", diff(got, want))
	}

	// Two instances on a fresh system share the partitions and give the
	// same answers as one.
	two := newEnv(t)
	a, b := two.start(testConfig(4)), two.start(testConfig(4))
	two.waitOwned(4, 2, a, b)
	two.publish(manyAgents()...)
	settle(two, a)
	for _, in := range []*instance{a, b} {
		if got := two.snapshot(in, agents); !equal(got, want) {
			t.Fatalf("two instances: %s", diff(got, want))
		}
	}

	// One of them stops: the other takes its partitions over, rebuilds
	// them and still gives the same answers.
	a.stop()
	two.waitOwned(4, 4, b)
	if got := two.snapshot(b, agents); !equal(got, want) {
		t.Fatalf("after failover: %s", diff(got, want))
	}
}

// waitIDsForgotten waits until RISK no longer remembers the message ids
// published so far: a probe id published now is accepted a second time
// (not acked as a duplicate) once the server's duplicate window has
// passed over it, and so over every earlier id. The probe is a session
// score of a tenant no assertion reads.
func (e *env) waitIDsForgotten() {
	e.t.Helper()
	ctx := context.Background()
	sc, err := json.Marshal(risk.SessionScore{ID: "probe", Tenant: "probe", AgentID: "probe", SessionID: "probe",
		Severity: "info", Summary: "duplicate-window probe", OccurredAt: time.Now()})
	if err != nil {
		e.t.Fatal(err)
	}
	subject := streams.SessionScoreSubject("probe", "probe")
	if _, err := e.nats.JS.Publish(ctx, subject, sc, jetstream.WithMsgID("probe")); err != nil {
		e.t.Fatal(err)
	}
	testkit.Eventually(e.t, "RISK forgets message ids", func() bool {
		ack, err := e.nats.JS.Publish(ctx, subject, sc, jetstream.WithMsgID("probe"))
		return err == nil && !ack.Duplicate
	})
}

// waitCheckpoints waits until every partition's checkpoint has reached
// the POLICY sequence of the last decision it owns.
func (e *env) waitCheckpoints(n int) {
	e.t.Helper()
	ctx := context.Background()
	// At the tail a partition is delivered its own decisions only, so its
	// checkpoint reaches the sequence of the last of them (or, reading
	// every decision, POLICY's last).
	last := make([]uint64, n)
	oc, err := e.nats.JS.OrderedConsumer(ctx, streams.Policy, jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.AllDecisions}})
	if err != nil {
		e.t.Fatal(err)
	}
	for {
		b, err := oc.FetchNoWait(1000)
		if err != nil {
			e.t.Fatal(err)
		}
		got := 0
		for m := range b.Messages() {
			got++
			tenant, tok, _, ok := streams.ParseDecisionSubject(m.Subject())
			agentID, err := streams.Untoken(tok)
			md, merr := m.Metadata()
			if !ok || err != nil || merr != nil {
				e.t.Fatalf("decision %q: %v %v", m.Subject(), err, merr)
			}
			last[risk.PartitionOf(tenant, agentID, n)] = md.Sequence.Stream
		}
		if got == 0 {
			break
		}
	}
	kv, err := e.nats.JS.KeyValue(ctx, risk.CheckpointBucket)
	if err != nil {
		e.t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if last[i] == 0 {
			continue
		}
		testkit.Eventually(e.t, "checkpoint", func() bool {
			en, err := kv.Get(ctx, fmt.Sprintf("p%d-of-%d", i, n))
			if err != nil {
				return false
			}
			at, err := strconv.ParseUint(string(en.Value()), 10, 64)
			return err == nil && at >= last[i]
		})
	}
}

// diff says briefly how two snapshots differ.
func diff(got, want snapshot) string {
	if g, w := strings.Join(got.anomalies, ","), strings.Join(want.anomalies, ","); g != w {
		return fmt.Sprintf("anomalies differ: %d records, want %d\n got %s\nwant %s", len(got.anomalies), len(want.anomalies), g, w)
	}
	if got.profiles != want.profiles {
		return fmt.Sprintf("profiles differ:\n got %s\nwant %s", got.profiles, want.profiles)
	}
	for k, v := range want.scores {
		if got.scores[k] != v {
			return fmt.Sprintf("score of %s differs:\n got %s\nwant %s", k, got.scores[k], v)
		}
	}
	return "scores differ in number"
}

func equal(a, b snapshot) bool {
	if strings.Join(a.anomalies, ",") != strings.Join(b.anomalies, ",") || a.profiles != b.profiles || len(a.scores) != len(b.scores) {
		return false
	}
	for k, v := range a.scores {
		if b.scores[k] != v {
			return false
		}
	}
	return true
}

func TestAuthTenantsAndBadInputs(t *testing.T) {
	e := newEnv(t)
	in := e.start(testConfig(1))
	e.waitOwned(1, 1, in)
	e.publish(history()...)
	testkit.Eventually(t, "the session scored", func() bool { _, code := e.risk(in, "s1", "acme"); return code == 200 })

	cases := []struct {
		name, method, path, who string
		want                    int
	}{
		{"no key", "GET", "/v1/sessions/s1/risk", "", 401},
		{"foreign tenant session", "GET", "/v1/sessions/s1/risk", "globex", 404},
		{"foreign tenant reset", "POST", "/v1/agents/bot/reset", "globex", 404},
		{"viewer cannot reset", "POST", "/v1/agents/bot/reset", "viewer", 403},
		{"viewer reads risk", "GET", "/v1/sessions/s1/risk", "viewer", 200},
		{"unknown session", "GET", "/v1/sessions/nope/risk", "acme", 404},
		{"bad session id", "GET", "/v1/sessions/%20bad/risk", "acme", 404},
		{"unknown agent reset", "POST", "/v1/agents/ghost/reset", "acme", 404},
		{"bad interval", "GET", "/v1/metrics/timeseries?interval=week", "acme", 400},
		{"days out of range", "GET", "/v1/metrics/timeseries?days=0", "acme", 400},
		{"hours not a number", "GET", "/v1/metrics/timeseries?interval=hour&hours=x", "acme", 400},
		{"bad to", "GET", "/v1/metrics/timeseries?to=yesterday", "acme", 400},
		{"bad agentId filter", "GET", "/v1/agents/profiles?agentId=%20x", "acme", 400},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := e.do(c.method, in.url+c.path, c.who, nil); got != c.want {
				t.Fatalf("%s %s as %q: %d, want %d", c.method, c.path, c.who, got, c.want)
			}
		})
	}
	if ps := e.profiles(in, "globex"); len(ps) != 1 || ps["other"].AgentID != "other" {
		t.Fatalf("globex sees %v", ps)
	}
}

func TestPausedAgentStillRecorded(t *testing.T) {
	e := newEnv(t)
	in := e.start(testConfig(1))
	e.waitOwned(1, 1, in)
	for i := 0; i < 4; i++ {
		e.publish(step{agent: "bot", session: "p1", at: time.Duration(i) * time.Second, kind: "tool_call", tool: "search",
			outcome: rules.Block, reason: rules.ReasonAgentPaused})
	}
	testkit.Eventually(t, "four observations", func() bool { return e.profiles(in, "acme")["bot"].Observations == 4 })
	p := e.profiles(in, "acme")["bot"]
	if p.Activity.Blocks != 0 {
		t.Fatalf("a paused agent's blocks counted as blocks: %+v", p.Activity)
	}
	if got, _ := e.anomalies(); len(got) != 0 {
		t.Fatalf("anomalies for a paused agent's blocks: %v", got)
	}
	r, code := e.risk(in, "p1", "acme")
	// Nothing changed after the first record, so the first score stands.
	if code != 200 || r.Score != 0 || r.Actions != 1 || r.Severity != "info" {
		t.Fatalf("paused session risk %d %+v", code, r)
	}
}

// TestSkipsDecisionsItDoesNotLearnFrom: a decision about no agent (a
// policy check that names none, recorded as the policy service records
// it) is passed over quietly, since baselines are per agent; a record on
// a decision subject that does not decode is an error, logged with its
// subject. Either way the partition goes on with the next decision.
func TestSkipsDecisionsItDoesNotLearnFrom(t *testing.T) {
	agentless, err := json.Marshal(rules.DecisionRecord{ID: "dec_agentless", Tenant: "acme", Source: rules.SourceCheck,
		Decision: rules.Decision{Outcome: rules.Allow, ReasonCodes: []string{rules.ReasonDefaultAllow}}, At: t0})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		subject   string
		data      []byte
		wantError bool
	}{
		// The policy service's subject for an agentless decision.
		{"agentless decision", "policy.v1.decision_recorded.acme." + streams.Token("~"), agentless, false},
		{"agentless decision, plain empty token", streams.DecisionSubject("acme", "", "allow"), agentless, false},
		{"not JSON", streams.DecisionSubject("acme", "bot", "allow"), []byte("{not json"), true},
		{"no tenant", streams.DecisionSubject("acme", "bot", "allow"), []byte(`{"id":"dec_x","agentId":"bot"}`), true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			var logs *testkit.Logs
			e.log, logs = testkit.Logger(t, slog.LevelInfo)
			in := e.start(testConfig(1))
			e.waitOwned(1, 1, in)
			if _, err := e.nats.JS.Publish(context.Background(), tt.subject, tt.data); err != nil {
				t.Fatal(err)
			}
			// One ordinary decision after it: once it is folded in, the
			// one before was handled.
			e.publish(step{agent: "bot", session: "s1", kind: "tool_call", tool: "search"})
			testkit.Eventually(t, "the next decision folded in", func() bool { return e.profiles(in, "acme")["bot"].Observations == 1 })
			logged := strings.Contains(logs.String(), "undecodable decision skipped")
			if logged != tt.wantError {
				t.Fatalf("logged as undecodable: %v, want %v; logs:\n%s", logged, tt.wantError, logs)
			}
			if tt.wantError && !strings.Contains(logs.String(), "subject="+tt.subject) {
				t.Fatalf("the error does not name the subject %s:\n%s", tt.subject, logs)
			}
		})
	}
}

// counter reads a counter or gauge of an instance's metrics.
func (in *instance) counter(t *testing.T, name string) float64 {
	t.Helper()
	mfs, err := in.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			if g := mf.GetMetric()[0].GetGauge(); g != nil {
				return g.GetValue()
			}
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// At the tail, the server delivers each partition the decisions of its
// shards only: with a partition count that divides the 16 shards, none of
// another partition's; with another count, those of the partitions
// sharing its shards. A rebuild reads every decision (reader.go), and
// decisions stored in the two older subject forms (no shard, no outcome)
// are still read by every partition, which passes over the others' as
// before. A reset recorded, by a version whose partitions read
// every decision, at another partition's decision applies before the
// next decision of its agent. A score read with a consistency token is
// answered by the session's partition although the tenant's newest
// decision is another partition's.
func TestPartitionsReadTheirShardsAndOlderForms(t *testing.T) {
	for _, n := range []int{4, 6} {
		t.Run(fmt.Sprint("partitions=", n), func(t *testing.T) {
			e := newEnv(t)
			ctx := context.Background()
			if err := natsx.EnsureStreams(ctx, e.nats.JS, streams.RiskConfig(streams.DefaultOptions)); err != nil {
				t.Fatal(err)
			}
			var agents []string
			for i := range 12 {
				agents = append(agents, fmt.Sprint("agent-", i))
			}
			// r is reset; o is another partition's agent whose decision
			// the reset was recorded at; last is another partition's
			// again, the tenant's newest decision.
			r := agents[0]
			var o, last string
			for _, a := range agents[1:] {
				if p := risk.PartitionOf("acme", a, n); p != risk.PartitionOf("acme", r, n) {
					if o == "" {
						o = a
					} else if last == "" && p != risk.PartitionOf("acme", o, n) {
						last = a
					}
				}
			}
			at := time.Duration(0)
			obs := func(a string, form int) step {
				at += time.Second
				return step{agent: a, session: "s-" + a, at: at, kind: "tool_call", tool: "search", host: "api.search.com", form: form}
			}
			var older, current int
			for _, form := range []int{5, 6, 0} {
				for _, a := range agents {
					e.publish(obs(a, form), obs(a, form))
					if form == 0 {
						current += 2
					} else {
						older += 2
					}
				}
			}
			// Enough decisions that the rebuild starts reading every
			// decision and switches to its own shards on the way.
			const bulk = 50
			for range bulk {
				for _, a := range agents {
					e.publish(obs(a, 0))
				}
			}
			current += bulk * len(agents)
			e.publish(obs(o, 0))
			current++
			st, err := e.nats.JS.Stream(ctx, streams.Policy)
			if err != nil {
				t.Fatal(err)
			}
			info, err := st.Info(ctx)
			if err != nil {
				t.Fatal(err)
			}
			reset := risk.Reset{ID: "rst_1", Tenant: "acme", AgentID: r, PolicySeq: info.State.LastSeq, At: t0}
			data, _ := json.Marshal(reset)
			if _, err := e.nats.JS.Publish(ctx, streams.BaselineResetSubject("acme", r), data); err != nil {
				t.Fatal(err)
			}
			e.publish(obs(r, 0), obs(last, 0))
			current += 2

			in := e.start(testConfig(n))
			e.waitOwned(n, n, in)
			testkit.Eventually(t, "every decision folded in", func() bool {
				return in.counter(t, "vigil_risk_observations_total") == float64(older+current)
			})
			ps := e.profiles(in, "acme")
			for _, a := range agents {
				want := int64(6 + bulk)
				switch a {
				case r:
					want = 1 // the reset forgot all before it
				case o, last:
					want = 7 + bulk
				}
				if ps[a].Observations != want {
					t.Errorf("%s: %d observations, want %d", a, ps[a].Observations, want)
				}
			}

			// Near the tail every partition reads its own shards only;
			// decisions recorded from then on are delivered to the
			// partitions sharing their shard and no others.
			testkit.Eventually(t, "every partition reading its own shards", func() bool {
				return in.counter(t, "vigil_risk_partitions_reading_own_shards") == float64(n)
			})
			// The tenant's newest decision is last's again; o's partition,
			// which holds o's session, has folded in o's, before it, and
			// answers all the same: it does not wait for a sequence it
			// will never be delivered.
			e.publish(obs(o, 0), obs(last, 0))
			testkit.Eventually(t, "o's and last's decisions folded in", func() bool {
				return in.counter(t, "vigil_risk_observations_total") == float64(older+current+2)
			})
			var sr risk.SessionRisk
			if code := e.get(in.url+"/v1/sessions/s-"+o+"/risk?consistency=POLICY:1", "acme", &sr); code != 200 || sr.SessionID != "s-"+o {
				t.Fatalf("score with a consistency token: %d %+v", code, sr)
			}
			if got := in.counter(t, "vigil_risk_scores_on_request_total"); got != 1 {
				t.Fatalf("scores answered by a partition: %v, want 1", got)
			}

			passed := in.counter(t, "vigil_risk_decisions_not_owned_total")
			for _, a := range agents {
				e.publish(obs(a, 0))
			}
			testkit.Eventually(t, "the live decisions folded in", func() bool {
				return in.counter(t, "vigil_risk_observations_total") == float64(older+current+2+len(agents))
			})
			g := 1
			for g = n; 16%g != 0 || n%g != 0; g-- {
			}
			if got, want := in.counter(t, "vigil_risk_decisions_not_owned_total")-passed, float64(len(agents)*(n/g-1)); got != want {
				t.Errorf("live decisions passed over as another partition's: %v, want %v", got, want)
			}
		})
	}
}

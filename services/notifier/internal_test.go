package notifier

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

func TestChannelWants(t *testing.T) {
	block := Signal{Type: SignalVerdictBlock, Severity: "high"}
	warn := Signal{Type: SignalVerdictWarn, Severity: "medium"}
	crit := Signal{Type: SignalRiskHigh, Severity: "critical"}
	cases := []struct {
		name string
		ch   Channel
		sig  Signal
		want bool
	}{
		{"all types", Channel{Enabled: true, MinSeverity: "info"}, warn, true},
		{"listed type", Channel{Enabled: true, Signals: []string{SignalVerdictBlock}, MinSeverity: "info"}, block, true},
		{"unlisted type", Channel{Enabled: true, Signals: []string{SignalVerdictBlock}, MinSeverity: "info"}, warn, false},
		{"wildcard", Channel{Enabled: true, Signals: []string{"*"}, MinSeverity: "info"}, warn, true},
		{"below minimum", Channel{Enabled: true, MinSeverity: "high"}, warn, false},
		{"at minimum", Channel{Enabled: true, MinSeverity: "high"}, block, true},
		{"above minimum", Channel{Enabled: true, MinSeverity: "high"}, crit, true},
		{"disabled", Channel{Enabled: false, MinSeverity: "info"}, block, false},
		{"deleted", Channel{Enabled: true, Deleted: true, MinSeverity: "info"}, block, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := c.ch.wants(c.sig); got != c.want {
				t.Fatalf("wants = %v, want %v", got, c.want)
			}
		})
	}
}

func TestBackoffSchedule(t *testing.T) {
	cfg := DefaultConfig()
	s := &Service{cfg: cfg}
	var total time.Duration
	prevNominal := time.Duration(0)
	for attempt := 1; attempt < cfg.Schedule.MaxAttempts; attempt++ {
		d := s.backoffFor(attempt)
		nominal := cfg.Schedule.InitialInterval
		for i := 1; i < attempt; i++ {
			nominal = min(time.Duration(float64(nominal)*cfg.Schedule.Multiplier), cfg.Schedule.MaxInterval)
		}
		lo := time.Duration(float64(nominal) * (1 - cfg.Schedule.Jitter))
		hi := time.Duration(float64(nominal) * (1 + cfg.Schedule.Jitter))
		if d < lo || d > hi {
			t.Fatalf("attempt %d waits %v, want %v ± %.0f%%", attempt, d, nominal, cfg.Schedule.Jitter*100)
		}
		if nominal < prevNominal {
			t.Fatalf("schedule shrinks at attempt %d", attempt)
		}
		prevNominal = nominal
		total += nominal
	}
	if total < 3*time.Hour {
		t.Fatalf("default schedule spans %v, want hours", total)
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 12, 0, 0, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
	}{
		{"", 0},
		{"30", 30 * time.Second},
		{"0", 0},
		{"-5", 0},
		{"soon", 0},
		{"9227000000", 7 * 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
	}
	for _, c := range cases {
		if got := parseRetryAfter(c.in, now); got != c.want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", c.in, got, c.want)
		}
	}
}

func TestDisplayURL(t *testing.T) {
	cases := []struct{ typ, in, want string }{
		{TypeWebhook, "https://h.example/a/b", "https://h.example/a/b"},
		{TypeWebhook, "https://h.example/a?token=x", "https://h.example/a?…"},
		{TypeSlack, "https://hooks.slack.com/services/T/B/secret", "https://hooks.slack.com/…"},
		{TypeSplunk, "https://splunk.example:8088/services/collector/event", "https://splunk.example:8088/services/collector/event"},
	}
	for _, c := range cases {
		if got := displayURL(c.typ, c.in); got != c.want {
			t.Errorf("displayURL(%s, %s) = %s, want %s", c.typ, c.in, got, c.want)
		}
	}
}

func TestDeliveryIDStable(t *testing.T) {
	if deliveryID("s1", "c1") != deliveryID("s1", "c1") || deliveryID("s1", "c1") == deliveryID("s1", "c2") || deliveryID("s1", "c1") == deliveryID("s2", "c1") {
		t.Fatal("delivery ids are not a function of (signal, channel)")
	}
}

// FuzzRiskRecord: RISK records come from another service; whatever they
// hold, decoding never panics and an accepted record yields a complete
// signal of a known severity.
func FuzzRiskRecord(f *testing.F) {
	f.Add([]byte(`{"id":"an_1","tenant":"acme","agentId":"a","sessionId":"s","severity":"high","summary":"x","occurredAt":"2026-01-01T00:00:00Z","score":80}`))
	f.Add([]byte(`{"id":"an_1","tenant":"acme","severity":"CRITICAL"}`))
	f.Add([]byte(`{"id":"","tenant":""}`))
	f.Add([]byte(`[]`))
	f.Add([]byte(`{"id":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, typ := range []string{SignalAnomaly, SignalRiskHigh} {
			s, ok, err := fromRisk(data, typ)
			if err != nil || !ok {
				continue
			}
			if s.ID == "" || s.Tenant == "" || severityRank(s.Severity) < 0 || s.Type != typ || s.Group == "" {
				t.Fatalf("incomplete signal %+v from %s", s, data)
			}
			if typ == SignalRiskHigh && severityRank(s.Severity) < severityRank("high") {
				t.Fatalf("risk.high below high: %+v", s)
			}
			if _, err := json.Marshal(s); err != nil {
				t.Fatalf("signal does not encode: %v", err)
			}
		}
	})
}

// FuzzParseRetryAfter: the header comes from the target.
func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"", "1", "99999999999999999999", "Wed, 21 Oct 2015 07:28:00 GMT", "-1", "1.5"} {
		f.Add(s)
	}
	now := time.Now()
	f.Fuzz(func(t *testing.T, v string) {
		if d := parseRetryAfter(v, now); d < 0 {
			t.Fatalf("negative wait %v for %q", d, v)
		}
	})
}

func TestFromHalt(t *testing.T) {
	tests := []struct {
		name     string
		data     string
		ok       bool
		wantErr  bool
		typ, sev string
		resolves bool
	}{
		{"raised", `{"id":"halt_1","tenant":"acme","scope":"agent","agentId":"bot","reason":"incident","op":"halted","by":"key:k","createdAt":"2026-01-01T00:00:00Z","active":true}`,
			true, false, SignalHaltRaised, "critical", false},
		{"resumed", `{"id":"halt_1","tenant":"acme","scope":"tenant","reason":"incident","op":"resumed","by":"key:k","createdAt":"2026-01-01T00:00:00Z","endedAt":"2026-01-01T00:01:00Z"}`,
			true, false, SignalHaltResumed, "info", true},
		{"resumed without endedAt", `{"id":"halt_1","tenant":"acme","scope":"tenant","op":"resumed"}`, false, true, "", "", false},
		{"unknown op is not notable", `{"id":"halt_1","tenant":"acme","scope":"tenant","op":"renamed"}`, false, false, "", "", false},
		{"no tenant", `{"id":"halt_1","op":"halted"}`, false, true, "", "", false},
		{"not json", `[`, false, true, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, ok, err := fromHalt([]byte(tt.data))
			if (err != nil) != tt.wantErr || ok != tt.ok {
				t.Fatalf("ok=%v err=%v, want ok=%v err=%v", ok, err, tt.ok, tt.wantErr)
			}
			if !ok {
				return
			}
			if s.Type != tt.typ || s.Severity != tt.sev || s.Resolves != tt.resolves || s.Group != "halt_1" || s.OccurredAt.IsZero() {
				t.Fatalf("signal %+v", s)
			}
		})
	}
	raised, _, _ := fromHalt([]byte(tests[0].data))
	resumed, _, _ := fromHalt([]byte(tests[1].data))
	if raised.ID == resumed.ID {
		t.Fatal("raise and resume share a signal id: the resume would be deduplicated away")
	}
}

// TestFromApprovalOps: which GUARDIAN operations notify. An escalation
// notifies like a reroute (the new group's channels hear of it); a vote
// that leaves the action pending and a redemption do not.
func TestFromApprovalOps(t *testing.T) {
	tests := []struct {
		op       string
		ok       bool
		typ, sev string
	}{
		{approval.OpRequested, true, SignalApprovalRequested, "medium"},
		{approval.OpVoted, false, "", ""},
		{approval.OpEscalated, true, SignalApprovalRerouted, "medium"},
		{approval.OpRerouted, true, SignalApprovalRerouted, "info"},
		{approval.OpResolved, true, SignalApprovalResolved, "info"},
		{approval.OpRedeemed, false, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.op, func(t *testing.T) {
			data, _ := json.Marshal(approval.Change{Op: tt.op, At: time.Now(), Action: approval.Action{ID: "pa_1", Tenant: "acme", AgentID: "bot",
				Priority: "normal", ReviewerGroup: "security", Status: approval.Pending}})
			s, ok, err := fromApproval(data, 7)
			if err != nil || ok != tt.ok {
				t.Fatalf("ok=%v err=%v, want ok=%v", ok, err, tt.ok)
			}
			if ok && (s.Type != tt.typ || s.Severity != tt.sev || s.ID != "sig_pa_1_"+tt.op+"_7") {
				t.Fatalf("signal %+v, want %s/%s", s, tt.typ, tt.sev)
			}
		})
	}
}

// The header check passes over exactly the decisions that decoding would
// find are no signal, and the subject names the record's tenant.
func TestDecisionSkipsAgreeWithDecoding(t *testing.T) {
	for _, o := range []policy.Outcome{policy.Allow, policy.Warn, policy.RequireApproval, policy.Block} {
		rec := policy.DecisionRecord{ID: "dec_1", Tenant: "acme", AgentID: "a.b", Decision: policy.Decision{Outcome: o}, At: time.Now()}
		data, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		_, signal, err := fromDecision(data)
		if err != nil {
			t.Fatal(err)
		}
		if got := decisionSignals(o.String()); got != signal {
			t.Errorf("%s: header says signal=%v, decoding says %v", o, got, signal)
		}
	}
	if !decisionSignals("") {
		t.Error("a decision without the header must be decoded")
	}
	cases := []struct {
		subj, tenant string
		ok           bool
	}{
		{streams.DecisionSubject("acme", "agent-1", "warn"), "acme", true},
		{"policy.v1." + streams.DecisionRecorded + ".acme.agent-1", "acme", true}, // recorded before the outcome was in the subject
		{streams.DecisionSubject("acme", "~", "block"), "acme", true},
		{streams.RejectionSubject("acme", "agent-1"), "", false},
		{"guardian.v1." + streams.ApprovalChanged + ".acme.x", "", false},
		{"policy.v1." + streams.DecisionRecorded + ".", "", false},
	}
	for _, c := range cases {
		if tenant, ok := decisionTenant(c.subj); tenant != c.tenant || ok != c.ok {
			t.Errorf("decisionTenant(%q) = %q, %v; want %q, %v", c.subj, tenant, ok, c.tenant, c.ok)
		}
	}
}

// benchDecision is a recorded decision shaped like `vigil bench decide`'s.
func benchDecision(b *testing.B) []byte {
	rec := policy.DecisionRecord{
		ID: "dec_0123456789abcdef", Tenant: "bench123", AgentID: "agent-3", Source: policy.SourceDecision,
		Input: policy.Input{Tenant: "bench123", Action: policy.Action{Tool: "tool_42"}, Context: map[string]any{"amount": 1554.0},
			Agent: policy.AgentState{ID: "agent-3"}},
		Decision:  policy.Decision{Outcome: policy.Warn, ReasonCodes: []string{"R42"}, Matches: []policy.Match{{PolicyID: "bench", RuleID: "r42"}}, PackHash: "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"},
		Signature: "sig", At: time.Now().UTC(),
	}
	data, err := json.Marshal(rec)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// What the fan-out paid per decision before the Vigil-Outcome header and
// the no-channels check (decode), and what it pays now (skip).
func BenchmarkDecisionFanOut(b *testing.B) {
	data := benchDecision(b)
	subj := streams.DecisionSubject("bench123", "agent-3", "warn")
	b.Run("decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, _, err := fromDecision(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("skip", func(b *testing.B) {
		b.ReportAllocs()
		r := &registry{byTenant: map[string]map[string]Channel{}}
		for b.Loop() {
			if t, ok := decisionTenant(subj); !ok || !r.none(t) || !decisionSignals(policy.Warn.String()) {
				b.Fatal("not skipped")
			}
		}
	})
}

package streams_test

import (
	"hash/fnv"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/streams"
)

// validToken reports whether tok can stand as one literal token of a NATS
// subject: non-empty, no separator, not a wildcard, no whitespace.
func validToken(tok string) bool {
	if tok == "" || strings.ContainsAny(tok, ".*>") {
		return false
	}
	if strings.ContainsFunc(tok, unicode.IsSpace) {
		return false
	}
	return server.IsValidLiteralSubject("a." + tok + ".b")
}

func TestToken(t *testing.T) {
	cases := []struct {
		id, tok string
	}{
		{"my-agent", "my-agent"},
		{"Agent_42", "Agent_42"},
		{"agt_9f81a7", "agt_9f81a7"},
		{"a.b", "~YS5i"},
		{"*", "~Kg"},
		{">", "~Pg"},
		{"a b", "~YSBi"},
		{"user@example.com", "~dXNlckBleGFtcGxlLmNvbQ"},
		{"~", "~fg"},
		{"~YS5i", "~fllTNWk"}, // a verbatim-looking encoded token is itself encoded
		{"é", "~w6k"},
		{"", "~"},
	}
	for _, tc := range cases {
		got := streams.Token(tc.id)
		if got != tc.tok {
			t.Errorf("Token(%q) = %q, want %q", tc.id, got, tc.tok)
		}
		if !validToken(got) {
			t.Errorf("Token(%q) = %q is not a valid subject token", tc.id, got)
		}
		back, err := streams.Untoken(got)
		if err != nil || back != tc.id {
			t.Errorf("Untoken(%q) = %q, %v; want %q", got, back, err, tc.id)
		}
	}
}

func TestUntokenRejectsBadEncoding(t *testing.T) {
	for _, tok := range []string{"~!!", "~a", "~YS5i=", "~YS+i"} {
		if got, err := streams.Untoken(tok); err == nil {
			t.Errorf("Untoken(%q) = %q, want an error", tok, got)
		}
	}
}

func FuzzToken(f *testing.F) {
	for _, s := range []string{"", "my-agent", "a.b", "*", ">", " ", "~", "~YS5i", "é", "\x00", "\xff\xfe", "a\tb", "user@example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok := streams.Token(s)
		if !validToken(tok) {
			t.Fatalf("Token(%q) = %q is not a valid subject token", s, tok)
		}
		back, err := streams.Untoken(tok)
		if err != nil || back != s {
			t.Fatalf("Untoken(Token(%q)) = %q, %v", s, back, err)
		}
	})
}

func TestSubjects(t *testing.T) {
	cases := []struct {
		got, want, filter string
	}{
		{streams.EventReceivedSubject("acme", "my-agent"), "ingest.v1.event_received.acme.my-agent", streams.AllEventsReceived},
		{streams.EventReceivedSubject("acme", "a.b"), "ingest.v1.event_received.acme.~YS5i", streams.AllEventsReceived},
		{streams.AgentSubject("acme", "agt_9f81a7"), "control.v1.agent_changed.acme.agt_9f81a7", streams.AllAgentChanges},
		{streams.AgentSubject("t-1", "x>y"), "control.v1.agent_changed.t-1.~eD55", streams.AllAgentChanges},
		{streams.KeySubject("acme", "0123456789abcdef"), "control.v1.key_changed.acme.0123456789abcdef", streams.AllKeyChanges},
	}
	all := []string{streams.AllEventsReceived, streams.AllAgentChanges, streams.AllKeyChanges}
	for _, tc := range cases {
		if tc.got != tc.want {
			t.Errorf("subject = %q, want %q", tc.got, tc.want)
		}
		if !server.IsValidPublishSubject(tc.got) {
			t.Errorf("%q is not a valid publish subject", tc.got)
		}
		if got := len(strings.Split(tc.got, ".")); got != 5 {
			t.Errorf("%q has %d tokens, want <subsystem>.v1.<event>.<tenant>.<entity>", tc.got, got)
		}
		for _, f := range all {
			if m := server.SubjectMatchesFilter(tc.got, f); m != (f == tc.filter) {
				t.Errorf("SubjectMatchesFilter(%q, %q) = %v", tc.got, f, m)
			}
		}
	}
	// The per-agent filters do not capture each other's subjects.
	if server.SubjectsCollide(streams.AllAgentChanges, streams.AllKeyChanges) {
		t.Error("agent and key change filters overlap")
	}
}

func TestStreamConfigs(t *testing.T) {
	cfgs := []jetstream.StreamConfig{streams.IngestConfig(streams.DefaultOptions), streams.ControlConfig(streams.DefaultOptions)}
	owned := map[string]string{
		streams.EventReceivedSubject("acme", "a"): streams.Ingest,
		streams.AgentSubject("acme", "a"):         streams.Control,
		streams.KeySubject("acme", "k"):           streams.Control,
		"rpc.policy.v1.evaluate":                  "",
		"rpc.ingest.v1.anything":                  "",
		"rpc.control.v1.anything":                 "",
	}
	names := map[string]bool{}
	for i, a := range cfgs {
		if names[a.Name] {
			t.Errorf("duplicate stream name %s", a.Name)
		}
		names[a.Name] = true
		if len(a.Subjects) == 0 {
			t.Errorf("%s has no subjects", a.Name)
		}
		for _, s := range a.Subjects {
			if !server.IsValidSubject(s) {
				t.Errorf("%s subject %q is invalid", a.Name, s)
			}
			if strings.HasPrefix(s, "rpc.") || s == ">" {
				t.Errorf("%s captures request/reply subjects with %q", a.Name, s)
			}
		}
		for _, b := range cfgs[i+1:] {
			for _, sa := range a.Subjects {
				for _, sb := range b.Subjects {
					if server.SubjectsCollide(sa, sb) {
						t.Errorf("%s %q overlaps %s %q", a.Name, sa, b.Name, sb)
					}
				}
			}
		}
	}
	for subj, owner := range owned {
		var got []string
		for _, c := range cfgs {
			for _, f := range c.Subjects {
				if server.SubjectMatchesFilter(subj, f) {
					got = append(got, c.Name)
				}
			}
		}
		switch {
		case owner == "" && len(got) > 0:
			t.Errorf("%q is captured by %v, want no stream", subj, got)
		case owner != "" && (len(got) != 1 || got[0] != owner):
			t.Errorf("%q is captured by %v, want exactly %s", subj, got, owner)
		}
	}
}

func TestStreamOptions(t *testing.T) {
	ing := streams.IngestConfig(streams.Options{})
	if ing.Replicas != 1 || ing.Duplicates != streams.DefaultOptions.DuplicateWindow || ing.MaxAge != streams.DefaultOptions.IngestMaxAge {
		t.Errorf("zero options not defaulted: replicas=%d dup=%s maxAge=%s", ing.Replicas, ing.Duplicates, ing.MaxAge)
	}
	o := streams.Options{Replicas: 3, DuplicateWindow: 2 * time.Minute, IngestMaxAge: 48 * time.Hour}
	ing, ctl := streams.IngestConfig(o), streams.ControlConfig(o)
	if ing.Replicas != 3 || ing.Duplicates != 2*time.Minute || ing.MaxAge != 48*time.Hour {
		t.Errorf("ingest ignores options: %+v", ing)
	}
	if ctl.Replicas != 3 || ctl.Duplicates != 2*time.Minute {
		t.Errorf("control ignores options: %+v", ctl)
	}
	if ctl.MaxAge != 0 {
		t.Errorf("control state must be kept forever, MaxAge = %s", ctl.MaxAge)
	}
	if !ctl.AllowDirect {
		t.Error("control must allow direct gets (read-your-writes of the last message per subject)")
	}
	if ing.Storage != jetstream.FileStorage || ctl.Storage != jetstream.FileStorage {
		t.Error("streams must be file-backed")
	}
}

func TestDecisionSubjects(t *testing.T) {
	outcomes := []string{"allow", "warn", "require_approval", "block"}
	shard := strconv.Itoa(streams.DecisionShard("acme", "a.b"))
	for _, o := range outcomes {
		subj := streams.DecisionSubject("acme", "a.b", o)
		if want := "policy.v1.decision_recorded.acme.~YS5i." + o + "." + shard; subj != want {
			t.Fatalf("DecisionSubject = %q, want %q", subj, want)
		}
		if !server.IsValidPublishSubject(subj) {
			t.Fatalf("%q is not a valid publish subject", subj)
		}
		for _, f := range []string{streams.AllDecisions, streams.TenantDecisions("acme")} {
			if !server.SubjectMatchesFilter(subj, f) {
				t.Errorf("%q does not match %q", subj, f)
			}
		}
		for _, f := range []string{streams.LegacyDecisions, streams.OutcomeDecisions} {
			if server.SubjectMatchesFilter(subj, f) {
				t.Errorf("%q matches the older form's filter %q", subj, f)
			}
		}
		// Each outcome's filter takes its own decisions and no others, in
		// the current form and in the form before the shard.
		previous := strings.TrimSuffix(subj, "."+shard)
		for _, other := range outcomes {
			fs := streams.DecisionsWithOutcome(other)
			for _, s := range []string{subj, previous} {
				if matched := matchesAny(s, fs); matched != (o == other) {
					t.Errorf("%q matched by %v: %v", s, fs, matched)
				}
			}
		}
		for _, s := range []string{subj, previous} {
			tenant, agent, outcome, ok := streams.ParseDecisionSubject(s)
			if !ok || tenant != "acme" || agent != "~YS5i" || outcome != o {
				t.Errorf("ParseDecisionSubject(%q) = %q, %q, %q, %v", s, tenant, agent, outcome, ok)
			}
		}
	}
	// A decision recorded before the outcome was in its subject is still
	// every consumer's: the filters keep the legacy form.
	legacy := "policy.v1.decision_recorded.acme.a1"
	if !server.SubjectMatchesFilter(legacy, streams.DecisionsWithOutcome("warn")[0]) || !server.SubjectMatchesFilter(legacy, streams.AllDecisions) {
		t.Errorf("%q is not matched by the legacy filter and AllDecisions", legacy)
	}
	if tenant, agent, outcome, ok := streams.ParseDecisionSubject(legacy); !ok || tenant != "acme" || agent != "a1" || outcome != "" {
		t.Errorf("ParseDecisionSubject(%q) = %q, %q, %q, %v", legacy, tenant, agent, outcome, ok)
	}
	// A consumer's filters must not overlap.
	noOverlap(t, streams.DecisionsWithOutcome(outcomes...))
	for _, bad := range []string{
		"policy.v1.decision_recorded.acme", "policy.v1.decision_recorded..a1", "policy.v1.decision_recorded.acme.",
		"policy.v1.decision_recorded.acme.a1.", "policy.v1.decision_recorded.acme.a1.allow.",
		"policy.v1.decision_recorded.acme.a1.allow.x", "policy.v1.decision_recorded.acme.a1.allow.16",
		"policy.v1.decision_recorded.acme.a1.allow.01", "policy.v1.decision_recorded.acme.a1.allow.-1",
		"policy.v1.decision_recorded.acme.a1.allow.3.x", "policy.v1.decision_recorded.acme.a1..3",
		"policy.v1.decision_rejected.acme.a1", "ingest.v1.event_received.acme.a1",
	} {
		if _, _, _, ok := streams.ParseDecisionSubject(bad); ok {
			t.Errorf("ParseDecisionSubject(%q) ok", bad)
		}
	}
}

func matchesAny(subj string, filters []string) bool {
	for _, f := range filters {
		if server.SubjectMatchesFilter(subj, f) {
			return true
		}
	}
	return false
}

func noOverlap(t *testing.T, fs []string) {
	t.Helper()
	for i := range fs {
		for j := i + 1; j < len(fs); j++ {
			if server.SubjectsCollide(fs[i], fs[j]) {
				t.Errorf("filters %q and %q overlap", fs[i], fs[j])
			}
		}
	}
}

// The shard and the risk partition come from one hash, the FNV-1a of
// "tenant/agent" that PartitionOf always used (hash/fnv's, inlined).
func FuzzAgentHash(f *testing.F) {
	f.Add("acme", "agent-1")
	f.Add("", "")
	f.Add("t", "a/b.c~\x00")
	f.Fuzz(func(t *testing.T, tenant, agent string) {
		h := fnv.New32a()
		h.Write([]byte(tenant + "/" + agent))
		if got, want := streams.AgentHash(tenant, agent), h.Sum32(); got != want {
			t.Fatalf("AgentHash(%q, %q) = %d, want %d", tenant, agent, got, want)
		}
		if got, want := streams.DecisionShard(tenant, agent), int(h.Sum32()%streams.DecisionShards); got != want {
			t.Fatalf("DecisionShard = %d, want %d", got, want)
		}
	})
}

// Every partition count 1–256: a partition's filters take every decision
// of its agents in every form, never overlap, and, when the count divides
// DecisionShards, take no current-form decision of another partition's.
// Every current-form decision is some partition's.
func TestDecisionsOfPartition(t *testing.T) {
	agents := make([]string, 300)
	for i := range agents {
		agents[i] = "agent-" + strconv.Itoa(i)
	}
	agents = append(agents, "a.b", "~", "")
	for n := 1; n <= 256; n++ {
		filters := make([][]string, n)
		for idx := range filters {
			filters[idx] = streams.DecisionsOfPartition(idx, n)
			noOverlap(t, filters[idx])
		}
		exact := streams.DecisionShards%n == 0
		for _, a := range agents {
			owner := int(streams.AgentHash("acme", a) % uint32(n))
			cur := streams.DecisionSubject("acme", a, "warn")
			previous := cur[:strings.LastIndexByte(cur, '.')]
			legacy := previous[:strings.LastIndexByte(previous, '.')]
			for _, s := range []string{cur, previous, legacy} {
				if !matchesAny(s, filters[owner]) {
					t.Fatalf("n=%d: %q is not matched by its partition %d's filters %v", n, s, owner, filters[owner])
				}
			}
			for idx := range n {
				if idx != owner && exact && matchesAny(cur, filters[idx]) {
					t.Fatalf("n=%d: %q (partition %d's) is matched by partition %d's filters %v", n, cur, owner, idx, filters[idx])
				}
			}
		}
	}
}

package streams_test

import (
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

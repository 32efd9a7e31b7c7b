package policy

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// dataFlowPolicy is the example: reading untrusted content labels
// the session; after that, sending to an undeclared destination needs a
// person.
const dataFlowPolicy = `
id: dataflow
name: data flow
labels:
  - id: untrusted-reads
    source: untrusted_content
  - id: crm-reads
    when: action.tool == "crm_lookup"
    add: [pii]
rules:
  - id: exfil
    when: '"untrusted_content" in session.labels && action.host != "" && !(action.host in agent.destinations)'
    outcome: require_approval
    reasonCodes: [DATA_FLOW_UNTRUSTED_EGRESS]
    message: untrusted content may not leave for an undeclared destination
`

// manifestAgent declares web_fetch and docs.example.com as sources of
// untrusted content.
func manifestAgent() AgentState {
	return AgentState{ID: "a1", Declared: true, Tools: []string{"web_fetch", "send_email", "crm_lookup"},
		Destinations: []string{"docs.example.com", "mail.acme.internal"},
		Sources:      map[string][]string{"web_fetch": {"untrusted_content"}, "*.example.com": {"untrusted_content"}}}
}

func labelAdds(d Decision) []string {
	var out []string
	for _, l := range d.Labels {
		out = append(out, l.Name)
	}
	return out
}

func TestLabelRulesAddLabels(t *testing.T) {
	p := mustPack(t, dataFlowPolicy)
	set := Session{ID: "s1", Labels: []SessionLabel{{Name: "untrusted_content", DecisionID: "dec_first", RuleID: "untrusted-reads"}}}
	for _, tc := range []struct {
		name    string
		action  Action
		session Session
		agent   AgentState
		want    []string
	}{
		{"declared source tool", Action{Kind: "tool_call", Tool: "web_fetch"}, Session{ID: "s1"}, manifestAgent(), []string{"untrusted_content"}},
		{"declared source destination (wildcard)", Action{Kind: "http", Target: "https://docs.example.com/a"}, Session{ID: "s1"}, manifestAgent(), []string{"untrusted_content"}},
		{"tool without a source", Action{Kind: "tool_call", Tool: "send_email"}, Session{ID: "s1"}, manifestAgent(), nil},
		{"no manifest sources", Action{Kind: "tool_call", Tool: "web_fetch"}, Session{ID: "s1"}, AgentState{ID: "a1"}, nil},
		{"when condition", Action{Kind: "tool_call", Tool: "crm_lookup"}, Session{ID: "s1"}, manifestAgent(), []string{"pii"}},
		{"already carried: the first cause stays", Action{Kind: "tool_call", Tool: "web_fetch"}, set, manifestAgent(), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Evaluate(Input{Tenant: "acme", Agent: tc.agent, Action: tc.action, Session: tc.session}, OrgPolicy{})
			if got := labelAdds(d); !slices.Equal(got, tc.want) {
				t.Fatalf("labels added %v, want %v (decision %+v)", got, tc.want, d)
			}
			for _, l := range d.Labels {
				if l.PolicyID != "dataflow" || l.RuleID == "" {
					t.Fatalf("label add %+v does not name its rule", l)
				}
			}
		})
	}
}

// TestDataFlowRuleNamesTheRecord: the rule reading session.labels fires
// only once the label is set, and its match names the record that set it.
func TestDataFlowRuleNamesTheRecord(t *testing.T) {
	p := mustPack(t, dataFlowPolicy)
	if !p.ReadsLabels() || p.LabelRules() != 2 {
		t.Fatalf("ReadsLabels %v, LabelRules %d", p.ReadsLabels(), p.LabelRules())
	}
	at := time.Date(2026, 12, 4, 21, 0, 0, 0, time.UTC)
	labelled := Session{ID: "s1", Labels: []SessionLabel{
		{Name: "pii", DecisionID: "dec_crm", PolicyID: "dataflow", RuleID: "crm-reads", At: at},
		{Name: "untrusted_content", DecisionID: "dec_read", EventID: "evt_1", PolicyID: "dataflow", RuleID: "untrusted-reads", At: at},
	}}
	send := Action{Kind: "http", Tool: "send_email", Target: "https://evil.example.net/upload"}
	for _, tc := range []struct {
		name    string
		action  Action
		session Session
		want    Outcome
	}{
		{"send before any read", send, Session{ID: "s1"}, Warn},
		{"send after the read", send, labelled, RequireApproval},
		{"declared destination after the read", Action{Kind: "http", Target: "https://mail.acme.internal/x"}, labelled, Allow},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := p.Evaluate(Input{Tenant: "acme", Agent: manifestAgent(), Action: tc.action, Session: tc.session}, OrgPolicy{})
			if d.Outcome != tc.want {
				t.Fatalf("outcome %s, want %s (%+v)", d.Outcome, tc.want, d)
			}
			if tc.want != RequireApproval {
				return
			}
			i := slices.IndexFunc(d.Matches, func(m Match) bool { return m.RuleID == "exfil" })
			if i < 0 || d.ReasonCodes[0] != "DATA_FLOW_UNTRUSTED_EGRESS" {
				t.Fatalf("no exfil match: %+v", d)
			}
			m := d.Matches[i]
			// Only the label the rule tests explains it, not pii.
			if len(m.Labels) != 1 || m.Labels[0].DecisionID != "dec_read" {
				t.Fatalf("match labels %+v, want the untrusted_content record", m.Labels)
			}
			for _, want := range []string{"dec_read", "evt_1", "dataflow/labels/untrusted-reads", "untrusted content may not leave"} {
				if !strings.Contains(m.Message, want) {
					t.Errorf("message %q does not name %s", m.Message, want)
				}
			}
		})
	}
}

// TestUnavailableLabelsFailClosed: when the label store cannot be read,
// no decision is milder than it would be with any set of labels present,
// and rules that do not read labels are unaffected.
func TestUnavailableLabelsFailClosed(t *testing.T) {
	p := mustPack(t, dataFlowPolicy, `
id: more
name: more
rules:
  - id: clean-only
    when: '!("pii" in session.labels) && action.tool == "export"'
    outcome: block
    reasonCodes: [EXPORT_FROM_CLEAN_SESSION]
  - id: tolerant
    when: '"pii" in session.labels && action.tool == "export"'
    outcome: warn
    onError: skip
  - id: plain
    when: action.tool == "delete_all"
    outcome: block
`)
	sets := [][]string{nil, {"pii"}, {"untrusted_content"}, {"pii", "untrusted_content"}}
	actions := []Action{
		{Kind: "http", Tool: "send_email", Target: "https://evil.example.net/"},
		{Kind: "http", Target: "https://mail.acme.internal/"},
		{Kind: "tool_call", Tool: "export"},
		{Kind: "tool_call", Tool: "delete_all"},
		{Kind: "tool_call", Tool: "web_fetch"},
	}
	for _, a := range actions {
		t.Run(a.Tool+a.Target, func(t *testing.T) {
			down := p.Evaluate(Input{Tenant: "acme", Agent: manifestAgent(), Action: a,
				Session: Session{ID: "s1", LabelsUnavailable: "label store: no responders"}}, OrgPolicy{})
			strictest := Allow
			for _, names := range sets {
				s := Session{ID: "s1"}
				for _, n := range names {
					s.Labels = append(s.Labels, SessionLabel{Name: n, DecisionID: "dec_x", RuleID: "r"})
				}
				d := p.Evaluate(Input{Tenant: "acme", Agent: manifestAgent(), Action: a, Session: s}, OrgPolicy{})
				strictest = max(strictest, d.Outcome)
			}
			if down.Outcome < strictest {
				t.Fatalf("with the store down: %s, but %s with some labels set (%+v)", down.Outcome, strictest, down)
			}
		})
	}
	// The erroring rules say why they applied.
	d := p.Evaluate(Input{Tenant: "acme", Agent: manifestAgent(), Action: actions[0],
		Session: Session{ID: "s1", LabelsUnavailable: "label store: no responders"}}, OrgPolicy{})
	if d.Outcome != RequireApproval || !slices.Contains(d.ReasonCodes, ReasonEvaluationError) {
		t.Fatalf("store down: %+v", d)
	}
	if i := slices.IndexFunc(d.Matches, func(m Match) bool { return m.RuleID == "exfil" }); i < 0 || !strings.Contains(d.Matches[i].Message, "session labels unavailable") {
		t.Fatalf("exfil match does not say the labels were unavailable: %+v", d.Matches)
	}
	// A rule that cannot hold for this action stays off even so.
	d = p.Evaluate(Input{Tenant: "acme", Agent: manifestAgent(), Action: Action{Kind: "tool_call", Tool: "send_email"},
		Session: Session{ID: "s1", LabelsUnavailable: "down"}}, OrgPolicy{})
	if d.Outcome != Allow {
		t.Fatalf("an action no label rule can touch: %+v", d)
	}
}

func TestReadsLabels(t *testing.T) {
	for _, tc := range []struct {
		when string
		want bool
	}{
		{`"x" in session.labels`, true},
		{`session["labels"].size() > 0`, true},
		{`session.events > 3`, false},
		{`size(session) > 0`, true},
		{`action.tool == "x"`, false},
	} {
		t.Run(tc.when, func(t *testing.T) {
			p := mustPack(t, "name: n\nrules:\n  - id: r\n    when: '"+strings.ReplaceAll(tc.when, "'", "''")+"'\n    outcome: warn\n")
			if p.ReadsLabels() != tc.want {
				t.Fatalf("ReadsLabels = %v, want %v", p.ReadsLabels(), tc.want)
			}
		})
	}
}

// TestLabelRuleErrors: an erroring label condition adds its labels
// (failing closed) unless it says onError: skip.
func TestLabelRuleErrors(t *testing.T) {
	p := mustPack(t, `
name: errs
labels:
  - id: strict
    when: context.flag
    add: [flagged]
  - id: lenient
    when: context.other > 1
    add: [other]
    onError: skip
`)
	d := p.Evaluate(Input{Tenant: "acme", Action: Action{Tool: "t"}, Context: map[string]any{}}, OrgPolicy{})
	if got := labelAdds(d); !slices.Equal(got, []string{"flagged"}) || d.Labels[0].Error == "" || len(d.Errors) != 2 {
		t.Fatalf("labels %v, errors %v", d.Labels, d.Errors)
	}
}

func TestLabelRuleValidation(t *testing.T) {
	for _, tc := range []struct {
		name, src, path string
	}{
		{"no id", "name: n\nlabels:\n  - source: pii\n", "labels[0].id"},
		{"neither source nor when", "name: n\nlabels:\n  - id: l\n    add: [pii]\n", "labels[0]"},
		{"when without add", "name: n\nlabels:\n  - id: l\n    when: 'true'\n", "labels[0].add"},
		{"bad label", "name: n\nlabels:\n  - id: l\n    when: 'true'\n    add: [Bad Label]\n", "labels[0].add[0]"},
		{"bad source", "name: n\nlabels:\n  - id: l\n    source: 'PII!'\n", "labels[0].source"},
		{"bad onError", "name: n\nlabels:\n  - id: l\n    source: pii\n    onError: maybe\n", "labels[0].onError"},
		{"duplicate id", "name: n\nlabels:\n  - id: l\n    source: pii\n  - id: l\n    source: pii\n", "labels[1].id"},
		{"unknown key", "name: n\nlabels:\n  - id: l\n    sorce: pii\n", "labels[0].sorce"},
		{"bad condition", "name: n\nlabels:\n  - id: l\n    when: 'action.tool =='\n    add: [x]\n", "labels[0].when"},
		{"condition not a bool", "name: n\nlabels:\n  - id: l\n    when: '1 + 1'\n    add: [x]\n", "labels[0].when"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := Parse([]byte(tc.src))
			if err == nil {
				c, cerr := NewCompiler()
				if cerr != nil {
					t.Fatal(cerr)
				}
				_, err = c.Compile(d)
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("want a validation error, got %v", err)
			}
			if !slices.ContainsFunc(ae.Details, func(fe apperr.FieldError) bool { return fe.Path == tc.path }) {
				t.Fatalf("no error at %s: %+v", tc.path, ae.Details)
			}
		})
	}
	// A policy of label rules only is valid.
	if _, err := Parse([]byte("name: n\nlabels:\n  - id: l\n    source: pii\n")); err != nil {
		t.Fatalf("labels-only policy: %v", err)
	}
}

// BenchmarkEvaluate100RulesWithLabels is BenchmarkEvaluate100Rules with a
// data-flow policy in the pack: two label rules evaluated for the action,
// a rule reading session.labels, and a session carrying two labels.
func BenchmarkEvaluate100RulesWithLabels(b *testing.B) {
	p := mustPack(b, hundredRules(), dataFlowPolicy)
	at := time.Now()
	in := Input{Tenant: "acme", Agent: manifestAgent(),
		Action:  Action{Kind: "tool_call", Tool: "tool_42", Target: "https://evil.example.net/", Arguments: map[string]any{"amount": 5000.0}},
		Context: map[string]any{},
		Session: Session{ID: "s1", Labels: []SessionLabel{
			{Name: "pii", DecisionID: "dec_a", RuleID: "crm-reads", At: at},
			{Name: "untrusted_content", DecisionID: "dec_b", RuleID: "untrusted-reads", At: at},
		}}}
	if d := p.Evaluate(in, OrgPolicy{}); d.Outcome != RequireApproval {
		b.Fatalf("got %+v", d)
	}
	b.ReportAllocs()
	for b.Loop() {
		p.Evaluate(in, OrgPolicy{})
	}
}

package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Data-flow labels. A policy's `labels:` entries say which actions mark
// their session (reading from a source the agent's manifest declares
// untrusted_content, say); rules then read session.labels, so "after the
// session has read untrusted content, sending to an undeclared
// destination requires approval" is one rule. The engine only computes
// which labels an action adds (Decision.Labels) and, given the labels the
// session already carries (Session.Labels), which earlier record set each
// one a matching rule tests (Match.Labels). Storing them, shared by every
// replica, is the policy service's job.

// LabelRule is one `labels:` entry of a policy: when it holds for an
// action, the action's session carries the labels in Add from then on.
type LabelRule struct {
	ID string `yaml:"id" json:"id"`
	// Source holds when the agent's manifest declares this source for the
	// action's tool or destination host (manifest `sources`).
	Source string `yaml:"source,omitempty" json:"source,omitempty"`
	// When is a CEL condition like a rule's. With Source, both must hold.
	When string `yaml:"when,omitempty" json:"when,omitempty"`
	// Add lists the labels; it defaults to [Source].
	Add []string `yaml:"add,omitempty" json:"add,omitempty"`
	// OnError is skip to ignore an erroring condition; by default the
	// labels are added (a label only makes rules that test it stricter).
	OnError string `yaml:"onError,omitempty" json:"onError,omitempty"`

	line int
}

// SessionLabel is a label a session carries, with the record that set it.
type SessionLabel struct {
	Name string `json:"name"`
	// DecisionID is the decision (an evaluation or an ingested event's
	// verdict) whose action added the label; EventID is set for events.
	DecisionID string    `json:"decisionId"`
	EventID    string    `json:"eventId,omitempty"`
	PolicyID   string    `json:"policyId,omitempty"`
	RuleID     string    `json:"ruleId"`
	At         time.Time `json:"at"`
}

// LabelAdd is a label a decision adds to its session, and the label rule
// that added it.
type LabelAdd struct {
	Name     string `json:"name"`
	PolicyID string `json:"policyId,omitempty"`
	RuleID   string `json:"ruleId"`
	// Error is set when the label rule's condition failed to evaluate
	// and the label was added to fail closed.
	Error string `json:"error,omitempty"`
}

// labelNameRe keeps label names short identifiers that read well in CEL
// string literals and in explanations.
var labelNameRe = regexp.MustCompile(`^[a-z][a-z0-9_.:-]{0,63}$`)

// ValidLabel reports whether name is a valid label (also the manifest's
// source names).
func ValidLabel(name string) bool { return labelNameRe.MatchString(name) }

// maxLabelRules bounds a policy's labels: entries.
const maxLabelRules = 200

func (d *Document) normalizeLabels(add func(path, code string, line int, format string, args ...any)) {
	if len(d.Labels) > maxLabelRules {
		add("labels", "too_long", 0, "a policy holds at most %d label rules", maxLabelRules)
	}
	seen := map[string]bool{}
	for i := range d.Labels {
		l := &d.Labels[i]
		p := fmt.Sprintf("labels[%d]", i)
		who := "label rule " + l.ID
		if l.ID == "" {
			who = fmt.Sprintf("label rule #%d", i+1)
		}
		switch {
		case l.ID == "":
			add(p+".id", "required", l.line, "%s: id is required", who)
		case !ruleIDRe.MatchString(l.ID):
			add(p+".id", "invalid_format", l.line, "%s: id must be letters, digits and _.- (at most 128)", who)
		case seen[l.ID]:
			add(p+".id", "duplicate", l.line, "%s: id is used twice", who)
		}
		seen[l.ID] = true
		if l.Source == "" && strings.TrimSpace(l.When) == "" {
			add(p, "required", l.line, "%s: give a source (declared in the agent's manifest), a when condition, or both", who)
		}
		if l.Source != "" && !ValidLabel(l.Source) {
			add(p+".source", "invalid_format", l.line, "%s: source %q must match %s", who, l.Source, labelNameRe)
		}
		if len(l.When) > 4096 {
			add(p+".when", "too_long", l.line, "%s: when must be at most 4096 bytes", who)
		}
		if len(l.Add) == 0 && l.Source != "" {
			l.Add = []string{l.Source}
		}
		if len(l.Add) == 0 {
			add(p+".add", "required", l.line, "%s: add (the labels to set) is required without a source", who)
		}
		for j, name := range l.Add {
			if !ValidLabel(name) {
				add(fmt.Sprintf("%s.add[%d]", p, j), "invalid_format", l.line, "%s: label %q must match %s", who, name, labelNameRe)
			}
		}
		switch l.OnError {
		case "", "closed", "fail_closed":
			l.OnError = ""
		case OnErrorSkip:
		default:
			add(p+".onError", "invalid_format", l.line, "%s: onError must be skip (or omitted: fail closed)", who)
		}
	}
}

type compiledLabel struct {
	policyID    string
	rule        LabelRule
	prg         cel.Program // nil: no when condition
	skipOnError bool
}

// compileLabels compiles d's label rules with the same environments as
// its rules (typed, when d declares inputs, for the check only).
func (c *Compiler) compileLabels(d Document, typed *cel.Env) ([]compiledLabel, []apperr.FieldError) {
	var out []compiledLabel
	var errs []apperr.FieldError
	for i, l := range d.Labels {
		cl := compiledLabel{policyID: d.ID, rule: l, skipOnError: l.OnError == OnErrorSkip}
		if strings.TrimSpace(l.When) != "" {
			path := fmt.Sprintf("labels[%d].when", i)
			where := "label rule " + l.ID
			if l.line > 0 {
				where = fmt.Sprintf("line %d: label rule %s", l.line, l.ID)
			}
			prg, fe := c.program(l.When, typed, path, where)
			if fe != nil {
				errs = append(errs, *fe)
				continue
			}
			cl.prg = prg
		}
		out = append(out, cl)
	}
	return out, errs
}

// labelUse is what a rule's condition reads of session.labels.
type labelUse struct {
	reads bool
	// names are the string literals of the condition: the labels it can
	// name, used to explain a match by the records that set them.
	names []string
}

// labelsUsed walks a condition for reads of session.labels. A bare
// `session` (passed whole to a function or compared) counts as reading
// them: it could reach them.
func labelsUsed(e celast.Expr) labelUse {
	var u labelUse
	parents := map[int64]bool{} // ids of `session` idents under a select of another field
	celast.PreOrderVisit(e, celast.NewExprVisitor(func(x celast.Expr) {
		switch x.Kind() {
		case celast.SelectKind:
			s := x.AsSelect()
			if op := s.Operand(); op.Kind() == celast.IdentKind && op.AsIdent() == "session" {
				if s.FieldName() == "labels" {
					u.reads = true
				}
				parents[op.ID()] = true
			}
		case celast.IdentKind:
			if x.AsIdent() == "session" && !parents[x.ID()] {
				u.reads = true
			}
		case celast.LiteralKind:
			if s, ok := x.AsLiteral().Value().(string); ok && ValidLabel(s) && !slices.Contains(u.names, s) {
				u.names = append(u.names, s)
			}
		}
	}))
	return u
}

// ReadsLabels reports whether any rule of the pack reads session.labels:
// only then does a decision need the session's labels.
func (p *Pack) ReadsLabels() bool { return p != nil && p.readsLabels }

// LabelRules counts the pack's label rules: when there are any, a
// decision may add labels to its session.
func (p *Pack) LabelRules() int {
	if p == nil {
		return 0
	}
	return len(p.labels)
}

// sessionLabelsVal is session.labels as CEL sees it: the label names, or,
// when the store could not be read, an error, so that every rule that
// tests a label fails closed (it applies whenever some set of labels
// could make it hold) while rules that do not are unaffected.
func sessionLabelsVal(s *Session) any {
	if s.LabelsUnavailable != "" {
		return types.NewErr("session labels are unavailable: %s", s.LabelsUnavailable)
	}
	names := make([]string, len(s.Labels))
	for i, l := range s.Labels {
		names[i] = l.Name
	}
	return names
}

// evalLabels adds to d the labels the action gives its session.
func (p *Pack) evalLabels(d *Decision, in *Input, act *lazyActivation, host string) {
	for i := range p.labels {
		l := &p.labels[i]
		if l.rule.Source != "" && !declaresSource(in.Agent.Sources, in.Action.Tool, host, l.rule.Source) {
			continue
		}
		var evalErr string
		if l.prg != nil {
			out, _, err := l.prg.Eval(act)
			if err == nil && out.Type() != types.BoolType {
				err = fmt.Errorf("condition evaluated to %s, not a bool", out.Type().TypeName())
			}
			switch {
			case err != nil && l.skipOnError:
				d.Errors = append(d.Errors, fmt.Sprintf("%s/labels/%s: %v (%s)", l.policyID, l.rule.ID, err, errSkipped))
				continue
			case err != nil:
				d.Errors = append(d.Errors, fmt.Sprintf("%s/labels/%s: %v (labels added: fails closed)", l.policyID, l.rule.ID, err))
				evalErr = err.Error()
			case out != types.True:
				continue
			}
		}
		for _, name := range l.rule.Add {
			if in.Session.HasLabel(name) || slices.ContainsFunc(d.Labels, func(a LabelAdd) bool { return a.Name == name }) {
				continue // the first record that set a label stays its cause
			}
			d.Labels = append(d.Labels, LabelAdd{Name: name, PolicyID: l.policyID, RuleID: l.rule.ID, Error: evalErr})
		}
	}
}

// declaresSource reports whether the manifest's sources give source to
// the tool or to the destination host (matched like declared
// destinations: host, host:port or *.domain).
func declaresSource(sources map[string][]string, tool, host, source string) bool {
	if len(sources) == 0 {
		return false
	}
	if tool != "" && slices.Contains(sources[tool], source) {
		return true
	}
	if host == "" {
		return false
	}
	for k, labels := range sources {
		if slices.Contains(labels, source) && hostListed([]string{k}, host) {
			return true
		}
	}
	return false
}

// HasLabel reports whether the session carries the label.
func (s Session) HasLabel(name string) bool {
	return slices.ContainsFunc(s.Labels, func(l SessionLabel) bool { return l.Name == name })
}

// explainLabels attaches to a match of a rule that reads labels the
// records that set the labels it names (all of the session's, if it names
// none literally), and says so in its message.
func explainLabels(m *Match, use labelUse, s *Session) {
	if s.LabelsUnavailable != "" {
		m.Message = strings.TrimSpace(m.Message + " (session labels unavailable: decided as if any label could be set)")
		return
	}
	for _, l := range s.Labels {
		if len(use.names) == 0 || slices.Contains(use.names, l.Name) {
			m.Labels = append(m.Labels, l)
		}
	}
	if len(m.Labels) == 0 {
		return
	}
	parts := make([]string, len(m.Labels))
	for i, l := range m.Labels {
		parts[i] = l.Explain()
	}
	m.Message = strings.TrimSpace(m.Message + " (" + strings.Join(parts, "; ") + ")")
}

// Explain says which record set the label.
func (l SessionLabel) Explain() string {
	by := "decision " + l.DecisionID
	if l.EventID != "" {
		by = "event " + l.EventID + " (" + by + ")"
	}
	rule := l.RuleID
	if l.PolicyID != "" {
		rule = l.PolicyID + "/labels/" + l.RuleID
	}
	return fmt.Sprintf("session label %s was set by %s, rule %s, at %s", l.Name, by, rule, l.At.UTC().Format(time.RFC3339Nano))
}

func orEmptySources(m map[string][]string) map[string][]string {
	if m == nil {
		return map[string][]string{}
	}
	return m
}

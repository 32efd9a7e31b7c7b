package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Document is a policy as its author writes it (YAML or JSON).
//
// A document either lists rules with CEL conditions, or (the Kaplaix
// form) carries exact-match Conditions and a DefaultDecision, which is
// mapped to a single rule.
type Document struct {
	ID          string `yaml:"id,omitempty" json:"id,omitempty"`
	Name        string `yaml:"name" json:"name"`
	Description string `yaml:"description,omitempty" json:"description,omitempty"`
	// Enabled defaults to true; a disabled policy is kept but not packed.
	Enabled  *bool  `yaml:"enabled,omitempty" json:"enabled,omitempty"`
	Priority int    `yaml:"priority,omitempty" json:"priority,omitempty"`
	Rules    []Rule `yaml:"rules,omitempty" json:"rules,omitempty"`

	// Inputs declares the context fields ("amount") and tool arguments
	// ("arguments.amount") the rules read, with their types and bounds. Rules are type-checked against them when
	// the policy is compiled, and a request that violates one is refused
	// before it is decided (see Pack.CheckInput).
	Inputs map[string]InputSpec `yaml:"inputs,omitempty" json:"inputs,omitempty"`

	// Labels are the data-flow label rules: actions they match mark their
	// session, and rules read the marks as session.labels (labels.go).
	Labels []LabelRule `yaml:"labels,omitempty" json:"labels,omitempty"`

	// Kaplaix form.
	Conditions      map[string]string `yaml:"conditions,omitempty" json:"conditions,omitempty"`
	DefaultDecision string            `yaml:"defaultDecision,omitempty" json:"defaultDecision,omitempty"`

	// Tests are the policy's test cases (testcase.go): stored with it,
	// checked when it is parsed, run by POST /v1/policies/test. They do
	// not take part in decisions and are left out of the pack hash.
	Tests []TestCase `yaml:"tests,omitempty" json:"tests,omitempty"`
}

// Rule is one condition and what follows when it holds.
type Rule struct {
	ID string `yaml:"id" json:"id"`
	// When is a CEL expression over action, context, agent, principal,
	// tenant and session; it must evaluate to a bool.
	When            string   `yaml:"when" json:"when"`
	Outcome         string   `yaml:"outcome" json:"outcome"`
	ReasonCodes     []string `yaml:"reasonCodes,omitempty" json:"reasonCodes,omitempty"`
	Message         string   `yaml:"message,omitempty" json:"message,omitempty"`
	ApprovalTimeout string   `yaml:"approvalTimeout,omitempty" json:"approvalTimeout,omitempty"`
	// OnExpiry is what an unanswered approval becomes at its deadline:
	// "reject" (the default) or "approve".
	OnExpiry string `yaml:"onExpiry,omitempty" json:"onExpiry,omitempty"`
	// Approvals says who must approve a require_approval rule's action
	// (M-of-N distinct people from reviewer groups, escalation); nil: one
	// approval by anyone allowed to decide, never the one who asked.
	Approvals *ApprovalSpec `yaml:"approvals,omitempty" json:"approvals,omitempty"`
	// OnError is what a condition that fails to evaluate (a missing or
	// mistyped attribute, the cost limit) means. Empty, the default,
	// fails closed: the rule applies if that is stricter than not
	// applying. "skip" is the explicit opt-out: the rule does not match.
	OnError string `yaml:"onError,omitempty" json:"onError,omitempty"`

	// Kaplaix rule-list form: instead of when and outcome, a rule may give
	// exact-match Conditions (KaplaixConditionFields) and a Decision;
	// Normalize derives when and outcome from them. Priority orders the
	// rules, higher first; it does not let a rule override a stricter one
	// (docs/policies.md).
	Decision   string            `yaml:"decision,omitempty" json:"decision,omitempty"`
	Priority   int               `yaml:"priority,omitempty" json:"priority,omitempty"`
	Conditions map[string]string `yaml:"conditions,omitempty" json:"conditions,omitempty"`

	line int
}

// DefaultRuleID names the rule Normalize derives from a rule list's
// defaultDecision: it holds when no other rule of the policy does.
const DefaultRuleID = "default_decision"

// kaplaix reports whether r is written in the Kaplaix rule-list form.
func (r Rule) kaplaix() bool { return r.Decision != "" || r.Conditions != nil }

// RuleList reports whether d is in the Kaplaix rule-list form (rules
// with decision and conditions; defaultDecision applies when none holds)
// rather than the single-rule form (policy-level conditions).
func (d Document) RuleList() bool {
	return slices.ContainsFunc(d.Rules, Rule.kaplaix)
}

// OnErrorSkip is the Rule.OnError value that makes an erroring condition
// a non-match.
const OnErrorSkip = "skip"

// ArgumentsPrefix marks an input that is a tool argument
// (action.arguments.<name>: Kaizen's and the events' action fields)
// rather than a context field.
const ArgumentsPrefix = "arguments."

// Input types a policy may declare.
const (
	InputNumber = "number"
	InputString = "string"
	InputBool   = "bool"
	InputList   = "list"
	InputMap    = "map"
)

// InputTypes lists the declarable input types.
var InputTypes = []string{InputNumber, InputString, InputBool, InputList, InputMap}

// InputSpec declares one context field a policy reads.
type InputSpec struct {
	// Type is number, string, bool, list or map.
	Type string `yaml:"type" json:"type"`
	// Required fields must be present (and not null) in every request
	// the policy applies to; optional ones are checked when present.
	Required bool `yaml:"required,omitempty" json:"required,omitempty"`
	// Enum lists the allowed values (strings or numbers).
	Enum []any `yaml:"enum,omitempty" json:"enum,omitempty"`
	// Pattern is an RE2 expression a string must match (unanchored:
	// write ^…$ to match the whole value).
	Pattern string `yaml:"pattern,omitempty" json:"pattern,omitempty"`
	// Min and Max bound a number's value, or the length of a string,
	// list or map.
	Min *float64 `yaml:"min,omitempty" json:"min,omitempty"`
	Max *float64 `yaml:"max,omitempty" json:"max,omitempty"`

	line int
}

// IsEnabled reports whether the policy takes part in decisions.
func (d Document) IsEnabled() bool { return d.Enabled == nil || *d.Enabled }

var (
	ruleIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)
	// inputNameRe keeps input names CEL identifiers, so that a rule can
	// read them as context.<name>, or action.arguments.<name> for
	// "arguments.<name>".
	inputNameRe = regexp.MustCompile(`^(` + regexp.QuoteMeta(ArgumentsPrefix) + `)?[A-Za-z_][A-Za-z0-9_]{0,127}$`)
	reasonRe    = regexp.MustCompile(`^[A-Z][A-Z0-9_]{0,63}$`)
	// KaplaixConditionFields are the exact-match keys the Kaplaix rule
	// form supports; each maps to the action attribute of the same name.
	KaplaixConditionFields = []string{"toolType", "operation", "targetSystem", "initiatorType"}
)

// Parse reads a YAML (or JSON) policy document and checks its shape.
// Errors are *apperr.Error validation errors whose details carry the path
// ("rules[2].outcome") and, in the message, the line and rule id.
func Parse(src []byte) (Document, error) {
	d, _, err := parse(src, false)
	return d, err
}

// ParseCompat is Parse for the compatibility doors (POST and PATCH
// /v1/policies): a top-level key the schema lacks is ignored and
// returned, so that a client written for another product can send its
// own metadata. Keys that change enforcement stay strict: any unknown key
// inside rules or inputs ("whenn"), and a top-level key that looks like a
// misspelling of a known one ("defaultDecison"), are still errors.
func ParseCompat(src []byte) (Document, []string, error) {
	return parse(src, true)
}

// documentKeys are the top-level keys of a policy document.
var documentKeys = []string{"id", "name", "description", "enabled", "priority", "rules", "inputs", "labels", "conditions", "defaultDecision", "tests"}

// IsDocumentKey reports whether k is a top-level policy document key.
func IsDocumentKey(k string) bool { return slices.Contains(documentKeys, k) }

// LooksLikeDocumentKey reports whether k is a near miss of a document
// key (an edit distance of at most 2, ignoring case), the mark of a typo
// that must not be ignored.
func LooksLikeDocumentKey(k string) bool {
	for _, known := range documentKeys {
		if editDistance(strings.ToLower(k), strings.ToLower(known)) <= 2 {
			return true
		}
	}
	return false
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur := make([]int, len(b)+1)
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev = cur
	}
	return prev[len(b)]
}

func parse(src []byte, lenient bool) (Document, []string, error) {
	var root yaml.Node
	if err := yaml.Unmarshal(src, &root); err != nil {
		return Document{}, nil, apperr.Validation("policy is not valid YAML",
			apperr.FieldError{Path: "", Code: "malformed_yaml", Message: err.Error()})
	}
	if len(root.Content) == 0 {
		return Document{}, nil, apperr.Validation("policy is empty", apperr.FieldError{Path: "", Code: "required", Message: "empty document"})
	}
	dec := yaml.NewDecoder(bytes.NewReader(src))
	dec.KnownFields(true)
	var d Document
	var ignored []string
	if err := dec.Decode(&d); err != nil {
		serr := schemaError(&root, err)
		if ignored = ignorable(serr); !lenient || ignored == nil {
			return Document{}, nil, serr
		}
		// Only ignorable top-level keys: decode again without them.
		d = Document{}
		if err := yaml.Unmarshal(src, &d); err != nil {
			return Document{}, nil, schemaError(&root, err)
		}
	}
	// Attach source lines to rules and inputs for error messages.
	if doc := root.Content[0]; doc.Kind == yaml.MappingNode {
		for i := 0; i+1 < len(doc.Content); i += 2 {
			switch v := doc.Content[i+1]; {
			case doc.Content[i].Value == "rules" && v.Kind == yaml.SequenceNode:
				for j, n := range v.Content {
					if j < len(d.Rules) {
						d.Rules[j].line = n.Line
					}
				}
			case doc.Content[i].Value == "labels" && v.Kind == yaml.SequenceNode:
				for j, n := range v.Content {
					if j < len(d.Labels) {
						d.Labels[j].line = n.Line
					}
				}
			case doc.Content[i].Value == "tests" && v.Kind == yaml.SequenceNode:
				for j, n := range v.Content {
					if j < len(d.Tests) {
						d.Tests[j].Line = n.Line
					}
				}
			case doc.Content[i].Value == "inputs" && v.Kind == yaml.MappingNode:
				for j := 0; j+1 < len(v.Content); j += 2 {
					if in, ok := d.Inputs[v.Content[j].Value]; ok {
						in.line = v.Content[j].Line
						d.Inputs[v.Content[j].Value] = in
					}
				}
			}
		}
	}
	if err := d.Normalize(); err != nil {
		return Document{}, nil, err
	}
	return d, ignored, nil
}

// ignorable returns the keys of a schema error when every one of its
// errors is an unknown top-level key that is no near miss of a known one,
// and nil otherwise.
func ignorable(err error) []string {
	var ae *apperr.Error
	if !errors.As(err, &ae) || len(ae.Details) == 0 {
		return nil
	}
	keys := make([]string, 0, len(ae.Details))
	for _, fe := range ae.Details {
		if fe.Code != "unknown_field" || fe.Path == "" || strings.ContainsAny(fe.Path, ".[") || LooksLikeDocumentKey(fe.Path) {
			return nil
		}
		keys = append(keys, fe.Path)
	}
	return keys
}

// Normalize maps the Kaplaix form to a rule and checks everything but the
// CEL expressions (Compile checks those).
func (d *Document) Normalize() error {
	var errs []apperr.FieldError
	add := func(path, code string, line int, format string, args ...any) {
		msg := fmt.Sprintf(format, args...)
		if line > 0 {
			msg = fmt.Sprintf("line %d: %s", line, msg)
		}
		errs = append(errs, apperr.FieldError{Path: path, Code: code, Message: msg})
	}
	if strings.TrimSpace(d.Name) == "" {
		add("name", "required", 0, "name is required")
	} else if len(d.Name) > 200 {
		add("name", "too_long", 0, "name must be at most 200 bytes")
	}
	if d.RuleList() {
		if len(d.Conditions) > 0 {
			add("conditions", "invalid_format", 0, "use either policy-level conditions or rules with conditions, not both")
		}
		d.normalizeRuleList(add)
	} else if len(d.Conditions) > 0 || d.DefaultDecision != "" {
		r, err := kaplaixRule(d)
		switch {
		case err != nil:
			add("conditions", "invalid_format", 0, "%v", err)
		case len(d.Rules) > 1 || (len(d.Rules) == 1 && (d.Rules[0].When != r.When || d.Rules[0].ID != r.ID)):
			// One rule equal to the mapped one is what Normalize itself
			// produced; anything else mixes the two forms.
			add("conditions", "invalid_format", 0, "use either rules or conditions/defaultDecision, not both")
		default:
			d.Rules = []Rule{r}
		}
	}
	if len(d.Rules) == 0 && len(d.Labels) == 0 && len(errs) == 0 {
		add("rules", "required", 0, "a policy needs at least one rule (or label rule)")
	}
	if len(d.Rules) > 1000 {
		add("rules", "too_long", 0, "a policy holds at most 1000 rules")
	}
	seen := map[string]bool{}
	for i := range d.Rules {
		r := &d.Rules[i]
		p := fmt.Sprintf("rules[%d]", i)
		who := "rule " + r.ID
		if r.ID == "" {
			who = fmt.Sprintf("rule #%d", i+1)
		}
		switch {
		case r.ID == "":
			add(p+".id", "required", r.line, "%s: id is required", who)
		case !ruleIDRe.MatchString(r.ID):
			add(p+".id", "invalid_format", r.line, "%s: id must be letters, digits and _.- (at most 128)", who)
		case seen[r.ID]:
			add(p+".id", "duplicate", r.line, "%s: id is used twice", who)
		}
		seen[r.ID] = true
		if strings.TrimSpace(r.When) == "" {
			add(p+".when", "required", r.line, "%s: when (a CEL condition) is required", who)
		} else if len(r.When) > 4096 {
			add(p+".when", "too_long", r.line, "%s: when must be at most 4096 bytes", who)
		}
		if o, err := ParseOutcome(r.Outcome); err != nil {
			add(p+".outcome", "invalid_format", r.line, "%s: %v", who, err)
		} else {
			r.Outcome = o.String()
		}
		if len(r.ReasonCodes) == 0 && ruleIDRe.MatchString(r.ID) {
			r.ReasonCodes = []string{defaultReason(r.ID)}
		}
		for j, c := range r.ReasonCodes {
			if !reasonRe.MatchString(c) {
				add(fmt.Sprintf("%s.reasonCodes[%d]", p, j), "invalid_format", r.line, "%s: reason code %q must be UPPER_SNAKE_CASE", who, c)
			}
		}
		if r.ApprovalTimeout != "" {
			if t, err := time.ParseDuration(r.ApprovalTimeout); err != nil || t <= 0 || t > 30*24*time.Hour {
				add(p+".approvalTimeout", "invalid_format", r.line, "%s: approvalTimeout must be a duration such as 30m, at most 720h", who)
			}
		}
		switch r.OnExpiry {
		case "", "reject", "rejected":
			r.OnExpiry = ""
		case "approve", "approved":
			r.OnExpiry = "approve"
		default:
			add(p+".onExpiry", "invalid_format", r.line, "%s: onExpiry must be approve or reject", who)
		}
		checkApprovals(r, p, who, add)
		if len(r.Message) > 1000 {
			add(p+".message", "too_long", r.line, "%s: message must be at most 1000 bytes", who)
		}
		switch r.OnError {
		case "", "closed", "fail_closed":
			r.OnError = ""
		case OnErrorSkip:
		default:
			add(p+".onError", "invalid_format", r.line, "%s: onError must be skip (or omitted: fail closed)", who)
		}
	}
	d.normalizeLabels(add)
	if len(d.Inputs) > 200 {
		add("inputs", "too_long", 0, "a policy declares at most 200 inputs")
	}
	for _, name := range sortedKeys(d.Inputs) {
		spec := d.Inputs[name]
		for _, fe := range spec.normalize(name) {
			add(fe.Path, fe.Code, spec.line, "%s", fe.Message)
		}
		d.Inputs[name] = spec
	}
	d.checkTests(add)
	if len(errs) > 0 {
		return apperr.Validation("policy is invalid", errs...)
	}
	return nil
}

// normalize checks one input declaration and stores its enum numbers as
// float64, the type JSON gives them.
func (s *InputSpec) normalize(name string) []apperr.FieldError {
	p := "inputs." + name
	var errs []apperr.FieldError
	add := func(path, code, format string, args ...any) {
		errs = append(errs, apperr.FieldError{Path: path, Code: code, Message: "input " + name + ": " + fmt.Sprintf(format, args...)})
	}
	if !inputNameRe.MatchString(name) {
		add(p, "invalid_format", "name must be letters, digits and _ and not start with a digit (at most 128), optionally after %q", ArgumentsPrefix)
	}
	if !slices.Contains(InputTypes, s.Type) {
		add(p+".type", "invalid_format", "type must be one of %s", strings.Join(InputTypes, ", "))
		return errs
	}
	if len(s.Enum) > 0 && s.Type != InputString && s.Type != InputNumber {
		add(p+".enum", "invalid_format", "enum applies to string and number inputs only")
	}
	for i, v := range s.Enum {
		n, isNum := number(v)
		switch {
		case s.Type == InputNumber && isNum:
			s.Enum[i] = n
		case s.Type == InputString:
			if _, ok := v.(string); !ok {
				add(fmt.Sprintf("%s.enum[%d]", p, i), "invalid_type", "enum values must be strings")
			}
		case s.Type == InputNumber:
			add(fmt.Sprintf("%s.enum[%d]", p, i), "invalid_type", "enum values must be numbers")
		}
	}
	if s.Pattern != "" {
		if s.Type != InputString {
			add(p+".pattern", "invalid_format", "pattern applies to string inputs only")
		} else if _, err := regexp.Compile(s.Pattern); err != nil {
			add(p+".pattern", "invalid_format", "pattern is not a valid RE2 expression: %v", err)
		}
	}
	if (s.Min != nil || s.Max != nil) && s.Type == InputBool {
		add(p, "invalid_format", "min and max do not apply to bool inputs")
	}
	if s.Min != nil && s.Max != nil && *s.Min > *s.Max {
		add(p+".min", "invalid_format", "min is greater than max")
	}
	return errs
}

// number reports whether v is a number of any Go numeric type (YAML and
// in-process callers give ints; JSON gives float64), and its value.
func number(v any) (float64, bool) {
	switch n := v.(type) {
	case float64:
		return n, true
	case float32:
		return float64(n), true
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case int32:
		return float64(n), true
	case uint64:
		return float64(n), true
	case uint32:
		return float64(n), true
	case uint:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	}
	return 0, false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func defaultReason(id string) string {
	b := []byte(strings.ToUpper(id))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	s := "RULE_" + string(b)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

// normalizeRuleList derives when and outcome of each Kaplaix-form rule,
// orders the rules by priority (higher first, ties in list order) and
// derives the default rule from defaultDecision. It is idempotent, so a
// stored document normalizes to itself.
func (d *Document) normalizeRuleList(add func(path, code string, line int, format string, args ...any)) {
	for i := range d.Rules {
		r := &d.Rules[i]
		if !r.kaplaix() {
			continue
		}
		p := fmt.Sprintf("rules[%d]", i)
		when, err := conjunction(r.Conditions)
		if err != nil {
			add(p+".conditions", "invalid_format", r.line, "rule %s: %v", r.ID, err)
			continue
		}
		if r.When != "" && r.When != when {
			add(p+".when", "invalid_format", r.line, "rule %s: use either when or conditions, not both", r.ID)
		}
		r.When = when
		o, err := ParseOutcome(r.Decision)
		if err != nil {
			add(p+".decision", "invalid_format", r.line, "rule %s: %v", r.ID, err)
			continue
		}
		if prev, perr := ParseOutcome(r.Outcome); r.Outcome != "" && (perr != nil || prev != o) {
			add(p+".outcome", "invalid_format", r.line, "rule %s: use either outcome or decision, not both", r.ID)
		}
		r.Outcome = o.String()
	}
	if d.DefaultDecision != "" {
		d.Rules = slices.DeleteFunc(d.Rules, func(r Rule) bool { return r.ID == DefaultRuleID && !r.kaplaix() })
	}
	slices.SortStableFunc(d.Rules, func(a, b Rule) int { return b.Priority - a.Priority })
	if d.DefaultDecision == "" {
		return
	}
	o, err := ParseOutcome(d.DefaultDecision)
	if err != nil {
		add("defaultDecision", "invalid_format", 0, "%v", err)
		return
	}
	if o == Allow {
		return // what a policy decides when no rule holds anyway
	}
	held := make([]string, 0, len(d.Rules))
	for _, r := range d.Rules {
		held = append(held, "("+r.When+")")
	}
	when := "true"
	if len(held) > 0 {
		when = "!(" + strings.Join(held, " || ") + ")"
	}
	d.Rules = append(d.Rules, Rule{ID: DefaultRuleID, When: when, Outcome: o.String(), ReasonCodes: []string{"DEFAULT_DECISION"}})
}

// conjunction maps exact-match conditions to a CEL conjunction ("true"
// for none).
func conjunction(conds map[string]string) (string, error) {
	keys := make([]string, 0, len(conds))
	for k := range conds {
		if !slices.Contains(KaplaixConditionFields, k) {
			return "", fmt.Errorf("unknown condition %q (want %s)", k, strings.Join(KaplaixConditionFields, ", "))
		}
		keys = append(keys, k)
	}
	sort.Strings(keys)
	terms := make([]string, 0, len(keys))
	for _, k := range keys {
		terms = append(terms, fmt.Sprintf("action.%s == %q", k, conds[k]))
	}
	if len(terms) == 0 {
		return "true", nil
	}
	return strings.Join(terms, " && "), nil
}

// kaplaixRule maps exact-match conditions to a CEL conjunction.
func kaplaixRule(d *Document) (Rule, error) {
	decision := d.DefaultDecision
	if decision == "" {
		decision = "requires_review"
	}
	when, err := conjunction(d.Conditions)
	if err != nil {
		return Rule{}, err
	}
	id := "default"
	if d.ID != "" && ruleIDRe.MatchString(d.ID) {
		id = d.ID
	}
	return Rule{ID: id, When: when, Outcome: decision}, nil
}

// unknownField matches yaml.v3's message for a key the schema lacks.
var unknownField = regexp.MustCompile(`^line (\d+): field (\S+) not found in type`)

// schemaError turns a decode error into field errors with the path of
// each offending key ("rules[0].whenn"), found in the parsed node tree.
func schemaError(root *yaml.Node, err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return apperr.Validation("policy does not match the schema",
			apperr.FieldError{Path: "", Code: "invalid_type", Message: err.Error()})
	}
	fields := make([]apperr.FieldError, 0, len(te.Errors))
	for _, msg := range te.Errors {
		fe := apperr.FieldError{Path: "", Code: "invalid_type", Message: msg}
		if m := unknownField.FindStringSubmatch(msg); m != nil {
			line, _ := strconv.Atoi(m[1])
			fe.Code = "unknown_field"
			fe.Path = keyPath(root, m[2], line, "")
		}
		fields = append(fields, fe)
	}
	return apperr.Validation("policy does not match the schema", fields...)
}

// keyPath finds the mapping key named key on line and returns its path,
// or "" if it is not found.
func keyPath(n *yaml.Node, key string, line int, path string) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if p := keyPath(c, key, line, path); p != "" {
				return p
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			p := k.Value
			if path != "" {
				p = path + "." + k.Value
			}
			if k.Value == key && k.Line == line {
				return p
			}
			if found := keyPath(n.Content[i+1], key, line, p); found != "" {
				return found
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if p := keyPath(c, key, line, fmt.Sprintf("%s[%d]", path, i)); p != "" {
				return p
			}
		}
	}
	return ""
}

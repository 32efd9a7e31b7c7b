package policy

// Policy test cases: an input, the org policy, and what the decision must
// be. They are the fixtures of `vigil policy test` and the `tests:`
// section a policy document may carry (docs/policies.md#test-cases); both
// run through Pack.CheckInput and Pack.Evaluate, the evaluation the
// policy service makes.

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
)

// MaxTestCases bounds the test cases one document may carry.
const MaxTestCases = 200

// ExpectRejected is the expect.decision of a case whose request a
// declared input refuses (400 invalid_request before deciding).
const ExpectRejected = "invalid_request"

// TestAgent is the agent's state in a test case.
type TestAgent struct {
	ID           string   `yaml:"id,omitempty" json:"id,omitempty"`
	Declared     bool     `yaml:"declared,omitempty" json:"declared,omitempty"`
	Tools        []string `yaml:"tools,omitempty" json:"tools,omitempty"`
	Destinations []string `yaml:"destinations,omitempty" json:"destinations,omitempty"`
	Paused       bool     `yaml:"paused,omitempty" json:"paused,omitempty"`
	JudgeEnabled bool     `yaml:"judgeEnabled,omitempty" json:"judgeEnabled,omitempty"`
	// Sources are the manifest's data-flow sources (tool or destination →
	// labels), for label rules with source:.
	Sources map[string][]string `yaml:"sources,omitempty" json:"sources,omitempty"`
}

// TestAction is the action of a test case.
type TestAction struct {
	Kind          string         `yaml:"kind,omitempty" json:"kind,omitempty"`
	Tool          string         `yaml:"tool,omitempty" json:"tool,omitempty"`
	Target        string         `yaml:"target,omitempty" json:"target,omitempty"`
	Publisher     string         `yaml:"publisher,omitempty" json:"publisher,omitempty"`
	Operation     string         `yaml:"operation,omitempty" json:"operation,omitempty"`
	ToolType      string         `yaml:"toolType,omitempty" json:"toolType,omitempty"`
	TargetSystem  string         `yaml:"targetSystem,omitempty" json:"targetSystem,omitempty"`
	InitiatorType string         `yaml:"initiatorType,omitempty" json:"initiatorType,omitempty"`
	Arguments     map[string]any `yaml:"arguments,omitempty" json:"arguments,omitempty"`
	Metadata      map[string]any `yaml:"metadata,omitempty" json:"metadata,omitempty"`
}

// TestSession is what a test case's decision sees of its session.
type TestSession struct {
	ID       string `yaml:"id,omitempty" json:"id,omitempty"`
	Events   int    `yaml:"events,omitempty" json:"events,omitempty"`
	Blocks   int    `yaml:"blocks,omitempty" json:"blocks,omitempty"`
	Warnings int    `yaml:"warnings,omitempty" json:"warnings,omitempty"`
	// Labels the session carries (rules read session.labels); their cause
	// is given as the record "fixture".
	Labels []string `yaml:"labels,omitempty" json:"labels,omitempty"`
	// LabelsUnavailable is a label store that cannot be read: rules
	// testing session.labels fail closed.
	LabelsUnavailable bool `yaml:"labelsUnavailable,omitempty" json:"labelsUnavailable,omitempty"`
}

func (s TestSession) session() Session {
	out := Session{ID: s.ID, Events: s.Events, Blocks: s.Blocks, Warnings: s.Warnings}
	for _, l := range s.Labels {
		out.Labels = append(out.Labels, SessionLabel{Name: l, DecisionID: "fixture", RuleID: "fixture"})
	}
	if s.LabelsUnavailable {
		out.LabelsUnavailable = "the fixture says the label store is unavailable"
	}
	return out
}

// TestPrincipal is who asks in a test case.
type TestPrincipal struct {
	KeyID string `yaml:"keyId,omitempty" json:"keyId,omitempty"`
	Role  string `yaml:"role,omitempty" json:"role,omitempty"`
}

// TestBudget is a budget's state in a test case: rules read it as
// budget.<name>; exceeded (default: used > limit) adds its outcome
// (default block) with BUDGET_EXCEEDED; unavailable is a budget whose
// usage could not be read (taken as exceeded, no used).
type TestBudget struct {
	Used        float64 `yaml:"used,omitempty" json:"used,omitempty"`
	Limit       float64 `yaml:"limit,omitempty" json:"limit,omitempty"`
	Metric      string  `yaml:"metric,omitempty" json:"metric,omitempty"`
	Window      string  `yaml:"window,omitempty" json:"window,omitempty"`
	Outcome     string  `yaml:"outcome,omitempty" json:"outcome,omitempty"`
	Exceeded    *bool   `yaml:"exceeded,omitempty" json:"exceeded,omitempty"`
	Unavailable bool    `yaml:"unavailable,omitempty" json:"unavailable,omitempty"`
}

// TestInput is everything a test case's decision is made on.
type TestInput struct {
	// Tenant defaults to the pack's tenant.
	Tenant    string         `yaml:"tenant,omitempty" json:"tenant,omitempty"`
	Agent     TestAgent      `yaml:"agent,omitempty" json:"agent,omitzero"`
	Action    TestAction     `yaml:"action,omitempty" json:"action,omitzero"`
	Context   map[string]any `yaml:"context,omitempty" json:"context,omitempty"`
	Session   TestSession    `yaml:"session,omitempty" json:"session,omitzero"`
	Principal TestPrincipal  `yaml:"principal,omitempty" json:"principal,omitzero"`
	// Budgets are the budgets covering the decision, by name.
	Budgets map[string]TestBudget `yaml:"budgets,omitempty" json:"budgets,omitempty"`
}

// TestOrg is the org policy of a test case (default: mode off).
type TestOrg struct {
	Mode         string   `yaml:"mode,omitempty" json:"mode,omitempty"`
	Tools        []string `yaml:"tools,omitempty" json:"tools,omitempty"`
	Destinations []string `yaml:"destinations,omitempty" json:"destinations,omitempty"`
	Publishers   []string `yaml:"publishers,omitempty" json:"publishers,omitempty"`
}

// OrgPolicy checks the mode and returns the org policy.
func (o TestOrg) OrgPolicy() (OrgPolicy, error) {
	mode := o.Mode
	if mode == "" {
		mode = OrgOff
	}
	switch mode {
	case OrgOff, OrgBlocklist, OrgAllowlist:
	default:
		return OrgPolicy{}, fmt.Errorf("org.mode %q: want off, blocklist or allowlist", o.Mode)
	}
	return OrgPolicy{Mode: mode, Tools: o.Tools, Destinations: o.Destinations, Publishers: o.Publishers}, nil
}

// TestExpect is what a test case's decision must be.
type TestExpect struct {
	// Decision is an outcome (or a synonym), or invalid_request: the
	// request is refused by a declared input.
	Decision string `yaml:"decision" json:"decision"`
	// ReasonCodes, when given, must equal the decision's exactly, in
	// order.
	ReasonCodes []string `yaml:"reasonCodes,omitempty" json:"reasonCodes,omitempty"`
	// Rules, when given, must each be among the matching rules, named
	// "rule" or "policy/rule".
	Rules []string `yaml:"rules,omitempty" json:"rules,omitempty"`
}

// TestCase is one policy test case.
type TestCase struct {
	Name   string     `yaml:"name" json:"name"`
	Input  TestInput  `yaml:"input,omitempty" json:"input,omitzero"`
	Org    TestOrg    `yaml:"org,omitempty" json:"org,omitzero"`
	Expect TestExpect `yaml:"expect" json:"expect"`

	// Line is the case's line in its source (0: unknown).
	Line int `yaml:"-" json:"-"`
}

// checkTests checks the document's test cases (their expectations and
// values), each named (a case without a name is "case #n") once.
func (d *Document) checkTests(add func(path, code string, line int, format string, args ...any)) {
	if len(d.Tests) > MaxTestCases {
		add("tests", "too_long", 0, "a policy carries at most %d test cases", MaxTestCases)
		return
	}
	names := map[string]bool{}
	for i := range d.Tests {
		c := &d.Tests[i]
		p := fmt.Sprintf("tests[%d]", i)
		if c.Name == "" {
			c.Name = fmt.Sprintf("case #%d", i+1)
		}
		if len(c.Name) > 200 {
			add(p+".name", "too_long", c.Line, "test %q: name must be at most 200 bytes", c.Name[:20])
			continue
		}
		if names[c.Name] {
			add(p+".name", "duplicate", c.Line, "test %q: the name is used twice", c.Name)
		}
		names[c.Name] = true
		if _, err := c.Prepare(""); err != nil {
			add(p, "invalid_test", c.Line, "test %q: %v", c.Name, err)
		}
	}
}

// PreparedCase is a test case ready to evaluate.
type PreparedCase struct {
	Name    string
	Line    int
	Input   Input
	Org     OrgPolicy
	Want    Outcome
	Reasons []string // nil: not checked
	Rules   []string // nil: not checked
	// Rejected: the case expects the request to be refused (400
	// invalid_request) for violating a declared input.
	Rejected bool
}

// jsonValues gives a YAML-decoded map the types the server would see
// after decoding the same values from JSON (numbers become float64), so
// that a case evaluates exactly as a live request does.
func jsonValues(m map[string]any) (map[string]any, error) {
	if m == nil {
		return nil, nil
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// budgetStates turns a case's budgets into what a decision sees, sorted
// by name.
func budgetStates(in map[string]TestBudget) ([]BudgetState, error) {
	var out []BudgetState
	for _, name := range slices.Sorted(maps.Keys(in)) {
		b := in[name]
		st := BudgetState{Name: name, Metric: b.Metric, Window: b.Window, Used: b.Used, Limit: b.Limit,
			Outcome: Block, Exceeded: b.Used > b.Limit, Unavailable: b.Unavailable}
		if b.Outcome != "" {
			o, err := ParseOutcome(b.Outcome)
			if err != nil {
				return nil, fmt.Errorf("input.budgets.%s.outcome: %w", name, err)
			}
			st.Outcome = o
		}
		if b.Exceeded != nil {
			st.Exceeded = *b.Exceeded
		}
		if b.Unavailable {
			st.Used, st.Exceeded = 0, true
		}
		out = append(out, st)
	}
	return out, nil
}

// Prepare checks the case and builds its input; tenant is the default for
// a case that names none.
func (c TestCase) Prepare(tenant string) (PreparedCase, error) {
	in := c.Input
	if in.Tenant != "" {
		tenant = in.Tenant
	}
	ctxVals, err := jsonValues(in.Context)
	if err != nil {
		return PreparedCase{}, fmt.Errorf("input.context: %w", err)
	}
	args, err := jsonValues(in.Action.Arguments)
	if err != nil {
		return PreparedCase{}, fmt.Errorf("input.action.arguments: %w", err)
	}
	meta, err := jsonValues(in.Action.Metadata)
	if err != nil {
		return PreparedCase{}, fmt.Errorf("input.action.metadata: %w", err)
	}
	org, err := c.Org.OrgPolicy()
	if err != nil {
		return PreparedCase{}, err
	}
	if c.Expect.Decision == "" {
		return PreparedCase{}, fmt.Errorf("expect.decision is required (allow, warn, require_approval or block)")
	}
	rejected := c.Expect.Decision == ExpectRejected
	want, err := ParseOutcome(c.Expect.Decision)
	if err != nil && !rejected {
		return PreparedCase{}, fmt.Errorf("expect.decision: %w (or %s: refused by a declared input)", err, ExpectRejected)
	}
	budgets, err := budgetStates(in.Budgets)
	if err != nil {
		return PreparedCase{}, err
	}
	a := in.Action
	return PreparedCase{
		Name: c.Name, Line: c.Line,
		Input: Input{
			Tenant:    tenant,
			Principal: Principal{KeyID: in.Principal.KeyID, Role: in.Principal.Role},
			Agent: AgentState{
				ID: in.Agent.ID, Declared: in.Agent.Declared, Tools: in.Agent.Tools, Destinations: in.Agent.Destinations,
				Paused: in.Agent.Paused, JudgeEnabled: in.Agent.JudgeEnabled, Sources: in.Agent.Sources,
			},
			Action: Action{
				Kind: a.Kind, Tool: a.Tool, Target: a.Target, Publisher: a.Publisher, Operation: a.Operation,
				ToolType: a.ToolType, TargetSystem: a.TargetSystem, InitiatorType: a.InitiatorType,
				Arguments: args, Metadata: meta,
			},
			Context: ctxVals,
			Session: in.Session.session(),
			Budgets: budgets,
		},
		Org: org, Want: want, Reasons: c.Expect.ReasonCodes, Rules: c.Expect.Rules, Rejected: rejected,
	}, nil
}

// CaseResult is a test case run against a pack.
type CaseResult struct {
	Name   string `json:"name"`
	Line   int    `json:"line,omitempty"`
	Passed bool   `json:"passed"`
	// Want is the expectation in words ("require_approval
	// [AMOUNT_OVER_THRESHOLD]"); Got the actual answer, likewise.
	Want string `json:"want"`
	Got  string `json:"got"`
	// Problems says what differs, one line each (empty when passed).
	Problems []string `json:"problems"`
	// Refused lists the declared-input violations when the request would
	// be refused before deciding; Decision is then nil.
	Refused  []string  `json:"refused,omitempty"`
	Decision *Decision `json:"decision,omitempty"`
}

// MatchName names a match as test cases and reports do: "policy/rule".
func MatchName(m Match) string {
	if m.PolicyID == "" {
		return m.RuleID
	}
	return m.PolicyID + "/" + m.RuleID
}

func ruleMatched(ms []Match, want string) bool {
	return slices.ContainsFunc(ms, func(m Match) bool { return m.RuleID == want || MatchName(m) == want })
}

// Run evaluates the case with pack exactly as the policy service decides
// a request: the declared inputs first (a violation is a refusal), then
// the rules and built-in checks.
func (c PreparedCase) Run(pack *Pack) CaseResult {
	r := CaseResult{Name: c.Name, Line: c.Line, Problems: []string{}}
	r.Want = c.Want.String()
	switch {
	case c.Rejected:
		r.Want = ExpectRejected
	case c.Reasons != nil:
		r.Want += fmt.Sprintf(" %v", c.Reasons)
	}
	if bad := pack.CheckInput(c.Input); len(bad) > 0 {
		for _, fe := range bad {
			r.Refused = append(r.Refused, fe.Message)
		}
		r.Got = ExpectRejected
		if !c.Rejected {
			r.Problems = append(r.Problems, "the request would be refused before deciding: "+r.Refused[0])
		}
		r.Passed = len(r.Problems) == 0
		return r
	}
	d := pack.Evaluate(c.Input, c.Org)
	r.Decision = &d
	r.Got = fmt.Sprintf("%s %v", d.Outcome, d.ReasonCodes)
	switch {
	case c.Rejected:
		r.Problems = append(r.Problems, "the request was decided, not refused by a declared input")
	case d.Outcome != c.Want:
		r.Problems = append(r.Problems, fmt.Sprintf("decision %s, want %s", d.Outcome, c.Want))
	}
	if !c.Rejected && c.Reasons != nil && !slices.Equal(d.ReasonCodes, c.Reasons) {
		r.Problems = append(r.Problems, fmt.Sprintf("reason codes %v, want %v", d.ReasonCodes, c.Reasons))
	}
	for _, want := range c.Rules {
		if !ruleMatched(d.Matches, want) {
			r.Problems = append(r.Problems, "rule "+want+" did not match")
		}
	}
	r.Passed = len(r.Problems) == 0
	return r
}

// Replay re-decides a recorded decision with pack and org, from the
// record's stored input as it was at decision time (agent state, action,
// context, session and its labels, halts and budgets as the decision saw
// them). A decision recorded as suppressed (a false positive) stays
// suppressed when pack reaches the same signature with a warn, as the
// live service would; a pack that makes it a block or require_approval is
// not lifted.
func Replay(pack *Pack, rec DecisionRecord, org OrgPolicy) Decision {
	d := pack.Evaluate(rec.Input, org)
	if d.Suppressible() && slices.Equal(rec.Decision.ReasonCodes, []string{ReasonSuppressed}) &&
		Signature(rec.AgentID, rec.Input.Action, d.ReasonCodes) == rec.Signature {
		d.Suppress()
	}
	return d
}

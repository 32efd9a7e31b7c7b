package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"time"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/interpreter"
)

// Action is what an agent is about to do (or did), in the union of the
// three upstream shapes.
type Action struct {
	Kind      string `json:"kind,omitempty"` // tool_call, http, file, connect, …
	Tool      string `json:"tool,omitempty"`
	Target    string `json:"target,omitempty"` // host[:port], URL, path
	Publisher string `json:"publisher,omitempty"`
	// Kaplaix attributes.
	Operation     string         `json:"operation,omitempty"`
	ToolType      string         `json:"toolType,omitempty"`
	TargetSystem  string         `json:"targetSystem,omitempty"`
	InitiatorType string         `json:"initiatorType,omitempty"`
	Arguments     map[string]any `json:"arguments,omitempty"`
	Metadata      map[string]any `json:"metadata,omitempty"`
}

// Host is the target's host name without scheme, port or path, lower case.
func (a Action) Host() string {
	t := a.Target
	if i := strings.Index(t, "://"); i >= 0 {
		t = t[i+3:]
	}
	if i := strings.IndexAny(t, "/?#"); i >= 0 {
		t = t[:i]
	}
	if h, _, err := net.SplitHostPort(t); err == nil {
		t = h
	}
	return strings.ToLower(strings.Trim(t, "[]"))
}

// AgentState is what the engine knows about the acting agent.
type AgentState struct {
	ID string `json:"id"`
	// Declared is true once a manifest was posted; Tools and Destinations
	// are then the only ones expected.
	Declared     bool     `json:"declared"`
	Tools        []string `json:"tools"`
	Destinations []string `json:"destinations"`
	Paused       bool     `json:"paused"`
	JudgeEnabled bool     `json:"judgeEnabled"`
	// Sources are the manifest's data-flow sources: tool or destination →
	// the labels reading from it gives a session (see LabelRule.Source).
	Sources map[string][]string `json:"sources,omitempty"`
}

// Principal is the caller asking for the decision.
type Principal struct {
	KeyID string `json:"keyId"`
	Role  string `json:"role"`
	// Actor names the caller as the audit log does ("key:<id>",
	// "member:<email>", "service:<client>"): the guardian refuses its
	// approval of the action it asked for (separation of duties).
	Actor string `json:"actor,omitempty"`
}

// Requester is the actor that asked for a decision: Actor, or for records
// made before it was recorded, the key. Empty when neither is known.
func (p Principal) Requester() string {
	switch {
	case p.Actor != "":
		return p.Actor
	case p.KeyID != "":
		return "key:" + p.KeyID
	}
	return ""
}

// Session is what is known about the session so far.
type Session struct {
	ID       string `json:"id"`
	Events   int    `json:"events"`
	Blocks   int    `json:"blocks"`
	Warnings int    `json:"warnings"`
	// Labels are the data-flow labels the session carries, each with the
	// record that set it (rules read their names as session.labels).
	Labels []SessionLabel `json:"labels,omitempty"`
	// LabelsUnavailable, when set, says why the labels could not be read:
	// session.labels is then an error, so rules testing it fail closed.
	LabelsUnavailable string `json:"labelsUnavailable,omitempty"`
}

// Input is everything a decision is made on.
type Input struct {
	Tenant    string         `json:"tenant"`
	Principal Principal      `json:"principal"`
	Agent     AgentState     `json:"agent"`
	Action    Action         `json:"action"`
	Context   map[string]any `json:"context"`
	Session   Session        `json:"session"`
	// Halt is the active halt covering this decision, if any: it blocks
	// with HALTED whatever the rules say.
	Halt *HaltState `json:"halt,omitempty"`
	// Budgets are the tenant's budgets covering this decision, with their
	// usage as the decision saw it; an exceeded one adds its outcome with
	// BUDGET_EXCEEDED.
	Budgets []BudgetState `json:"budgets,omitempty"`
}

// Org policy modes (Kaizen).
const (
	OrgOff       = "off"
	OrgBlocklist = "blocklist"
	OrgAllowlist = "allowlist"
)

// OrgPolicy is the tenant-wide block or allow list.
type OrgPolicy struct {
	Mode         string   `json:"mode"`
	Tools        []string `json:"tools"`
	Destinations []string `json:"destinations"`
	Publishers   []string `json:"publishers"`
}

// Match is one rule (or built-in check) that held.
type Match struct {
	PolicyID    string   `json:"policyId,omitempty"`
	RuleID      string   `json:"ruleId"`
	Outcome     Outcome  `json:"outcome"`
	ReasonCodes []string `json:"reasonCodes"`
	Message     string   `json:"message,omitempty"`
	// Error is set when the rule applies because its condition failed to
	// evaluate (fail closed): the CEL error.
	Error string `json:"error,omitempty"`
	// Labels are the session labels the rule tested, each naming the
	// earlier record that set it.
	Labels []SessionLabel `json:"labels,omitempty"`
}

// Decision is the engine's answer with its explanation.
type Decision struct {
	Outcome     Outcome  `json:"decision"`
	ReasonCodes []string `json:"reasonCodes"`
	Matches     []Match  `json:"matches"`
	PackHash    string   `json:"packHash"`
	// ApprovalTimeout is the shortest timeout among matching
	// require_approval rules (0: the default applies).
	ApprovalTimeout time.Duration `json:"approvalTimeoutNs,omitempty"`
	// OnExpiry is "approved" when every matching require_approval rule
	// says an unanswered approval should pass; otherwise "rejected".
	OnExpiry string `json:"onExpiry,omitempty"`
	// Approvals are the approvals blocks of the matching require_approval
	// rules: all must be met (none: one approval by anyone allowed).
	Approvals []ApprovalRequirement `json:"approvals,omitempty"`
	// Errors lists rules whose condition failed to evaluate, as
	// "policy/rule: error (how it was resolved)". Such a rule fails
	// closed: it applies (with EVALUATION_ERROR) when its outcome is
	// stricter than allow, unless it says onError: skip.
	Errors []string `json:"errors,omitempty"`
	// Labels are the data-flow labels this action adds to its session.
	Labels []LabelAdd `json:"labelsAdded,omitempty"`
}

// Stable reason codes of the built-in checks.
const (
	ReasonDefaultAllow          = "DEFAULT_ALLOW"
	ReasonAgentPaused           = "AGENT_PAUSED"
	ReasonOrgBlockedTool        = "ORG_BLOCKLIST_TOOL"
	ReasonOrgBlockedDestination = "ORG_BLOCKLIST_DESTINATION"
	ReasonOrgBlockedPublisher   = "ORG_BLOCKLIST_PUBLISHER"
	ReasonOrgNotAllowlisted     = "ORG_NOT_ALLOWLISTED"
	ReasonUndeclaredTool        = "UNDECLARED_TOOL"
	ReasonUndeclaredDestination = "UNDECLARED_DESTINATION"
	// ReasonEvaluationError accompanies the reason codes of a rule that
	// applied because its condition failed to evaluate.
	ReasonEvaluationError = "EVALUATION_ERROR"
)

// How an erroring rule was resolved, as Decision.Errors says.
const (
	errApplied = "applied: fails closed"
	errAllow   = "not applied: an allow rule adds nothing when it errors"
	errSkipped = "not applied: onError: skip"
)

// PackEntry names one policy version in a pack.
type PackEntry struct {
	ID      string `json:"id"`
	Version uint64 `json:"version"`
	Name    string `json:"name"`
}

// Pack is a tenant's active policies compiled together. Its Hash covers
// the exact documents, so a decision naming the hash names the rules that
// produced it.
type Pack struct {
	Tenant    string      `json:"tenant"`
	Policies  []PackEntry `json:"policies"`
	Hash      string      `json:"packHash"`
	Signature string      `json:"signature,omitempty"`
	KeyID     string      `json:"keyId,omitempty"`

	rules   []compiledRule
	byTool  map[string][]int
	general []int

	// Declared inputs, indexed like the rules.
	checks        []inputCheck
	checksByTool  map[string][]int
	generalChecks []int

	// Data-flow label rules, and whether any rule reads session.labels.
	labels      []compiledLabel
	readsLabels bool
}

// Versioned is a compiled policy at a version.
type Versioned struct {
	Version  uint64
	Compiled *Compiled
}

// NewPack assembles compiled policies (enabled ones only) into a pack,
// hashes it and, when signer is non-nil, signs the hash.
func NewPack(tenant string, policies []Versioned, signer *Signer) (*Pack, error) {
	sorted := slices.Clone(policies)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Compiled.Doc.ID < sorted[j].Compiled.Doc.ID })
	p := &Pack{Tenant: tenant, Policies: []PackEntry{}, byTool: map[string][]int{}, checksByTool: map[string][]int{}}
	type hashed struct {
		ID      string   `json:"id"`
		Version uint64   `json:"version"`
		Doc     Document `json:"doc"`
	}
	var canon []hashed
	for _, v := range sorted {
		d := v.Compiled.Doc
		if !d.IsEnabled() {
			continue
		}
		p.Policies = append(p.Policies, PackEntry{ID: d.ID, Version: v.Version, Name: d.Name})
		d.Tests = nil // test cases do not decide: changing them keeps the hash
		canon = append(canon, hashed{d.ID, v.Version, d})
		if len(v.Compiled.inputs) > 0 {
			idx := len(p.checks)
			p.checks = append(p.checks, inputCheck{inputs: v.Compiled.inputs})
			tools := v.Compiled.tools()
			if tools == nil {
				p.generalChecks = append(p.generalChecks, idx)
			}
			for _, t := range tools {
				p.checksByTool[t] = append(p.checksByTool[t], idx)
			}
		}
		p.labels = append(p.labels, v.Compiled.labels...)
		for _, r := range v.Compiled.rules {
			p.readsLabels = p.readsLabels || r.labels.reads
			idx := len(p.rules)
			p.rules = append(p.rules, r)
			if r.tools == nil {
				p.general = append(p.general, idx)
				continue
			}
			for _, t := range r.tools {
				p.byTool[t] = append(p.byTool[t], idx)
			}
		}
	}
	b, err := json.Marshal(struct {
		Tenant   string   `json:"tenant"`
		Policies []hashed `json:"policies"`
	}{tenant, canon})
	if err != nil {
		return nil, fmt.Errorf("hash pack: %w", err)
	}
	sum := sha256.Sum256(b)
	p.Hash = "sha256:" + hex.EncodeToString(sum[:])
	if signer != nil {
		p.Signature, p.KeyID = signer.SignPack(tenant, p.Hash), signer.KeyID
	}
	return p, nil
}

// Rules counts the compiled rules in the pack.
func (p *Pack) Rules() int { return len(p.rules) }

// SkippedOnError names ("policy/rule") the rules that say onError: skip:
// the ones an erroring input turns off instead of applying. `vigil
// policy test` lists them.
func (p *Pack) SkippedOnError() []string {
	var out []string
	for _, r := range p.rules {
		if r.skipOnError {
			out = append(out, r.policyID+"/"+r.rule.ID)
		}
	}
	return out
}

// Evaluate decides on in. It never fails, and fails closed: a rule whose
// condition errors is resolved to the stricter of matching and not
// matching — it applies, with EVALUATION_ERROR next to its reason codes,
// unless its outcome is allow (which adds nothing) or it says
// onError: skip — and is reported in Decision.Errors.
func (p *Pack) Evaluate(in Input, org OrgPolicy) Decision {
	// Empty, not nil (the record says "matches":[]), and without room
	// yet: room for 4 Matches (~500 bytes) was allocated for every
	// decision, whatever matched, 2 % of the bytes per decision in
	// `vigil bench decide` (perf-alloc2); appends grow it as needed.
	d := Decision{Matches: make([]Match, 0)}
	if p != nil {
		d.PackHash = p.Hash
	}
	host := in.Action.Host()
	builtins(&d, in, host, org)
	if p != nil && (len(p.rules) > 0 || len(p.labels) > 0) {
		act := &lazyActivation{in: &in, host: host}
		p.evalRules(&d, act)
		if len(p.labels) > 0 {
			p.evalLabels(&d, &in, act, host)
		}
	}
	d.finish()
	return d
}

func builtins(d *Decision, in Input, host string, org OrgPolicy) {
	add := func(rule string, o Outcome, code, msg string) {
		d.Matches = append(d.Matches, Match{RuleID: rule, Outcome: o, ReasonCodes: []string{code}, Message: msg})
	}
	if in.Halt != nil {
		add("halt", Block, ReasonHalted, "halted ("+in.Halt.Scope+" halt "+in.Halt.ID+"): "+in.Halt.Reason)
	}
	for _, b := range in.Budgets {
		if !b.Exceeded {
			continue
		}
		codes := []string{ReasonBudgetExceeded}
		if b.Unavailable {
			codes = append(codes, ReasonBudgetUnavailable)
		}
		d.Matches = append(d.Matches, Match{RuleID: "budget." + b.Name, Outcome: b.Outcome, ReasonCodes: codes, Message: b.exceededMessage()})
	}
	if in.Action.Kind == KindMCPToolReview {
		mcpReviewBuiltin(d, in.Action)
	}
	if in.Agent.Paused {
		add("agent.paused", Block, ReasonAgentPaused, "the agent is paused")
	}
	switch org.Mode {
	case OrgBlocklist:
		if in.Action.Tool != "" && slices.Contains(org.Tools, in.Action.Tool) {
			add("org.blocklist", Block, ReasonOrgBlockedTool, "tool "+in.Action.Tool+" is on the organisation blocklist")
		}
		if host != "" && hostListed(org.Destinations, host) {
			add("org.blocklist", Block, ReasonOrgBlockedDestination, "destination "+host+" is on the organisation blocklist")
		}
		if in.Action.Publisher != "" && slices.Contains(org.Publishers, in.Action.Publisher) {
			add("org.blocklist", Block, ReasonOrgBlockedPublisher, "publisher "+in.Action.Publisher+" is on the organisation blocklist")
		}
	case OrgAllowlist:
		// An allowlist is a deny default: the action passes only when at
		// least one of its attributes was checked against a non-empty
		// list and every checked one is listed. Leaving the attributes
		// out cannot pass it.
		checked, outside := false, false
		check := func(v string, list []string, listed func([]string, string) bool) {
			if v != "" && len(list) > 0 {
				checked = true
				outside = outside || !listed(list, v)
			}
		}
		check(in.Action.Tool, org.Tools, slices.Contains[[]string])
		check(host, org.Destinations, hostListed)
		check(in.Action.Publisher, org.Publishers, slices.Contains[[]string])
		switch {
		case outside:
			add("org.allowlist", Block, ReasonOrgNotAllowlisted, "the action is outside the organisation allowlist")
		case !checked && (len(org.Tools) > 0 || len(org.Destinations) > 0 || len(org.Publishers) > 0):
			add("org.allowlist", Block, ReasonOrgNotAllowlisted, "the action names no tool, destination or publisher the organisation allowlist could admit")
		}
	}
	if in.Agent.Declared {
		if in.Action.Tool != "" && !slices.Contains(in.Agent.Tools, in.Action.Tool) {
			add("agent.manifest", Warn, ReasonUndeclaredTool, "tool "+in.Action.Tool+" is not in the agent's declaration")
		}
		if host != "" && !hostListed(in.Agent.Destinations, host) {
			add("agent.manifest", Warn, ReasonUndeclaredDestination, "destination "+host+" is not in the agent's declaration")
		}
	}
}

// hostListed matches host against entries that are host names, host:port
// or "*.domain" wildcards.
func hostListed(list []string, host string) bool {
	for _, e := range list {
		e = strings.ToLower(e)
		if h, _, err := net.SplitHostPort(e); err == nil {
			e = h
		}
		if e == host || (strings.HasPrefix(e, "*.") && strings.HasSuffix(host, e[1:])) {
			return true
		}
	}
	return false
}

func (p *Pack) evalRules(d *Decision, act *lazyActivation) {
	in := act.in
	candidates := p.general
	if idx := p.byTool[in.Action.Tool]; len(idx) > 0 {
		if len(candidates) == 0 {
			candidates = idx
		} else {
			candidates = mergeSorted(candidates, idx)
		}
	}
	for _, i := range candidates {
		r := &p.rules[i]
		out, _, err := r.prg.Eval(act)
		if err == nil && out.Type() != types.BoolType {
			// A dynamic condition (`context.flag`) that yields a string or
			// a number has not said "no": it errors like any other.
			err = fmt.Errorf("condition evaluated to %s, not a bool", out.Type().TypeName())
		}
		var evalErr string
		switch {
		case err != nil:
			// Matching is the stricter resolution for any outcome but
			// allow: allow is the floor, so an allow match changes nothing.
			how := errApplied
			switch {
			case r.skipOnError:
				how = errSkipped
			case r.outcome == Allow:
				how = errAllow
			}
			d.Errors = append(d.Errors, fmt.Sprintf("%s/%s: %v (%s)", r.policyID, r.rule.ID, err, how))
			if how != errApplied {
				continue
			}
			evalErr = err.Error()
		case out != types.True:
			continue
		}
		m := Match{PolicyID: r.policyID, RuleID: r.rule.ID, Outcome: r.outcome, ReasonCodes: r.rule.ReasonCodes, Message: r.rule.Message, Error: evalErr}
		if evalErr != "" {
			m.ReasonCodes = append(slices.Clip(r.rule.ReasonCodes), ReasonEvaluationError)
		}
		if r.labels.reads {
			explainLabels(&m, r.labels, &in.Session)
		}
		d.Matches = append(d.Matches, m)
		if r.outcome == RequireApproval {
			if r.timeout > 0 && (d.ApprovalTimeout == 0 || r.timeout < d.ApprovalTimeout) {
				d.ApprovalTimeout = r.timeout
			}
			if r.approvals != nil {
				d.Approvals = append(d.Approvals, *r.approvals)
			}
			switch {
			case r.rule.OnExpiry != "approve":
				d.OnExpiry = "rejected"
			case d.OnExpiry == "":
				d.OnExpiry = "approved"
			}
		}
	}
}

func mergeSorted(a, b []int) []int {
	out := make([]int, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		if a[i] < b[j] {
			out = append(out, a[i])
			i++
		} else {
			out = append(out, b[j])
			j++
		}
	}
	return append(append(out, a[i:]...), b[j:]...)
}

// finish picks the strictest outcome; its reason codes come first, then
// those of milder matches, without repeats.
func (d *Decision) finish() {
	d.Outcome = Allow
	for _, m := range d.Matches {
		d.Outcome = max(d.Outcome, m.Outcome)
	}
	for o := Block; o >= Allow; o-- {
		for _, m := range d.Matches {
			if m.Outcome != o {
				continue
			}
			for _, c := range m.ReasonCodes {
				if !slices.Contains(d.ReasonCodes, c) {
					d.ReasonCodes = append(d.ReasonCodes, c)
				}
			}
		}
	}
	if len(d.ReasonCodes) == 0 {
		d.ReasonCodes = []string{ReasonDefaultAllow}
	}
}

// lazyActivation resolves the condition variables on first use, so a
// rule that only looks at the action does not pay for building the agent,
// principal and session maps.
type lazyActivation struct {
	in   *Input
	host string
	vars [6]any
	done [6]bool
}

var varIndex = map[string]int{"action": 0, "context": 1, "agent": 2, "principal": 3, "session": 4, "budget": 5}

func (a *lazyActivation) Parent() interpreter.Activation { return nil }

func (a *lazyActivation) ResolveName(name string) (any, bool) {
	if name == "tenant" {
		return a.in.Tenant, true
	}
	i, ok := varIndex[name]
	if !ok {
		return nil, false
	}
	if !a.done[i] {
		a.vars[i], a.done[i] = a.build(i), true
	}
	return a.vars[i], true
}

func orEmpty(m map[string]any) map[string]any {
	if m == nil {
		return map[string]any{}
	}
	return m
}

func (a *lazyActivation) build(i int) any {
	in := a.in
	switch i {
	case 0:
		return &actionVal{a: &in.Action, host: a.host}
	case 1:
		return orEmpty(in.Context)
	case 2:
		return map[string]any{
			"id": in.Agent.ID, "declared": in.Agent.Declared, "tools": in.Agent.Tools, "destinations": in.Agent.Destinations,
			"paused": in.Agent.Paused, "judgeEnabled": in.Agent.JudgeEnabled, "sources": orEmptySources(in.Agent.Sources),
		}
	case 3:
		return map[string]any{"keyId": in.Principal.KeyID, "role": in.Principal.Role}
	case 5:
		m := make(map[string]any, len(in.Budgets))
		for _, b := range in.Budgets {
			m[b.Name] = b.celValue()
		}
		return m
	default:
		return map[string]any{"id": in.Session.ID, "events": in.Session.Events, "blocks": in.Session.Blocks, "warnings": in.Session.Warnings,
			"labels": sessionLabelsVal(&in.Session)}
	}
}

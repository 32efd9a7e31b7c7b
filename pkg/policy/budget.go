package policy

import (
	"crypto/rand"
	"encoding/hex"
	"math"
	"regexp"
	"strconv"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Budget scopes: whose usage a budget counts. An agent budget without an
// agentId counts each agent apart; a session budget counts each session
// apart (optionally of one agent).
const (
	BudgetTenant  = "tenant"
	BudgetAgent   = "agent"
	BudgetSession = "session"
)

// Budget metrics: what a budget counts.
const (
	// MetricActions counts every decision in scope: asked and reported.
	MetricActions = "actions"
	// MetricToolCalls counts decisions on actions of kind tool_call.
	MetricToolCalls = "tool_calls"
	// MetricTokens counts GenAI tokens (input + output) reported in
	// event payloads.
	MetricTokens = "tokens"
	// MetricCostUSD prices those tokens with the deployment's per-model
	// price table; counters hold micro-dollars.
	MetricCostUSD = "cost_usd"
)

// Budget operations, the audit log's action for each budget change.
const (
	BudgetCreated = "created"
	BudgetDeleted = "deleted"
)

// ReasonBudgetExceeded is the reason code of the built-in match an
// exceeded budget adds; ReasonBudgetUnavailable joins it when the usage
// could not be read or counted (the budget is then taken as exceeded).
const (
	ReasonBudgetExceeded    = "BUDGET_EXCEEDED"
	ReasonBudgetUnavailable = "BUDGET_UNAVAILABLE"
)

// MicroUSD is how many counter units make one dollar of a cost_usd budget.
const MicroUSD = 1_000_000

// Budget caps what a scope may use in a fixed window. It is recorded on
// CONTROL when created and again when deleted (the last message on its
// subject is its state).
type Budget struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	// Name is how rules read it: budget.<name>.used.
	Name    string `json:"name"`
	Scope   string `json:"scope"`
	AgentID string `json:"agentId,omitempty"`
	Metric  string `json:"metric"`
	// Tool, when set, narrows the budget to actions of that tool.
	Tool   string `json:"tool,omitempty"`
	Window string `json:"window"`
	// Limit is in the metric's unit (dollars for cost_usd).
	Limit   float64 `json:"limit"`
	Outcome Outcome `json:"outcome"`
	// Op is what this change did (created or deleted); By who did it.
	Op        string     `json:"op"`
	By        string     `json:"by"`
	CreatedBy string     `json:"createdBy"`
	CreatedAt time.Time  `json:"createdAt"`
	DeletedBy string     `json:"deletedBy,omitempty"`
	DeletedAt *time.Time `json:"deletedAt,omitempty"`
	Active    bool       `json:"active"`
}

// budgetWindows are the fixed windows a budget may count over; windows
// are aligned on UTC (a 1h window runs from hh:00 to hh+1:00).
var budgetWindows = map[string]time.Duration{"1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour}

// WindowDuration is the length of a budget window ("1m", "1h", "1d").
func WindowDuration(w string) (time.Duration, bool) {
	d, ok := budgetWindows[w]
	return d, ok
}

// WindowStart is the start of the window of b holding at, in Unix seconds.
func (b Budget) WindowStart(at time.Time) int64 {
	d, ok := budgetWindows[b.Window]
	if !ok {
		d = 24 * time.Hour
	}
	return at.Truncate(d).Unix()
}

// LimitUnits is the limit in counter units (micro-dollars for cost_usd).
func (b Budget) LimitUnits() int64 {
	if b.Metric == MetricCostUSD {
		return int64(math.Round(b.Limit * MicroUSD))
	}
	return int64(b.Limit)
}

// Value converts counter units to the metric's unit.
func (b Budget) Value(units int64) float64 {
	if b.Metric == MetricCostUSD {
		return float64(units) / MicroUSD
	}
	return float64(units)
}

// ScopeKey is whose counter a decision about agentID in sessionID adds
// to, and whether the budget covers that decision at all: "" for a tenant
// budget, the agent or the session id otherwise.
func (b Budget) ScopeKey(agentID, sessionID string) (string, bool) {
	if !b.Active {
		return "", false
	}
	switch b.Scope {
	case BudgetTenant:
		return "", true
	case BudgetAgent:
		if b.AgentID != "" {
			return agentID, agentID == b.AgentID
		}
		return agentID, true
	case BudgetSession:
		if sessionID == "" || (b.AgentID != "" && b.AgentID != agentID) {
			return "", false
		}
		return sessionID, true
	}
	return "", false
}

// Counts reports whether an action adds to the budget's counter (for
// actions and tool_calls; tokens and cost count what events report) and
// whether the budget's outcome applies to it: a tool budget caps only
// that tool, a tool_calls budget only tool calls.
func (b Budget) Counts(a Action) bool {
	if b.Tool != "" && a.Tool != b.Tool {
		return false
	}
	if b.Metric == MetricToolCalls {
		return a.Kind == "tool_call"
	}
	return true
}

// BudgetState is one budget as a decision saw it: what rules read as
// budget.<name> and what the decision records.
type BudgetState struct {
	ID      string  `json:"id"`
	Name    string  `json:"name"`
	Metric  string  `json:"metric"`
	Window  string  `json:"window"`
	Used    float64 `json:"used"`
	Limit   float64 `json:"limit"`
	Outcome Outcome `json:"outcome"`
	// Exceeded is set when the budget's outcome applies to this decision.
	Exceeded bool `json:"exceeded,omitempty"`
	// Unavailable is set when the usage could not be read or counted; the
	// budget is then taken as exceeded and Used is not known.
	Unavailable bool `json:"unavailable,omitempty"`
}

// celValue is the budget as CEL sees it. An unavailable budget has no
// used: a rule reading it errors and fails closed.
func (s BudgetState) celValue() map[string]any {
	m := map[string]any{"limit": s.Limit, "exceeded": s.Exceeded, "metric": s.Metric, "window": s.Window}
	if !s.Unavailable {
		m["used"], m["remaining"] = s.Used, math.Max(0, s.Limit-s.Used)
	}
	return m
}

// NewBudgetID returns a fresh budget id.
func NewBudgetID() string {
	var b [10]byte
	_, _ = rand.Read(b[:])
	return "bud_" + hex.EncodeToString(b[:])
}

// budgetName is a CEL identifier, so that budget.<name>.used parses.
var budgetName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)

// maxBudgetLimit bounds a limit so that it fits a counter in units.
const maxBudgetLimit = 1e12

// BudgetRequest is what POST /v1/budgets accepts.
type BudgetRequest struct {
	Name    string   `json:"name"`
	Scope   string   `json:"scope"`
	AgentID string   `json:"agentId"`
	Metric  string   `json:"metric"`
	Tool    string   `json:"tool"`
	Window  string   `json:"window"`
	Limit   *float64 `json:"limit"`
	Outcome string   `json:"outcome"`
}

// Validate checks a budget request and returns every problem at once,
// or the budget's outcome.
func (r BudgetRequest) Validate() (Outcome, error) {
	var bad []apperr.FieldError
	add := func(path, code, msg string) {
		bad = append(bad, apperr.FieldError{Path: path, Code: code, Message: msg})
	}
	switch {
	case r.Name == "":
		add("name", "required", "name is required: rules read the budget as budget.<name>")
	case !budgetName.MatchString(r.Name):
		add("name", "invalid_format", "name must match ^[a-z][a-z0-9_]{0,62}$ (rules read it as budget.<name>)")
	}
	switch r.Scope {
	case BudgetTenant:
		if r.AgentID != "" {
			add("agentId", "not_allowed", "agentId may not be set for scope tenant")
		}
	case BudgetAgent, BudgetSession:
	case "":
		add("scope", "required", "scope is required: tenant, agent or session")
	default:
		add("scope", "invalid_format", "scope must be tenant, agent or session")
	}
	if len(r.AgentID) > maxHaltID {
		add("agentId", "too_long", "agentId must be at most 256 bytes")
	}
	if len(r.Tool) > maxHaltID {
		add("tool", "too_long", "tool must be at most 256 bytes")
	}
	switch r.Metric {
	case MetricActions, MetricToolCalls, MetricTokens, MetricCostUSD:
	case "":
		add("metric", "required", "metric is required: actions, tool_calls, tokens or cost_usd")
	default:
		add("metric", "invalid_format", "metric must be actions, tool_calls, tokens or cost_usd")
	}
	if _, ok := budgetWindows[r.Window]; !ok {
		if r.Window == "" {
			add("window", "required", "window is required: 1m, 1h or 1d")
		} else {
			add("window", "invalid_format", "window must be 1m, 1h or 1d")
		}
	}
	switch l := r.Limit; {
	case l == nil:
		add("limit", "required", "limit is required")
	case *l <= 0 || *l > maxBudgetLimit || math.IsNaN(*l):
		add("limit", "out_of_range", "limit must be positive and at most 1e12")
	case r.Metric != MetricCostUSD && *l != math.Trunc(*l):
		add("limit", "invalid_format", "limit must be a whole number for metric "+r.Metric)
	case r.Metric == MetricCostUSD && *l*MicroUSD < 1:
		add("limit", "out_of_range", "a cost_usd limit must be at least 0.000001")
	}
	var o Outcome
	switch r.Outcome {
	case "block", "require_approval", "warn":
		o, _ = ParseOutcome(r.Outcome)
	case "":
		add("outcome", "required", "outcome is required: block, require_approval or warn")
	default:
		add("outcome", "invalid_format", "outcome must be block, require_approval or warn")
	}
	if len(bad) > 0 {
		return 0, apperr.Validation(bad[0].Message, bad...)
	}
	return o, nil
}

// exceededMessage explains an exceeded budget in its decision.
func (s BudgetState) exceededMessage() string {
	if s.Unavailable {
		return "budget " + s.Name + ": usage unavailable, taken as exceeded (fails closed)"
	}
	return "budget " + s.Name + " exceeded: " + strconv.FormatFloat(s.Used, 'f', -1, 64) + " of " +
		strconv.FormatFloat(s.Limit, 'f', -1, 64) + " " + s.Metric + " per " + s.Window
}

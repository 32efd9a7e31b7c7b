package streams

import (
	"strconv"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Budget definitions on CONTROL, owned by services/api.
const (
	// BudgetChanged carries a budget's full state when it is created and
	// when it is deleted (payload: policy.Budget); one subject per budget.
	BudgetChanged = "budget_changed"
	// AllBudgetChanges filters every budget change of every tenant.
	AllBudgetChanges = "control.v1." + BudgetChanged + ".>"
)

// BudgetSubject holds a budget's history: created, then perhaps deleted.
func BudgetSubject(tenant, id string) string { return subject("control", BudgetChanged, tenant, id) }

// Budget usage counters, owned by services/policy.
const (
	// Budgets is the stream of budget usage counters. It is a JetStream
	// counter stream (AllowMsgCounter): every message is an increment
	// (Nats-Incr) and the last message on a subject holds its total, so
	// all policy replicas share one count per budget, window and scope,
	// it survives restarts, and an increment carrying a Nats-Msg-Id seen
	// within the duplicate window is not counted again.
	Budgets = "BUDGETS"
	// UsageCounted is the event name of budget counters.
	UsageCounted = "usage_counted"
	// BudgetUsageMaxAge keeps a counter past the end of the longest
	// window (1d), so the current window's count is always readable.
	BudgetUsageMaxAge = 49 * time.Hour
	// HeaderBudgetScope carries the raw agent or session id an increment
	// counted for, so a listing can name it.
	HeaderBudgetScope = "Vigil-Budget-Scope"
)

// BudgetUsageSubject is the counter of one budget, in the window starting
// at windowStart (Unix seconds), for one scope key (agent or session id;
// "" for a tenant budget). It has two more tokens than the usual
// <subsystem>.v1.<event>.<tenant>.<entity>: the window and the scope.
func BudgetUsageSubject(tenant, budgetID string, windowStart int64, scopeKey string) string {
	return "budget.v1." + UsageCounted + "." + tenant + "." + Token(budgetID) + "." + strconv.FormatInt(windowStart, 10) + "." + Token(scopeKey)
}

// BudgetWindowFilter filters every scope's counter of a budget in one window.
func BudgetWindowFilter(tenant, budgetID string, windowStart int64) string {
	return "budget.v1." + UsageCounted + "." + tenant + "." + Token(budgetID) + "." + strconv.FormatInt(windowStart, 10) + ".*"
}

// BudgetsConfig defines the BUDGETS counter stream, owned by
// services/policy. Counters are kept one message per subject (the last
// holds the total) and expire once their window is long over.
func BudgetsConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Budgets, "Budget usage counters per budget, window and scope", "budget")
	sc.AllowMsgCounter = true
	sc.AllowDirect = true
	sc.MaxAge = BudgetUsageMaxAge
	sc.MaxMsgsPerSubject = 1
	return sc
}

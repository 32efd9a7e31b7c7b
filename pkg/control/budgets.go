package control

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// newBudgets is the catalog's view of budgets.
func newBudgets() lifecycle[policy.Budget] {
	return lifecycle[policy.Budget]{what: "budget", key: func(b policy.Budget) (string, string, bool, time.Time) {
		return b.Tenant, b.ID, b.Active, b.CreatedAt
	}}
}

// ActiveBudgets returns a tenant's active budgets, oldest first. It reads
// memory only and shares the slice: callers must not modify it. The
// decision path calls it for every decision.
func (c *Catalog) ActiveBudgets(tenant string) []policy.Budget {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.budgets.active[tenant]
}

// Budgets lists a tenant's budgets, newest first: the active ones, or
// with all every budget ever created.
func (c *Catalog) Budgets(tenant string, all bool) []policy.Budget {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.budgets.list(tenant, all)
}

// BudgetByID returns a budget's latest state as the catalog knows it.
func (c *Catalog) BudgetByID(tenant, id string) (policy.Budget, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	b, ok := c.budgets.all[tenant][id]
	return b, ok
}

// Budget returns the current state and revision of the budget named
// name, or ErrNotFound. Budgets are stored one subject per name, so that
// creating a name is compare-and-set: two active budgets never share one.
func (s *Store) Budget(ctx context.Context, tenant, name string) (policy.Budget, uint64, error) {
	var b policy.Budget
	seq, err := s.last(ctx, streams.BudgetSubject(tenant, name), &b)
	return b, seq, err
}

// PutBudget records a budget's new state, provided its name's subject is
// still at expect (0: the name was never used).
func (s *Store) PutBudget(ctx context.Context, b policy.Budget, expect uint64) (uint64, error) {
	return s.put(ctx, streams.BudgetSubject(b.Tenant, b.Name), b, &expect)
}

package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// budgetState is the catalog's view of budgets: every budget ever
// created (by id, for GET /v1/budgets/:id) and, apart, the active ones,
// which every decision looks at.
type budgetState struct {
	all    map[string]map[string]policy.Budget // tenant → id → latest state
	active map[string][]policy.Budget          // tenant → active budgets, oldest first
}

// applyBudget applies a budget change; it reports whether subj was one.
// Called with c.mu held.
func (c *Catalog) applyBudget(subj string, data []byte) bool {
	if !strings.HasPrefix(subj, "control.v1."+streams.BudgetChanged+".") {
		return false
	}
	var b policy.Budget
	if err := json.Unmarshal(data, &b); err != nil {
		// The api writes only well-formed budgets; a budget that cannot
		// be read is a cap that cannot be honoured, so it is logged loudly.
		c.log.Error("catalog: bad budget change", slog.String("subject", subj), slog.String("error", err.Error()))
		return true
	}
	if c.budgets.all == nil {
		c.budgets.all, c.budgets.active = map[string]map[string]policy.Budget{}, map[string][]policy.Budget{}
	}
	inner(c.budgets.all, b.Tenant)[b.ID] = b
	act := slices.DeleteFunc(c.budgets.active[b.Tenant], func(x policy.Budget) bool { return x.ID == b.ID })
	if b.Active {
		act = append(act, b)
	}
	if len(act) == 0 {
		delete(c.budgets.active, b.Tenant)
	} else {
		c.budgets.active[b.Tenant] = act
	}
	return true
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
	var out []policy.Budget
	if all {
		for _, b := range c.budgets.all[tenant] {
			out = append(out, b)
		}
	} else {
		out = slices.Clone(c.budgets.active[tenant])
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b policy.Budget) int {
		if x := b.CreatedAt.Compare(a.CreatedAt); x != 0 {
			return x
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
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

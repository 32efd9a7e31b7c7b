package api

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Budgets. A budget's definition is recorded on CONTROL (one subject per
// name, so a name is held by one active budget at a time), where every
// policy replica's catalog picks it up; its usage is counted by the
// policy service on the BUDGETS counter stream, which these handlers
// read to show each budget's current use.

// maxBudgetScopes bounds the per-agent or per-session counters a budget
// view lists (largest first).
const maxBudgetScopes = 100

// budgetView is a budget as the API shows it.
type budgetView struct {
	rules.Budget
	// Usage is the current window's use; nil for a deleted budget.
	Usage *budgetUsage `json:"usage,omitempty"`
}

// budgetUsage is a budget's use in its current window.
type budgetUsage struct {
	WindowStart time.Time `json:"windowStart"`
	WindowEnd   time.Time `json:"windowEnd"`
	// Used is the largest use among the budget's scopes (the only one
	// for a tenant budget or an agent budget naming its agent), in the
	// metric's unit. Exhausted says it is at or over the limit: the next
	// action in that scope gets the budget's outcome.
	Used      float64 `json:"used"`
	Limit     float64 `json:"limit"`
	Exhausted bool    `json:"exhausted"`
	// Scopes lists per-agent or per-session use, largest first (at most
	// 100); a tenant budget has one entry with an empty scope. ScopeCount
	// is how many scopes have used the budget in this window.
	Scopes     []scopeUsage `json:"scopes"`
	ScopeCount int          `json:"scopeCount"`
}

type scopeUsage struct {
	// Scope is the agent id (agent scope) or session id (session scope).
	Scope     string  `json:"scope"`
	Used      float64 `json:"used"`
	Exhausted bool    `json:"exhausted"`
}

func (s *Service) createBudget(c echo.Context) error {
	var in rules.BudgetRequest
	if err := httpkit.DecodeJSON(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	outcome, err := in.Validate()
	if err != nil {
		return err
	}
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	cur, rev, err := s.deps.Store.Budget(ctx, p.Tenant, in.Name)
	switch {
	case errors.Is(err, control.ErrNotFound):
		rev = 0
	case err != nil:
		return err
	case cur.Active:
		return apperr.Conflict("budget %q already exists (%s); delete it first", in.Name, cur.ID)
	}
	now := time.Now().UTC()
	b := rules.Budget{
		ID: rules.NewBudgetID(), Tenant: p.Tenant, Name: in.Name, Scope: in.Scope, AgentID: in.AgentID, Metric: in.Metric,
		Tool: in.Tool, Window: in.Window, Limit: *in.Limit, Outcome: outcome,
		Op: rules.BudgetCreated, By: p.Actor(), CreatedBy: p.Actor(), CreatedAt: now, Active: true,
	}
	seq, err := s.deps.Store.PutBudget(ctx, b, rev)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("budget %q was created concurrently", in.Name)
	}
	if err != nil {
		return err
	}
	// Read-your-writes: decisions asked through this instance carry a
	// CONTROL sequence at or past the budget.
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	v, err := s.budgetView(ctx, b)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Vigil-Control-Seq", strconv.FormatUint(seq, 10))
	return c.JSON(http.StatusCreated, v)
}

func (s *Service) listBudgets(c echo.Context) error {
	all, err := boolQuery(c, "all")
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	// A list reflects every budget stored when it was asked for, from any
	// instance.
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return err
	}
	bs := s.deps.Catalog.Budgets(httpkit.Principal(c).Tenant, all)
	out := make([]budgetView, 0, len(bs))
	for _, b := range bs {
		v, err := s.budgetView(ctx, b)
		if err != nil {
			return err
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, false, nil))
}

// budgetByPath finds the budget named by the path's id in the caller's
// tenant, with CONTROL read current first.
func (s *Service) budgetByPath(c echo.Context) (rules.Budget, error) {
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return rules.Budget{}, err
	}
	b, ok := s.deps.Catalog.BudgetByID(httpkit.Principal(c).Tenant, pathID(c))
	if !ok {
		return rules.Budget{}, apperr.NotFound("budget %q not found", pathID(c))
	}
	return b, nil
}

func (s *Service) getBudget(c echo.Context) error {
	b, err := s.budgetByPath(c)
	if err != nil {
		return err
	}
	v, err := s.budgetView(c.Request().Context(), b)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, v)
}

// deleteBudget ends a budget: decisions are no longer counted against it
// nor held by it. Deleting a deleted budget is a 409; exactly one
// deletion is recorded. Its counters expire with their windows; a new
// budget of the same name starts from zero.
func (s *Service) deleteBudget(c echo.Context) error {
	found, err := s.budgetByPath(c)
	if err != nil {
		return err
	}
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	b, rev, err := s.deps.Store.Budget(ctx, p.Tenant, found.Name)
	if err != nil {
		return err
	}
	if b.ID != found.ID || !b.Active {
		return apperr.Conflict("budget %s already deleted", found.ID)
	}
	now := time.Now().UTC()
	b.Active, b.Op, b.By, b.DeletedBy, b.DeletedAt = false, rules.BudgetDeleted, p.Actor(), p.Actor(), &now
	seq, err := s.deps.Store.PutBudget(ctx, b, rev)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("budget %s was deleted concurrently", b.ID)
	}
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	c.Response().Header().Set("Vigil-Control-Seq", strconv.FormatUint(seq, 10))
	return c.JSON(http.StatusOK, budgetView{Budget: b})
}

// budgetView adds an active budget's current use. Usage that cannot be
// read is a 503, not a zero: a zero would read as "nothing spent".
func (s *Service) budgetView(ctx context.Context, b rules.Budget) (budgetView, error) {
	v := budgetView{Budget: b}
	if !b.Active {
		return v, nil
	}
	now := time.Now().UTC()
	if s.cfg.Clock != nil {
		now = s.cfg.Clock().UTC()
	}
	d, _ := rules.WindowDuration(b.Window)
	start := b.WindowStart(now)
	scoped, count, err := s.counters.List(ctx, streams.BudgetWindowFilter(b.Tenant, b.ID, start), maxBudgetScopes)
	if err != nil {
		return v, apperr.Unavailable("budget usage could not be read", time.Second, err)
	}
	u := &budgetUsage{WindowStart: time.Unix(start, 0).UTC(), Limit: b.Limit, Scopes: make([]scopeUsage, 0, len(scoped)), ScopeCount: count}
	u.WindowEnd = u.WindowStart.Add(d)
	limit := b.LimitUnits()
	for i, sc := range scoped {
		su := scopeUsage{Scope: sc.Scope, Used: b.Value(sc.Units), Exhausted: sc.Units >= limit}
		if i == 0 {
			u.Used, u.Exhausted = su.Used, su.Exhausted
		}
		u.Scopes = append(u.Scopes, su)
	}
	v.Usage = u
	return v, nil
}

// boolQuery reads an optional true/false query parameter.
func boolQuery(c echo.Context, name string) (bool, error) {
	switch c.QueryParam(name) {
	case "", "false":
		return false, nil
	case "true":
		return true, nil
	}
	return false, apperr.Validation(name+" is not valid", apperr.FieldError{Path: name, Code: "invalid_format", Message: name + " must be true or false"})
}

package api

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
)

// getRegistry answers GET /v1/settings/agents: the tenant's agent-registry
// settings (auto registration off when never set).
func (s *Service) getRegistry(c echo.Context) error {
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.deps.Catalog.Registry(httpkit.Principal(c).Tenant))
}

// setRegistry answers POST and PUT /v1/settings/agents. The change is on
// CONTROL (so in the audit log) and applied by this instance before it
// is acknowledged.
func (s *Service) setRegistry(c echo.Context) error {
	var in struct {
		AutoRegister *bool `json:"autoRegister"`
	}
	if err := httpkit.DecodeJSON(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	if in.AutoRegister == nil {
		return apperr.Validation("autoRegister is required", apperr.FieldError{Path: "autoRegister", Code: event.CodeRequired, Message: "autoRegister must be true or false"})
	}
	p := httpkit.Principal(c)
	r := agent.RegistrySettings{Tenant: p.Tenant, AutoRegister: *in.AutoRegister, UpdatedAt: time.Now().UTC(), By: p.Actor()}
	ctx := c.Request().Context()
	seq, err := s.deps.Store.PutRegistry(ctx, r)
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, r)
}

// knownAgent is the KLA door's "404 not_found: unknown agentId". An agent
// is known once it is in the tenant's registry, registered or discovered
// from its events (see docs/api.md for why discovery is no way around
// it). A miss is confirmed against CONTROL as it is now — the agent may
// have been registered a moment ago through another api instance — and
// then, if the tenant turned auto registration on, the agent is
// registered here, within the tenant's agent cap. On success this
// instance's catalog holds the agent, so the decision's ControlSeq, taken
// after, makes the policy service evaluate it as registered.
func (s *Service) knownAgent(ctx context.Context, p auth.Principal, id string) error {
	if s.deps.Catalog.HasAgent(p.Tenant, id) {
		return nil
	}
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return err
	}
	if s.deps.Catalog.HasAgent(p.Tenant, id) {
		return nil
	}
	if !s.deps.Catalog.Registry(p.Tenant).AutoRegister {
		return apperr.NotFound("agent %q is not registered in this tenant: register it with POST /v1/agents first (or have an admin turn on autoRegister in /v1/settings/agents)", id)
	}
	if s.cfg.MaxAgents > 0 && s.deps.Catalog.AgentCount(p.Tenant) >= s.cfg.MaxAgents {
		return agent.LimitReached(s.cfg.MaxAgents, id, "")
	}
	now := time.Now().UTC()
	seq, err := s.deps.Store.PutAgent(ctx, agent.Change{Op: agent.OpDiscovered, Tenant: p.Tenant, Agent: agent.Discovered(id, now), By: p.Actor(), At: now}, 0)
	if errors.Is(err, control.ErrConflict) {
		// Registered meanwhile (by its events, a person or another
		// request): it is known now; decide after that registration.
		a, err := s.deps.Store.Agent(ctx, p.Tenant, id)
		if err != nil {
			return err
		}
		return s.deps.Catalog.WaitFor(ctx, a.Revision)
	}
	if err != nil {
		return err
	}
	s.log.Info("agent registered by its first decision", "tenant", p.Tenant, "agent", id, "by", p.Actor())
	return s.deps.Catalog.WaitFor(ctx, seq)
}

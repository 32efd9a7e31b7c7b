package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/routes"
)

func pathID(c echo.Context) string {
	id, err := url.PathUnescape(c.Param("id"))
	if err != nil {
		return c.Param("id")
	}
	return id
}

// reservedAgentIDs are the static routes under /v1/agents ("profiles"):
// GET /v1/agents/profiles is the risk service's, so an agent with that id
// could never be read.
var reservedAgentIDs = routes.Default().StaticChildren("/v1/agents")

func (s *Service) registerAgent(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	body = httpkit.IgnoreUnknown(c, body, append([]string{"agentId", "id"}, agent.Fields...)...)
	p := httpkit.Principal(c)
	if p.Bound() {
		if body, err = selfRegistration(p, body); err != nil {
			return err
		}
	}
	a, err := agent.ParseRegistration(body, time.Now().UTC())
	if err != nil {
		return err
	}
	if slices.Contains(reservedAgentIDs, a.AgentID) {
		return apperr.Validation("agentId is reserved", apperr.FieldError{Path: "agentId", Code: "invalid_format",
			Message: fmt.Sprintf("%q names a route (GET /v1/agents/%s), so an agent with that id could never be read", a.AgentID, a.AgentID)})
	}
	ctx := c.Request().Context()
	if named, _ := agentIDNamed(body); !named {
		// KLA registers by name and gets an id back: posting the same
		// name again is "a duplicate registration" (409), unless it is a
		// retry with the same Idempotency-Key, which the idempotency
		// middleware answers with the original 201 before this runs.
		if err := s.deps.Catalog.Sync(ctx); err != nil {
			return err
		}
		if dup, ok := s.deps.Catalog.RegisteredNamed(p.Tenant, a.Name); ok {
			return apperr.Conflict("an agent named %q is already registered (agentId %s)", a.Name, dup.AgentID)
		}
	}
	var expect uint64
	cur, err := s.deps.Store.Agent(ctx, p.Tenant, a.AgentID)
	switch {
	case errors.Is(err, control.ErrNotFound):
		if s.cfg.MaxAgents > 0 && s.deps.Catalog.AgentCount(p.Tenant) >= s.cfg.MaxAgents {
			return agent.LimitReached(s.cfg.MaxAgents, a.AgentID, "")
		}
	case err != nil:
		return err
	case cur.Source == agent.SourceDiscovered:
		// An agent first seen in events may be claimed by one explicit
		// registration; it keeps its history and the controls already set
		// on it (a pause, a declaration), which registration does not set.
		expect = cur.Revision
		a.Settings, a.Declaration = cur.Settings, cur.Declaration
		if p.Bound() {
			// An agent claiming itself cannot lift a status or change
			// an owner someone else set.
			a.Status, a.Owner = cur.Status, cur.Owner
		}
	default:
		return apperr.Conflict("agent %q is already registered", a.AgentID)
	}
	if err := s.signManifest(ctx, &a); err != nil {
		return err
	}
	rev, err := s.deps.Store.PutAgent(ctx, agent.Change{Op: agent.OpRegistered, Tenant: p.Tenant, Agent: a, By: p.Actor(), At: a.RegisteredAt}, expect)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("agent %q is already registered", a.AgentID)
	}
	if err != nil {
		return err
	}
	a.Revision = rev
	// The registration is in the catalog before it is acknowledged, so
	// the caller's next decision (and duplicate check) here sees it.
	if err := s.deps.Catalog.WaitFor(ctx, rev); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/agents/"+url.PathEscape(a.AgentID))
	return c.JSON(http.StatusCreated, a)
}

// signManifest has the ledger sign a's manifest (the deployment key
// stays in the ledger) and sets its signature. Without the ledger the
// write fails (503): a registered manifest is always a signed one, as KLA
// promises. The ledger computes the hash too; a different one means the
// two disagree on the canonical form, and nothing is recorded.
func (s *Service) signManifest(ctx context.Context, a *agent.Agent) error {
	resp, err := agent.SignEndpoint.Call(ctx, s.deps.NC, agent.SignRequest{Manifest: a.Manifest()})
	if err != nil {
		return err
	}
	if resp.ManifestHash != a.ManifestHash {
		return fmt.Errorf("ledger signed manifest %s, the api computed %s", resp.ManifestHash, a.ManifestHash)
	}
	a.ManifestSignature = &resp.ManifestSignature
	return nil
}

// agentIDNamed reports whether a registration body names its agent id
// ("agentId" or Kaplaix's "id") rather than leaving it to be generated.
func agentIDNamed(body []byte) (bool, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil {
		return false, err
	}
	_, a := fields["agentId"]
	_, b := fields["id"]
	return a || b, nil
}

// selfRegistration checks the body of an agent key's registration: the
// agent is one the key is bound to (the bound one when the body names
// none), and the body sets neither status nor owner, which are for the
// people who govern the agent. It returns the body with agentId set.
func selfRegistration(p auth.Principal, body []byte) ([]byte, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return body, nil // ParseRegistration reports the malformed body
	}
	var named []string
	for _, k := range []string{"agentId", "id"} {
		var v string
		if raw, ok := fields[k]; ok && json.Unmarshal(raw, &v) != nil {
			return body, nil // ParseRegistration reports the bad type
		}
		named = append(named, v)
	}
	id, err := p.AgentFor(named...)
	if err != nil {
		return nil, err
	}
	for _, k := range []string{"status", "owner"} {
		if _, ok := fields[k]; ok {
			return nil, apperr.Forbidden("an agent key cannot set its agent's " + k + "; an admin does")
		}
	}
	delete(fields, "id")
	fields["agentId"], _ = json.Marshal(id)
	return json.Marshal(fields)
}

func (s *Service) getAgent(c echo.Context) error {
	p := httpkit.Principal(c)
	if !p.Covers(pathID(c)) {
		return auth.ForbidOther(pathID(c))
	}
	a, err := s.deps.Store.Agent(c.Request().Context(), p.Tenant, pathID(c))
	if errors.Is(err, control.ErrNotFound) {
		return apperr.NotFound("agent %q not found", pathID(c))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

func (s *Service) patchAgent(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	body = httpkit.IgnoreUnknown(c, body, append([]string{"agentId"}, agent.Fields...)...)
	a, err := s.updateAgent(c, pathID(c), agent.OpUpdated, false, func(cur agent.Agent) (agent.Agent, error) {
		return agent.ApplyPatch(cur, body, time.Now().UTC())
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

// updateAgent applies change to the agent's current state and records the
// result, re-reading and re-applying if another writer got in between.
// With create, an unknown agent starts as a discovered one (Kaizen
// declares and configures agents by name before they report anything).
func (s *Service) updateAgent(c echo.Context, id, op string, create bool, change func(agent.Agent) (agent.Agent, error)) (agent.Agent, error) {
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	if !event.ValidID(id, event.MaxAgentIDLen) {
		return agent.Agent{}, apperr.NotFound("agent %q not found", id)
	}
	for range 5 {
		cur, err := s.deps.Store.Agent(ctx, p.Tenant, id)
		switch {
		case errors.Is(err, control.ErrNotFound) && create:
			cur = agent.Discovered(id, time.Now().UTC())
		case errors.Is(err, control.ErrNotFound):
			return agent.Agent{}, apperr.NotFound("agent %q not found", id)
		case err != nil:
			return agent.Agent{}, err
		}
		next, err := change(cur)
		if err != nil {
			return agent.Agent{}, err
		}
		if next.ManifestHash != cur.ManifestHash {
			if err := s.signManifest(ctx, &next); err != nil {
				return agent.Agent{}, err
			}
		}
		next.UpdatedAt = time.Now().UTC()
		rev, err := s.deps.Store.PutAgent(ctx, agent.Change{Op: op, Tenant: p.Tenant, Agent: next, By: p.Actor(), At: next.UpdatedAt}, cur.Revision)
		if errors.Is(err, control.ErrConflict) {
			continue
		}
		if err != nil {
			return agent.Agent{}, err
		}
		// Settings and declarations decide; the next decision must see them.
		if err := s.deps.Catalog.WaitFor(ctx, rev); err != nil {
			return agent.Agent{}, err
		}
		next.Revision = rev
		return next, nil
	}
	return agent.Agent{}, apperr.Conflict("agent %q is being updated concurrently; retry", id)
}

func (s *Service) declareAgent(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	d, err := agent.ParseDeclaration(httpkit.IgnoreUnknown(c, body, agent.DeclarationFields...), time.Now().UTC())
	if err != nil {
		return err
	}
	p := httpkit.Principal(c)
	if !p.ActsAs(pathID(c)) {
		return auth.ForbidOther(pathID(c))
	}
	a, err := s.updateAgent(c, pathID(c), agent.OpDeclared, true, func(cur agent.Agent) (agent.Agent, error) {
		if p.Bound() && !cur.Declaration.Narrows(d) {
			return cur, apperr.Forbidden("an agent key may only narrow its agent's declaration; widening it is for an admin")
		}
		cur.Declaration = &d
		return cur, nil
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

func (s *Service) agentSettings(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	body = httpkit.IgnoreUnknown(c, body, agent.SettingsFields...)
	a, err := s.updateAgent(c, pathID(c), agent.OpSettingsChanged, true, func(cur agent.Agent) (agent.Agent, error) {
		st, err := agent.ApplySettings(cur.Settings, body)
		cur.Settings = st
		return cur, err
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, struct {
		AgentID string `json:"agentId"`
		agent.Settings
		Revision uint64 `json:"revision"`
	}{a.AgentID, a.Settings, a.Revision})
}

// learnDeclaration folds a verdict's action into the agent's declaration,
// so the same tool and destination no longer draw UNDECLARED_* warnings.
func (s *Service) learnDeclaration(c echo.Context, rec rules.DecisionRecord) error {
	if rec.AgentID == "" {
		return apperr.Validation("this verdict has no agent to learn for")
	}
	a, err := s.updateAgent(c, rec.AgentID, agent.OpDeclared, true, func(cur agent.Agent) (agent.Agent, error) {
		d := agent.Declaration{Tools: []string{}, Destinations: []string{}}
		if cur.Declaration != nil {
			d = *cur.Declaration
			d.Tools, d.Destinations = slices.Clone(d.Tools), slices.Clone(d.Destinations)
		}
		if t := rec.Input.Action.Tool; t != "" && !slices.Contains(d.Tools, t) {
			d.Tools = append(d.Tools, t)
		}
		if h := rec.Input.Action.Host(); h != "" && !slices.Contains(d.Destinations, h) {
			d.Destinations = append(d.Destinations, h)
		}
		d.DeclaredAt = time.Now().UTC()
		cur.Declaration = &d
		return cur, nil
	})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

func (s *Service) listAgents(c echo.Context) error {
	limit, err := httpkit.Limit(c, 20, 100)
	if err != nil {
		return err
	}
	var after string
	if err := httpkit.DecodeCursor(c, &after); err != nil {
		return err
	}
	status, search := c.QueryParam("status"), strings.ToLower(c.QueryParam("search"))
	if status != "" && status != agent.StatusActive && status != agent.StatusPaused && status != agent.StatusRetired {
		return apperr.Validation("status is not valid", apperr.FieldError{Path: "status", Code: "invalid_format", Message: "status must be active, paused or retired"})
	}
	ctx := c.Request().Context()
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	var page []agent.Agent
	more := false
	for {
		batch, hasMore := s.deps.Catalog.Agents(p.Tenant, after, limit+1)
		for _, a := range batch {
			if p.Covers(a.AgentID) && (status == "" || a.Status == status) &&
				(search == "" || strings.Contains(strings.ToLower(a.AgentID), search) || strings.Contains(strings.ToLower(a.Name), search)) {
				page = append(page, a)
			}
			after = a.AgentID
		}
		if len(page) > limit {
			page, more = page[:limit], true
			break
		}
		if !hasMore {
			break
		}
	}
	var next string
	if more {
		next = page[len(page)-1].AgentID
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(page, more, next))
}

func projectAgent(m jetstream.Msg) (chx.Rows, error) {
	var ch agent.Change
	if err := json.Unmarshal(m.Data(), &ch); err != nil {
		return nil, fmt.Errorf("%w: decode agent change: %v", chx.ErrPoison, err)
	}
	meta, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", chx.ErrPoison, err)
	}
	a := ch.Agent
	a.Revision = meta.Sequence.Stream
	doc, _ := json.Marshal(a)
	return chx.Rows{{ch.Tenant, a.AgentID, a.Name, a.Description, a.Model, a.Tools, a.Framework, a.Version, a.Owner,
		a.Environment, a.Status, a.Source, a.ManifestHash, a.RegisteredAt.UnixMilli(), a.UpdatedAt.UnixMilli(), a.Revision, string(doc)}}, nil
}

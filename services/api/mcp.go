package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/mcppin"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// MCP tool pins (docs/mcp.md). The gateway reads a server's pins, shows
// the model only the tools whose definitions hash to them, and asks for a
// review (an mcp_tool_review decision, which the engine always routes to
// a person) for anything else. Pins are written only from a review a
// person approved: the gateway hands back the decision id, and the tools
// pinned are the ones that decision recorded, never ones from the
// request. Each write is a message on CONTROL, so it is in the audit log
// and the ledger.

// maxMCPServerName bounds a server name (it becomes a CONTROL subject
// token).
const maxMCPServerName = 256

// mcpPinsView is a server's pins as the API shows them.
type mcpPinsView struct {
	mcppin.ServerPins
	// Quarantined is true while no tool of the server is pinned.
	Quarantined bool   `json:"quarantined"`
	Revision    uint64 `json:"revision"`
}

func validMCPServer(server string) error {
	switch {
	case server == "":
		return apperr.Validation("server is required", apperr.FieldError{Path: "server", Code: "required", Message: "server names the MCP server"})
	case len(server) > maxMCPServerName:
		return apperr.Validation("server is too long", apperr.FieldError{Path: "server", Code: "too_long", Message: fmt.Sprintf("server must be at most %d bytes", maxMCPServerName)})
	case !utf8.ValidString(server):
		return apperr.Validation("server is not valid", apperr.FieldError{Path: "server", Code: "invalid_format", Message: "server must be UTF-8"})
	}
	return nil
}

// getMCPPins answers a server's pins; a server with none is quarantined
// (200, no tools), so the gateway tells "nothing approved" from an error.
func (s *Service) getMCPPins(c echo.Context) error {
	server := c.QueryParam("server")
	if err := validMCPServer(server); err != nil {
		return err
	}
	tenant := httpkit.Principal(c).Tenant
	p, rev, err := s.deps.Store.MCPPins(c.Request().Context(), tenant, server)
	if errors.Is(err, control.ErrNotFound) {
		p, err = mcppin.ServerPins{Tenant: tenant, Server: server}, nil
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, pinsView(p, rev))
}

func pinsView(p mcppin.ServerPins, rev uint64) mcpPinsView {
	if p.Tools == nil {
		p.Tools = []mcppin.Pin{}
	}
	return mcpPinsView{ServerPins: p, Quarantined: len(p.Tools) == 0, Revision: rev}
}

// pinMCPTools pins the tools of an approved review decision.
func (s *Service) pinMCPTools(c echo.Context) error {
	var in struct {
		DecisionID string `json:"decisionId"`
	}
	if err := httpkit.DecodeJSON(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	if in.DecisionID == "" {
		return apperr.Validation("decisionId is required", apperr.FieldError{Path: "decisionId", Code: "required", Message: "decisionId names an approved mcp_tool_review decision"})
	}
	p := httpkit.Principal(c)
	rec, err := s.decisionRecord(c, in.DecisionID)
	if err != nil {
		return err
	}
	if !p.ActsAs(rec.AgentID) {
		return apperr.Forbidden("this agent key may not use decisions of other agents")
	}
	act := rec.Input.Action
	if act.Kind != rules.KindMCPToolReview {
		return apperr.Conflict("decision %s is not an MCP tool review (action kind %q)", rec.ID, act.Kind)
	}
	if rec.Decision.Outcome != rules.RequireApproval {
		return apperr.Conflict("review %s was not routed to a person (outcome %s, reasons %v); nothing can be pinned from it", rec.ID, rec.Decision.Outcome, rec.Decision.ReasonCodes)
	}
	ctx := c.Request().Context()
	if err := s.deps.Board.Sync(ctx); err != nil {
		return err
	}
	a, ok := s.deps.Board.ByDecision(p.Tenant, rec.ID)
	if !ok {
		return apperr.Conflict("review %s has no pending action yet; wait for its approval (GET /v1/decisions/%s?wait=30s)", rec.ID, rec.ID)
	}
	// Only a person's approval pins: an expiry never does, whatever the
	// rule's onExpiry.
	if a.Status != approval.Approved {
		return apperr.Conflict("review %s is %s; only an approved review pins tools", rec.ID, a.Status)
	}
	args, err := reviewArguments(act)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	pins := make([]mcppin.Pin, 0, len(args.Tools))
	for _, t := range args.Tools {
		pins = append(pins, mcppin.Pin{Name: t.Name, Hash: t.Hash, Definition: t.Definition, DecisionID: rec.ID, ApprovedBy: a.DecidedBy, PinnedAt: now})
	}
	return s.changeMCPPins(c, p.Tenant, act.Publisher, func(cur mcppin.ServerPins) (mcppin.ServerPins, bool, error) {
		next, changed := cur.With(pins...)
		if !changed {
			return cur, false, nil // pinned already: pinning again is a no-op
		}
		if !cur.UnpinnedAt.IsZero() && rec.At.Before(cur.UnpinnedAt) {
			// Possibly the very approval an owner withdrew, replayed.
			return cur, false, apperr.Conflict("review %s was asked for before pins of server %q were removed (%s); it cannot pin anything: ask for a new review",
				rec.ID, act.Publisher, cur.UnpinnedAt.Format(time.RFC3339Nano))
		}
		if err := staleReview(cur, args); err != nil {
			return cur, false, err
		}
		next.Op, next.By, next.UpdatedAt = mcppin.OpPinned, a.DecidedBy, now
		return next, true, nil
	})
}

// unpinMCPTools removes a tool's pin (tool given) or every pin of a server
// (DELETE /v1/mcp/pins?server=&tool=): the gateway then holds the tool
// back (TOOL_NEW, or the whole server quarantined) until a person
// approves a new review. Reviews recorded before the removal can no
// longer pin (see pinMCPTools).
func (s *Service) unpinMCPTools(c echo.Context) error {
	server, tool := c.QueryParam("server"), c.QueryParam("tool")
	if err := validMCPServer(server); err != nil {
		return err
	}
	if len(tool) > maxMCPServerName || !utf8.ValidString(tool) {
		return apperr.Validation("tool is not valid", apperr.FieldError{Path: "tool", Code: "invalid_format", Message: fmt.Sprintf("tool must be UTF-8, at most %d bytes", maxMCPServerName)})
	}
	var names []string
	if tool != "" {
		names = []string{tool}
	}
	p := httpkit.Principal(c)
	return s.changeMCPPins(c, p.Tenant, server, func(cur mcppin.ServerPins) (mcppin.ServerPins, bool, error) {
		next, changed := cur.Without(names...)
		switch {
		case !changed && tool != "":
			return cur, false, apperr.NotFound("tool %q of server %q is not pinned", tool, server)
		case !changed:
			return cur, false, apperr.NotFound("server %q has no pinned tools", server)
		}
		now := time.Now().UTC()
		next.Op, next.By, next.UpdatedAt, next.UnpinnedAt = mcppin.OpUnpinned, p.Actor(), now, now
		return next, true, nil
	})
}

// changeMCPPins applies change to a server's pins (empty when it has none)
// and records the result on CONTROL with optimistic concurrency: a
// concurrent change of the same server moves the subject, so it reads
// again and re-applies, a few times. change answers the next state and
// whether to write it (false answers the current pins unchanged).
func (s *Service) changeMCPPins(c echo.Context, tenant, server string, change func(cur mcppin.ServerPins) (mcppin.ServerPins, bool, error)) error {
	ctx := c.Request().Context()
	for range 5 {
		cur, rev, err := s.deps.Store.MCPPins(ctx, tenant, server)
		switch {
		case errors.Is(err, control.ErrNotFound):
			cur, rev = mcppin.ServerPins{Tenant: tenant, Server: server}, 0
		case err != nil:
			return err
		}
		next, write, err := change(cur)
		if err != nil {
			return err
		}
		if !write {
			return c.JSON(http.StatusOK, pinsView(cur, rev))
		}
		seq, err := s.deps.Store.PutMCPPins(ctx, next, rev)
		if errors.Is(err, control.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		c.Response().Header().Set("Vigil-Control-Seq", strconv.FormatUint(seq, 10))
		return c.JSON(http.StatusOK, pinsView(next, seq))
	}
	return apperr.Conflict("the pins of server %q changed concurrently; retry", server)
}

// reviewArguments reads the tools a review decision recorded.
func reviewArguments(act rules.Action) (mcppin.ReviewArguments, error) {
	var args mcppin.ReviewArguments
	bad := func(msg string) error {
		return apperr.Conflict("the review decision carries no valid tool list: %s", msg)
	}
	raw, err := json.Marshal(act.Arguments)
	if err != nil {
		return args, bad(err.Error())
	}
	if err := json.Unmarshal(raw, &args); err != nil {
		return args, bad(err.Error())
	}
	if err := validMCPServer(act.Publisher); err != nil {
		return args, bad("the action names no valid publisher (server)")
	}
	if len(args.Tools) == 0 || len(args.Tools) > mcppin.MaxReviewTools {
		return args, bad(fmt.Sprintf("tools must list 1 to %d tools", mcppin.MaxReviewTools))
	}
	seen := map[string]bool{}
	for i, t := range args.Tools {
		if t.Name == "" || seen[t.Name] || !mcppin.ValidHash(t.Hash) {
			return args, bad(fmt.Sprintf("tools[%d] needs a unique name and a sha256 hash", i))
		}
		seen[t.Name] = true
	}
	return args, nil
}

// staleReview refuses a review whose tools were pinned to something else
// since it was asked for: approving an older version must not undo a
// newer approval.
func staleReview(cur mcppin.ServerPins, args mcppin.ReviewArguments) error {
	for _, t := range args.Tools {
		pin, ok := cur.Lookup(t.Name)
		if !ok || pin.Hash == t.Hash || pin.Hash == t.PreviousHash {
			continue
		}
		return apperr.Conflict("tool %q of server %q was pinned to %s by review %s after this review was asked for; ask again", t.Name, cur.Server, pin.Hash, pin.DecisionID)
	}
	return nil
}

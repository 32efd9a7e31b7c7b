package api

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// Halts (kill switches). A halt is recorded on CONTROL, where every policy
// replica's catalog picks it up; from then on every decision in its scope
// is block with HALTED. Actions already waiting for a person in the
// halt's scope are rejected by the halt, so their long-polls answer at
// once; and no pending action in a halt's scope can be approved while
// the halt is active (see decidePendingAction). Resuming does not revive
// what the halt rejected: the agent asks again.

// haltView is a halt as the API shows it.
type haltView struct {
	rules.Halt
	// PendingRejected counts the pending actions this request rejected
	// (raise only).
	PendingRejected *int `json:"pendingRejected,omitempty"`
}

func (s *Service) createHalt(c echo.Context) error {
	var in struct {
		Scope     string `json:"scope"`
		AgentID   string `json:"agentId"`
		SessionID string `json:"sessionId"`
		Reason    string `json:"reason"`
	}
	if err := httpkit.DecodeJSON(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	if err := rules.ValidateHalt(in.Scope, in.AgentID, in.SessionID, in.Reason); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	now := time.Now().UTC()
	h := rules.Halt{
		ID: rules.NewHaltID(), Tenant: p.Tenant, Scope: in.Scope, AgentID: in.AgentID, SessionID: in.SessionID, Reason: in.Reason,
		Op: rules.HaltRaised, By: p.Actor(), CreatedBy: p.Actor(), CreatedAt: now, Active: true,
	}
	ctx := c.Request().Context()
	seq, err := s.deps.Store.PutHalt(ctx, h, 0)
	if err != nil {
		return err
	}
	// Read-your-writes: this instance's next decision request carries a
	// CONTROL sequence at or past the halt, so the policy service waits
	// for it before deciding.
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	n := s.rejectPendingInScope(ctx, h)
	c.Response().Header().Set("Vigil-Control-Seq", strconv.FormatUint(seq, 10))
	return c.JSON(http.StatusCreated, haltView{Halt: h, PendingRejected: &n})
}

// rejectPendingInScope rejects the tenant's pending actions a new halt
// covers and returns how many it rejected. A failure here is logged, not
// returned: the halt is stored, and approving an action it covers is
// refused anyway while it is active.
func (s *Service) rejectPendingInScope(ctx context.Context, h rules.Halt) int {
	sctx, cancel := context.WithTimeout(ctx, s.cfg.DecisionTimeout)
	err := s.deps.Board.Sync(sctx)
	cancel()
	if err != nil {
		s.log.Warn("halt: approval board not current; pending actions left to the approval guard", slog.String("halt", h.ID), slog.String("error", err.Error()))
	}
	pending, _ := s.deps.Board.List(h.Tenant, approval.Filter{Status: string(approval.Pending), AgentID: h.AgentID}, nil, 1<<30)
	n := 0
	for _, a := range pending {
		if !h.Covers(a.AgentID, a.SessionID) {
			continue
		}
		dctx, cancel := context.WithTimeout(ctx, s.cfg.DecisionTimeout)
		_, err := approval.DecideEndpoint.Call(dctx, s.deps.NC, approval.DecideRequest{
			Tenant: h.Tenant, ID: a.ID, Decision: "reject", By: "halt:" + h.ID, Comment: "halted: " + h.Reason, System: true,
		})
		cancel()
		var ae *apperr.Error
		switch {
		case err == nil:
			n++
		case errors.As(err, &ae) && ae.Kind == apperr.KindConflict:
			// Decided or expired meanwhile: nothing left to stop.
		default:
			s.log.Warn("halt: could not reject a pending action", slog.String("halt", h.ID), slog.String("action", a.ID), slog.String("error", err.Error()))
		}
	}
	return n
}

func (s *Service) listHalts(c echo.Context) error {
	all, err := boolQuery(c, "all")
	if err != nil {
		return err
	}
	// A list reflects every halt stored when it was asked for, from any
	// instance.
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	hs := s.deps.Catalog.Halts(httpkit.Principal(c).Tenant, all)
	if hs == nil {
		hs = []rules.Halt{}
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(hs, false, nil))
}

// deleteHalt resumes: the halt ends, decisions in its scope are made by
// the rules again. Resuming an ended halt is a 409; exactly one resume
// is recorded.
func (s *Service) deleteHalt(c echo.Context) error {
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	h, rev, err := s.deps.Store.Halt(ctx, p.Tenant, pathID(c))
	if errors.Is(err, control.ErrNotFound) {
		return apperr.NotFound("halt %q not found", pathID(c))
	}
	if err != nil {
		return err
	}
	if !h.Active {
		return apperr.Conflict("halt %s already ended (resumed by %s)", h.ID, h.EndedBy)
	}
	now := time.Now().UTC()
	h.Active, h.Op, h.By, h.EndedBy, h.EndedAt = false, rules.HaltResumed, p.Actor(), p.Actor(), &now
	seq, err := s.deps.Store.PutHalt(ctx, h, rev)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("halt %s was resumed concurrently", h.ID)
	}
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	c.Response().Header().Set("Vigil-Control-Seq", strconv.FormatUint(seq, 10))
	return c.JSON(http.StatusOK, haltView{Halt: h})
}

// refuseApprovalUnderHalt refuses to approve a pending action an active
// halt covers. It reads CONTROL and GUARDIAN current first: approvals are
// rare and human, and a halt raised a moment ago elsewhere must count.
func (s *Service) refuseApprovalUnderHalt(ctx context.Context, tenant, id string) error {
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return err
	}
	if len(s.deps.Catalog.Halts(tenant, false)) == 0 {
		return nil
	}
	if err := s.deps.Board.Sync(ctx); err != nil {
		return err
	}
	a, ok := s.deps.Board.Get(tenant, id)
	if !ok {
		return nil // the guardian answers 404
	}
	if h, ok := s.deps.Catalog.HaltFor(tenant, a.AgentID, a.SessionID); ok {
		return apperr.Conflict("pending action %s is covered by active %s halt %s (%s); resume the halt before approving", a.ID, h.Scope, h.ID, h.Reason)
	}
	return nil
}

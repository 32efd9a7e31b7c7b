package api

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

func (s *Service) listPendingActions(c echo.Context) error {
	limit, err := httpkit.Limit(c, 20, 100)
	if err != nil {
		return err
	}
	var cur *approval.Cursor
	if c.QueryParam("cursor") != "" {
		cur = &approval.Cursor{}
		if err := httpkit.DecodeCursor(c, cur); err != nil {
			return err
		}
	}
	f := approval.Filter{Status: c.QueryParam("status"), AgentID: c.QueryParam("agentId"), Priority: c.QueryParam("priority"), ReviewerGroup: c.QueryParam("reviewerGroup")}
	if f.AgentID == "" {
		f.AgentID = c.QueryParam("agent")
	}
	switch approval.Status(f.Status) {
	case "", approval.Pending, approval.Approved, approval.Rejected, approval.Expired:
	default:
		return apperr.Validation("status is not valid", apperr.FieldError{Path: "status", Code: "invalid_format", Message: "status must be pending, approved, rejected or expired"})
	}
	switch c.QueryParam("reviewer") {
	case "":
	case "me":
		// The caller's queue: what they may approve now.
		p := httpkit.Principal(c)
		groups, err := s.reviewerGroups(c.Request().Context(), p)
		if err != nil {
			return err
		}
		f.Reviewer = &approval.Reviewer{By: p.Actor(), Groups: groups}
	default:
		return apperr.Validation("reviewer is not valid", apperr.FieldError{Path: "reviewer", Code: "invalid_format", Message: "reviewer must be me (the actions you may approve now)"})
	}
	if err := s.deps.Board.Sync(c.Request().Context()); err != nil {
		return err
	}
	page, more := s.deps.Board.List(httpkit.Principal(c).Tenant, f, cur, limit)
	var next any
	if more {
		last := page[len(page)-1]
		next = approval.Cursor{CreatedAt: last.CreatedAt, ID: last.ID}
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(page, more, next))
}

func (s *Service) getPendingAction(c echo.Context) error {
	if err := s.deps.Board.Sync(c.Request().Context()); err != nil {
		return err
	}
	a, ok := s.deps.Board.Get(httpkit.Principal(c).Tenant, pathID(c))
	if !ok {
		return apperr.NotFound("pending action %q not found", pathID(c))
	}
	return c.JSON(http.StatusOK, a)
}

func (s *Service) decidePendingAction(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var in struct {
		Decision      string `json:"decision"`
		Action        string `json:"action"`
		Approved      *bool  `json:"approved"`
		Comment       string `json:"comment"`
		ReviewerGroup string `json:"reviewerGroup"`
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return apperr.Validation("body must be a JSON object", apperr.FieldError{Path: "", Code: "malformed_json", Message: err.Error()})
	}
	if in.Decision == "" {
		in.Decision = in.Action
	}
	if in.Decision == "" && in.Approved != nil {
		in.Decision = map[bool]string{true: "approve", false: "reject"}[*in.Approved]
	}
	switch in.Decision {
	case "approve", "approved", "allow":
		in.Decision = "approve"
	case "reject", "rejected", "deny", "denied":
		in.Decision = "reject"
	case "reroute":
	default:
		return apperr.Validation("decision is not valid", apperr.FieldError{Path: "decision", Code: "invalid_format", Message: "decision must be approve, reject or reroute"})
	}
	if len(in.Comment) > 2000 {
		return apperr.Validation("comment is too long", apperr.FieldError{Path: "comment", Code: "too_long", Message: "comment must be at most 2000 bytes"})
	}
	p := httpkit.Principal(c)
	if in.Decision == "approve" {
		if err := s.refuseApprovalUnderHalt(c.Request().Context(), p.Tenant, pathID(c)); err != nil {
			return err
		}
	}
	groups, err := s.reviewerGroups(c.Request().Context(), p)
	if err != nil {
		return err
	}
	req := approval.DecideRequest{Tenant: p.Tenant, ID: pathID(c), Decision: in.Decision, Comment: in.Comment, ReviewerGroup: in.ReviewerGroup, By: p.Actor(), Groups: groups}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.DecisionTimeout)
	defer cancel()
	a, err := approval.DecideEndpoint.Call(ctx, s.deps.NC, req)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, a)
}

// reviewerGroups are the reviewer groups of the person deciding: a
// member's groups as of every change this instance has acknowledged
// (so a removal from a group counts at once); keys and service accounts
// belong to none.
func (s *Service) reviewerGroups(ctx context.Context, p auth.Principal) ([]string, error) {
	if p.Member == "" {
		return nil, nil
	}
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return nil, err
	}
	m, ok := s.deps.Catalog.Member(p.Tenant, p.Member)
	if !ok || m.RemovedAt != nil {
		return nil, nil
	}
	return m.Groups, nil
}

// redeemDecision answers whether the arguments an SDK is about to run
// are the ones approved for a decision, and if so records that they were
// redeemed: once, across every api and guardian instance.
func (s *Service) redeemDecision(c echo.Context) error {
	var in struct {
		Arguments json.RawMessage `json:"arguments"`
	}
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	var args map[string]any
	if len(in.Arguments) == 0 {
		return apperr.Validation("arguments are required", apperr.FieldError{Path: "arguments", Code: "required", Message: "arguments (the tool arguments about to be run, an object) are required"})
	}
	if err := json.Unmarshal(in.Arguments, &args); err != nil {
		return apperr.Validation("arguments must be an object", apperr.FieldError{Path: "arguments", Code: "invalid_type", Message: "arguments must be a JSON object (or null for none)"})
	}
	p, id := httpkit.Principal(c), pathID(c)
	rec, err := s.ownDecision(c, p, id, "redeem")
	if err != nil {
		return err
	}
	if rec.Decision.Outcome != rules.RequireApproval {
		return &apperr.Error{Kind: apperr.KindConflict, Message: fmt.Sprintf("decision %s is %s: only approved require_approval decisions are redeemed", id, rec.Decision.Outcome),
			Details: []apperr.FieldError{{Path: "decision", Code: approval.CodeNotApproved, Message: "the decision was not held for approval"}}}
	}
	ctx, cancel := context.WithTimeout(c.Request().Context(), s.cfg.DecisionTimeout)
	defer cancel()
	a, err := approval.RedeemEndpoint.Call(ctx, s.deps.NC, approval.RedeemRequest{Tenant: p.Tenant, DecisionID: id, ArgumentsDigest: approval.ArgumentsDigest(args), By: p.Actor()})
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{
		"decisionId": id, "approved": true, "redeemed": true, "argumentsDigest": a.ArgumentsDigest,
		"redemption": a.Redemption, "approval": a,
	})
}

// maxWait bounds GET /v1/decisions/:id?wait=…
const maxWait = 60 * time.Second

func parseWait(c echo.Context) (time.Duration, error) {
	w := c.QueryParam("wait")
	if w == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(w)
	if err != nil {
		var secs int
		if secs, err = strconv.Atoi(w); err == nil {
			d = time.Duration(secs) * time.Second
		}
	}
	if err != nil || d < 0 || d > maxWait {
		return 0, apperr.Validation("wait is not valid", apperr.FieldError{Path: "wait", Code: "out_of_range", Message: "wait must be a duration such as 30s, at most 60s"})
	}
	return d, nil
}

func (s *Service) decisionView(c echo.Context, rec *rules.DecisionRecord, a *approval.Action) map[string]any {
	out := map[string]any{}
	if rec != nil {
		b, _ := json.Marshal(rec)
		_ = json.Unmarshal(b, &out)
		out["status"] = s.verdictOf(*rec).Status
		out["decision"] = rec.Decision.Outcome.String()
		out["final"] = rec.Decision.Outcome != rules.RequireApproval
		s.amendView(out, rec)
	}
	if a != nil {
		out["decisionId"] = a.DecisionID
		out["decision"] = rules.RequireApproval.String()
		out["approval"] = a
		out["approvalStatus"] = a.Status
		out["final"] = a.Status.Final()
		out["argsDigest"] = a.ArgsDigest
		approvedBy := make([]string, len(a.Approvals))
		for i, v := range a.Approvals {
			approvedBy[i] = v.By
		}
		// "1 of 2, by bob" for an SDK or a console that shows the wait.
		out["approvalProgress"] = map[string]any{"required": max(a.Required, 1), "received": len(a.Approvals), "approvedBy": approvedBy}
		if a.Status.Final() {
			out["outcome"] = a.Outcome()
		}
	}
	return out
}

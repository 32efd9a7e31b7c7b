package api

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// LearnedException is the answer of POST /v1/verdicts/:id/learn on a
// decision a policy rule made: the drafts proposed, none of them in force.
type LearnedException struct {
	Learned string       `json:"learned"` // "policy_exception"
	InForce bool         `json:"inForce"`
	Message string       `json:"message"`
	Drafts  []PolicyView `json:"drafts"`
}

// learnVerdict learns from a verdict. Triage never lifts policy: when
// policy rules made the decision stricter than allow, learning proposes
// an exception as a draft policy per policy involved, which someone with
// policies:write applies (POST /v1/policies/:id/apply); until then the
// decision stands. A block from the org policy or a paused agent cannot
// be learned away at all. Any other verdict (a manifest finding, an
// anomaly, an allow) folds its action into the agent's declaration.
func (s *Service) learnVerdict(c echo.Context) error {
	rec, err := s.decisionRecord(c, pathID(c))
	if err != nil {
		return err
	}
	rulesOf := map[string][]string{} // policy id → matched rule ids
	var policies []string
	for _, m := range rec.Decision.Matches {
		if m.PolicyID == "" || m.Outcome <= rules.Allow {
			continue
		}
		if _, ok := rulesOf[m.PolicyID]; !ok {
			policies = append(policies, m.PolicyID)
		}
		if !slices.Contains(rulesOf[m.PolicyID], m.RuleID) {
			rulesOf[m.PolicyID] = append(rulesOf[m.PolicyID], m.RuleID)
		}
	}
	if len(policies) > 0 {
		return s.proposeException(c, rec, policies, rulesOf)
	}
	if rec.Decision.Outcome >= rules.RequireApproval {
		return apperr.Conflict("decision %q comes from the organisation policy or the agent's settings (%s); learning cannot lift it: change POST /v1/org-policy or the agent's settings",
			rec.ID, strings.Join(rec.Decision.ReasonCodes, ", "))
	}
	return s.learnDeclaration(c, rec)
}

// exceptionFor is the CEL condition that singles out what a decision was
// about: the same things its suppression signature covers (agent, action
// kind, tool, destination host).
func exceptionFor(rec rules.DecisionRecord) string {
	a := rec.Input.Action
	parts := []string{"agent.id == " + strconv.Quote(rec.AgentID), "action.kind == " + strconv.Quote(a.Kind), "action.tool == " + strconv.Quote(a.Tool)}
	if h := a.Host(); h != "" {
		parts = append(parts, "action.host == "+strconv.Quote(h))
	}
	return strings.Join(parts, " && ")
}

// proposeException stores, for each policy, a draft whose matched rules
// no longer hold for the decision's agent and action.
func (s *Service) proposeException(c echo.Context, rec rules.DecisionRecord, policies []string, rulesOf map[string][]string) error {
	ctx := c.Request().Context()
	p := httpkit.Principal(c)
	exc := exceptionFor(rec)
	out := LearnedException{Learned: "policy_exception", Drafts: []PolicyView{}}
	var seq uint64
	for _, pid := range policies {
		cur, err := s.deps.Store.Policy(ctx, p.Tenant, pid)
		if errors.Is(err, control.ErrNotFound) {
			return apperr.Conflict("policy %q that made decision %q no longer exists", pid, rec.ID)
		}
		if err != nil {
			return err
		}
		doc := cur.Doc
		doc.ID = newID("draft_")
		doc.Name = truncate("Exception to "+cur.Doc.Name, 200)
		doc.Description = fmt.Sprintf("Proposed by %s from verdict %s: rules %s of policy %s no longer hold when %s. Not in force until applied with POST /v1/policies/%s/apply.",
			p.Actor(), rec.ID, strings.Join(rulesOf[pid], ", "), pid, exc, doc.ID)
		// The Kaplaix form's rule is derived from its conditions; the
		// draft carries the amended rule instead.
		doc.Conditions, doc.DefaultDecision = nil, ""
		doc.Rules = slices.Clone(doc.Rules)
		for i, r := range doc.Rules {
			if slices.Contains(rulesOf[pid], r.ID) {
				doc.Rules[i].When = "(" + r.When + ") && !(" + exc + ")"
				// A Kaplaix rule-list rule becomes a CEL rule: its when
				// is no longer the one its conditions derive.
				doc.Rules[i].Decision, doc.Rules[i].Conditions = "", nil
			}
		}
		if err := doc.Normalize(); err != nil {
			return err
		}
		if err := s.compile(doc); err != nil {
			return err
		}
		now := time.Now().UTC()
		draft := rules.Record{ID: doc.ID, Tenant: p.Tenant, Doc: doc, Status: rules.StatusDraft, CreatedAt: now, UpdatedAt: now, By: p.Actor(),
			Proposal: &rules.Proposal{PolicyID: pid, BaseVersion: cur.Version, RuleIDs: rulesOf[pid], DecisionID: rec.ID, Exception: exc}}
		if seq, err = s.deps.Store.PutPolicy(ctx, draft, 0); err != nil {
			return err
		}
		draft.Version = seq
		out.Drafts = append(out.Drafts, viewPolicy(draft))
	}
	if err := s.applied(c, seq); err != nil {
		return err
	}
	ids, applies := make([]string, len(out.Drafts)), make([]string, len(out.Drafts))
	for i, d := range out.Drafts {
		ids[i], applies[i] = d.ID, "POST /v1/policies/"+d.ID+"/apply"
	}
	out.Message = fmt.Sprintf("Proposed an exception as draft policy %s. It is not in force: decision %s stands until someone with policies:write applies it (%s).",
		strings.Join(ids, ", "), rec.ID, strings.Join(applies, ", "))
	c.Response().Header().Set(echo.HeaderLocation, "/v1/policies/"+ids[0])
	return c.JSON(http.StatusCreated, out)
}

// applyDraft makes a draft's rules the next version of the policy it was
// proposed for, if that policy has not changed since, and archives the
// draft.
func (s *Service) applyDraft(c echo.Context) error {
	ctx := c.Request().Context()
	p := httpkit.Principal(c)
	draft, err := s.policyOr404(c)
	if err != nil {
		return err
	}
	if draft.Status != rules.StatusDraft || draft.Proposal == nil {
		return apperr.Conflict("policy %q is not a draft (status %s)", draft.ID, draft.Status)
	}
	prop := draft.Proposal
	target, err := s.deps.Store.Policy(ctx, p.Tenant, prop.PolicyID)
	if errors.Is(err, control.ErrNotFound) {
		return apperr.Conflict("policy %q, which draft %q changes, no longer exists", prop.PolicyID, draft.ID)
	}
	if err != nil {
		return err
	}
	stale := func() error {
		return apperr.Conflict("policy %q changed since draft %q was proposed (version %d, now %d); learn again or propose a new draft",
			prop.PolicyID, draft.ID, prop.BaseVersion, target.Version)
	}
	if target.Version != prop.BaseVersion || target.Status != rules.StatusActive {
		return stale()
	}
	doc := target.Doc
	doc.Rules, doc.Conditions, doc.DefaultDecision = draft.Doc.Rules, nil, ""
	if err := doc.Normalize(); err != nil {
		return err
	}
	if err := s.compile(doc); err != nil {
		return err
	}
	target.Doc, target.UpdatedAt, target.By = doc, time.Now().UTC(), p.Actor()
	rev, err := s.deps.Store.PutPolicy(ctx, target, prop.BaseVersion)
	if errors.Is(err, control.ErrConflict) {
		return stale()
	}
	if err != nil {
		return err
	}
	target.Version = rev
	draft.Status, draft.UpdatedAt, draft.By = rules.StatusArchived, target.UpdatedAt, p.Actor()
	last := rev
	if seq, err := s.deps.Store.PutPolicy(ctx, draft, draft.Version); err == nil {
		last = seq
	} else {
		// The policy is applied; a draft left behind is harmless (it is
		// not in force, and applying it again is refused as stale).
		s.log.Warn("applied draft not archived", "tenant", p.Tenant, "draft", draft.ID, "error", err.Error())
	}
	if err := s.applied(c, last); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewPolicy(target))
}

// truncate cuts s to at most n bytes on a character boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

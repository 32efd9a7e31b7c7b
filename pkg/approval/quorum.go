package approval

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/policy"
)

// Requirement is one matching rule's approvals block on a pending action:
// Required distinct people, each a member of one of its reviewer groups.
type Requirement struct {
	PolicyID string `json:"policyId,omitempty"`
	RuleID   string `json:"ruleId"`
	Required int    `json:"required"`
	// Groups are the reviewer groups; empty: anyone allowed to decide.
	Groups []string `json:"groups,omitempty"`
	// EscalateTo joins the reviewers at EscalatesAt; Escalated says the
	// guardian has done so.
	EscalateTo  []string   `json:"escalateTo,omitempty"`
	EscalatesAt *time.Time `json:"escalatesAt,omitempty"`
	Escalated   bool       `json:"escalated,omitempty"`
	// ApprovedBy are the approvers counted towards this requirement.
	ApprovedBy []string `json:"approvedBy"`
}

// Reviewers are the groups whose members count towards r now (empty:
// anyone).
func (r Requirement) Reviewers() []string {
	if len(r.Groups) == 0 {
		return nil
	}
	if r.Escalated {
		return append(slices.Clip(r.Groups), r.EscalateTo...)
	}
	return r.Groups
}

// counts reports whether a person in groups counts towards r. A group no
// one belongs to admits no one: an unknown group never means anyone.
func (r Requirement) counts(groups []string) bool {
	rev := r.Reviewers()
	return len(rev) == 0 || slices.ContainsFunc(groups, func(g string) bool { return slices.Contains(rev, g) })
}

// Met reports whether r has its approvals.
func (r Requirement) Met() bool { return len(r.ApprovedBy) >= r.Required }

// Vote is one person's approval of a pending action.
type Vote struct {
	By      string    `json:"by"`
	At      time.Time `json:"at"`
	Comment string    `json:"comment,omitempty"`
}

// Redemption records the one time an approved action was redeemed: the
// SDK ran it with the arguments whose digest matched.
type Redemption struct {
	At              time.Time `json:"at"`
	By              string    `json:"by"`
	ArgumentsDigest string    `json:"argumentsDigest"`
}

// Error detail codes of refused decisions and redemptions (the
// envelope's details[].code).
const (
	CodeSeparationOfDuties = "separation_of_duties"
	CodeNotReviewer        = "not_a_reviewer"
	CodeDuplicateApprover  = "duplicate_approver"
	CodeRequesterUnknown   = "requester_unknown"
	CodeNotApproved        = "not_approved"
	CodeArgumentsMismatch  = "arguments_mismatch"
	CodeAlreadyRedeemed    = "already_redeemed"
)

func refused(kind apperr.Kind, code, format string, args ...any) *apperr.Error {
	msg := fmt.Sprintf(format, args...)
	return &apperr.Error{Kind: kind, Message: msg, Details: []apperr.FieldError{{Path: "decision", Code: code, Message: msg}}}
}

// quorumFrom turns a decision's approvals blocks into requirements.
func quorumFrom(reqs []policy.ApprovalRequirement, at time.Time) []Requirement {
	var out []Requirement
	for _, r := range reqs {
		q := Requirement{PolicyID: r.PolicyID, RuleID: r.RuleID, Required: max(r.Required, 1), Groups: r.Groups, ApprovedBy: []string{}}
		if r.EscalateAfter > 0 && len(r.EscalateTo) > 0 {
			t := at.Add(r.EscalateAfter)
			q.EscalateTo, q.EscalatesAt = r.EscalateTo, &t
		}
		out = append(out, q)
	}
	return out
}

// required is how many distinct people must approve at least: the
// largest requirement, 1 without any.
func required(q []Requirement) int {
	n := 1
	for _, r := range q {
		n = max(n, r.Required)
	}
	return n
}

// Reviewer reports whether a person in groups may decide a: they count
// towards one of its requirements (anyone does when it has none).
func (a Action) Reviewer(groups []string) bool {
	return len(a.Quorum) == 0 || slices.ContainsFunc(a.Quorum, func(r Requirement) bool { return r.counts(groups) })
}

// Approve records by's approval (by is a member of groups) and reports
// whether a is now approved: every requirement has its distinct
// approvers. The one who asked never approves (separation of duties),
// nobody approves twice, and a person who counts towards no requirement
// is refused.
func (a *Action) Approve(by string, groups []string, comment string, now time.Time) (bool, error) {
	if err := a.MayApprove(by, groups); err != nil {
		return false, err
	}
	a.Approvals = append(slices.Clip(a.Approvals), Vote{By: by, At: now, Comment: comment})
	met := true
	q := slices.Clone(a.Quorum)
	for i := range q {
		if q[i].counts(groups) {
			q[i].ApprovedBy = append(slices.Clip(q[i].ApprovedBy), by)
		}
		met = met && q[i].Met()
	}
	a.Quorum = q
	return met && len(a.Approvals) >= a.Required, nil
}

// MayApprove reports why by (a member of groups) may not approve a now,
// or nil if they may.
func (a Action) MayApprove(by string, groups []string) error {
	switch {
	case a.RequestedBy == "":
		return refused(apperr.KindForbidden, CodeRequesterUnknown,
			"pending action %s does not record who asked for it, so separation of duties cannot be checked; it can only be rejected", a.ID)
	case by == a.RequestedBy:
		return refused(apperr.KindForbidden, CodeSeparationOfDuties, "%s asked for pending action %s and cannot approve it", by, a.ID)
	case slices.ContainsFunc(a.Approvals, func(v Vote) bool { return v.By == by }):
		return refused(apperr.KindConflict, CodeDuplicateApprover, "%s already approved pending action %s; another person must", by, a.ID)
	case !a.Reviewer(groups):
		return refused(apperr.KindForbidden, CodeNotReviewer, "%s is in none of the reviewer groups of pending action %s (%v)", by, a.ID, a.reviewerGroups())
	}
	return nil
}

// reviewerGroups lists the groups that may decide a now.
func (a Action) reviewerGroups() []string {
	var out []string
	for _, r := range a.Quorum {
		for _, g := range r.Reviewers() {
			if !slices.Contains(out, g) {
				out = append(out, g)
			}
		}
	}
	return out
}

// Overdue reports whether a pending action has expired at now: it is
// past ExpiresAt and nobody has settled it yet.
func (a Action) Overdue(now time.Time) bool {
	return a.Status == Pending && !now.Before(a.ExpiresAt)
}

// EscalationDue reports whether a requirement of a pending action should
// escalate at now.
func (a Action) EscalationDue(now time.Time) bool {
	return a.Status == Pending && slices.ContainsFunc(a.Quorum, func(r Requirement) bool {
		return !r.Escalated && r.EscalatesAt != nil && !now.Before(*r.EscalatesAt)
	})
}

// Escalate adds the escalation groups of every requirement due at now
// to its reviewers, and routes a to the first of them.
func (a *Action) Escalate(now time.Time) {
	q := slices.Clone(a.Quorum)
	for i := range q {
		if r := q[i]; !r.Escalated && r.EscalatesAt != nil && !now.Before(*r.EscalatesAt) {
			q[i].Escalated = true
			a.ReviewerGroup = r.EscalateTo[0]
		}
	}
	a.Quorum = q
}

// ArgumentsDigest is "sha256:" over the canonical JSON (sorted keys) of
// tool arguments; no arguments and an empty object are the same.
func ArgumentsDigest(args map[string]any) string {
	if args == nil {
		args = map[string]any{}
	}
	b, _ := json.Marshal(args)
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Redeem checks that a was approved for arguments with digest and not
// yet redeemed, and records the redemption.
func (a *Action) Redeem(by, digest string, now time.Time) error {
	switch {
	case a.Redemption != nil:
		return refused(apperr.KindConflict, CodeAlreadyRedeemed, "decision %s was already redeemed at %s", a.DecisionID, a.Redemption.At.Format(time.RFC3339))
	case a.Outcome() != Approved:
		return refused(apperr.KindConflict, CodeNotApproved, "decision %s is not approved (its pending action is %s)", a.DecisionID, a.Status)
	case digest != a.ArgumentsDigest:
		return refused(apperr.KindConflict, CodeArgumentsMismatch, "these arguments are not the ones approved for decision %s", a.DecisionID)
	}
	a.Redemption = &Redemption{At: now, By: by, ArgumentsDigest: digest}
	return nil
}

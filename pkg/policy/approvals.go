package policy

import (
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// DefaultApprovalTimeout is how long a pending action waits for people
// when its rule gives no approvalTimeout.
const DefaultApprovalTimeout = 15 * time.Minute

// Bounds of a rule's approvals block.
const (
	// MaxApprovalsRequired caps M in an M-of-N approval.
	MaxApprovalsRequired = 10
	// MaxReviewerGroups caps the groups a rule (or its escalation) names.
	MaxReviewerGroups = 20
)

// GroupRe is the shape of a reviewer group name: the same alphabet as a
// tenant id, so it is safe in subjects and query strings.
var GroupRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// ApprovalSpec says who must approve the action of a require_approval
// rule: Required distinct people (default 1), each a member of one of
// Groups (empty: anyone allowed to decide approvals), never the key or
// member that asked. Escalate widens the reviewers after a while.
type ApprovalSpec struct {
	Required int           `yaml:"required,omitempty" json:"required,omitempty"`
	Groups   []string      `yaml:"groups,omitempty" json:"groups,omitempty"`
	Escalate *EscalateSpec `yaml:"escalate,omitempty" json:"escalate,omitempty"`
}

// EscalateSpec adds the members of To to an action's reviewers once it
// has waited After without being decided.
type EscalateSpec struct {
	After string   `yaml:"after" json:"after"`
	To    []string `yaml:"to" json:"to"`
}

// ApprovalRequirement is one matching rule's approvals block, as a
// decision carries it to the guardian. Every requirement of a decision
// must be met before its action is approved.
type ApprovalRequirement struct {
	PolicyID string   `json:"policyId,omitempty"`
	RuleID   string   `json:"ruleId"`
	Required int      `json:"required"`
	Groups   []string `json:"groups,omitempty"`
	// EscalateAfter (0: never) and EscalateTo come from the rule's
	// escalate block.
	EscalateAfter time.Duration `json:"escalateAfterNs,omitempty"`
	EscalateTo    []string      `json:"escalateTo,omitempty"`
}

// checkApprovals validates r.Approvals, filling in defaults, and reports
// each problem through add.
func checkApprovals(r *Rule, p, who string, add func(path, code string, line int, format string, args ...any)) {
	a := r.Approvals
	if a == nil {
		return
	}
	p += ".approvals"
	if o, err := ParseOutcome(r.Outcome); err == nil && o != RequireApproval {
		add(p, "invalid_format", r.line, "%s: approvals apply to require_approval rules only", who)
	}
	if a.Required == 0 {
		a.Required = 1
	}
	if a.Required < 1 || a.Required > MaxApprovalsRequired {
		add(p+".required", "out_of_range", r.line, "%s: approvals.required must be between 1 and %d", who, MaxApprovalsRequired)
	}
	checkGroups(a.Groups, p+".groups", r.line, who, add)
	if a.Escalate == nil {
		return
	}
	e := a.Escalate
	after, err := time.ParseDuration(e.After)
	timeout := DefaultApprovalTimeout
	if t, terr := time.ParseDuration(r.ApprovalTimeout); terr == nil && r.ApprovalTimeout != "" {
		timeout = t
	}
	switch {
	case err != nil || after <= 0:
		add(p+".escalate.after", "invalid_format", r.line, "%s: approvals.escalate.after must be a positive duration such as 10m", who)
	case after >= timeout:
		add(p+".escalate.after", "out_of_range", r.line, "%s: approvals.escalate.after (%s) must be shorter than the approval timeout (%s), or the action expires before it escalates", who, after, timeout)
	}
	if len(e.To) == 0 {
		add(p+".escalate.to", "required", r.line, "%s: approvals.escalate.to must name at least one group", who)
	}
	if len(a.Groups) == 0 {
		add(p+".escalate", "invalid_format", r.line, "%s: approvals.escalate needs approvals.groups: without groups anyone may approve already", who)
	}
	checkGroups(e.To, p+".escalate.to", r.line, who, add)
}

func checkGroups(groups []string, p string, line int, who string, add func(path, code string, line int, format string, args ...any)) {
	if len(groups) > MaxReviewerGroups {
		add(p, "too_long", line, "%s: at most %d groups", who, MaxReviewerGroups)
	}
	for i, g := range groups {
		switch {
		case !GroupRe.MatchString(g):
			add(fmt.Sprintf("%s[%d]", p, i), "invalid_format", line, "%s: group %q must be lower-case letters, digits, _ and - (at most 63)", who, g)
		case slices.Index(groups, g) < i:
			add(fmt.Sprintf("%s[%d]", p, i), "duplicate", line, "%s: group %q is named twice", who, g)
		}
	}
}

// ValidateGroups checks a list of reviewer group names (a member's
// groups), with paths under path.
func ValidateGroups(groups []string, path string) error {
	var errs []apperr.FieldError
	checkGroups(groups, path, 0, "groups", func(p, code string, _ int, format string, args ...any) {
		errs = append(errs, apperr.FieldError{Path: p, Code: code, Message: fmt.Sprintf(format, args...)})
	})
	if len(errs) > 0 {
		return apperr.Validation("groups are not valid", errs...)
	}
	return nil
}

// requirement compiles a validated rule's approvals block.
func requirement(policyID string, r Rule) *ApprovalRequirement {
	if r.Approvals == nil {
		return nil
	}
	req := &ApprovalRequirement{PolicyID: policyID, RuleID: r.ID, Required: max(r.Approvals.Required, 1), Groups: r.Approvals.Groups}
	if e := r.Approvals.Escalate; e != nil {
		req.EscalateAfter, _ = time.ParseDuration(e.After)
		req.EscalateTo = e.To
	}
	return req
}

package auth

import (
	"fmt"
	"net/mail"
	"strings"
	"time"
)

// MemberStatus is where a console member stands.
type MemberStatus string

// Member statuses: invited until the first sign-in, then active.
const (
	MemberInvited MemberStatus = "invited"
	MemberActive  MemberStatus = "active"
)

// Member is a person who signs in to the console through the deployment's
// OIDC provider. Members are keyed by email within a tenant.
type Member struct {
	Tenant string `json:"tenant"`
	Email  string `json:"email"`
	Name   string `json:"name,omitempty"`
	Role   Role   `json:"role"`
	// Groups are the reviewer groups the member belongs to: the policy
	// rules' approvals.groups admit only their members.
	Groups    []string     `json:"groups,omitempty"`
	Status    MemberStatus `json:"status"`
	InvitedAt time.Time    `json:"invitedAt"`
	InvitedBy string       `json:"invitedBy,omitempty"`
	// Subject is the provider's stable id ("sub"), bound at first sign-in.
	Subject    string     `json:"subject,omitempty"`
	JoinedAt   *time.Time `json:"joinedAt,omitempty"`
	UpdatedAt  time.Time  `json:"updatedAt"`
	By         string     `json:"by,omitempty"`
	RemovedAt  *time.Time `json:"removedAt,omitempty"`
	Revision   uint64     `json:"-"`
	LastSeenAt *time.Time `json:"-"`
}

// NormalizeEmail validates an email address and returns its canonical,
// lower-cased form: the member's key.
func NormalizeEmail(s string) (string, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return "", fmt.Errorf("email is required")
	}
	if len(s) > 254 {
		return "", fmt.Errorf("email is longer than 254 characters")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return "", fmt.Errorf("%q is not a plain email address", s)
	}
	return strings.ToLower(s), nil
}

// Grants reports whether a principal with role r may hand out role
// target: nobody grants more than they hold, and only owners make owners.
func (r Role) Grants(target Role) bool {
	rank := map[Role]int{RoleOwner: 4, RoleAdmin: 3, RoleMember: 2, RoleViewer: 1, RoleAgent: 1}
	if rank[r] == 0 || rank[target] == 0 {
		return false
	}
	if target == RoleOwner {
		return r == RoleOwner
	}
	return rank[r] >= rank[target]
}

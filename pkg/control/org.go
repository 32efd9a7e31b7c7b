package control

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// orgState is the catalog's view of members and rate limits.
type orgState struct {
	members map[string]map[string]auth.Member // tenant → email → member
	byEmail map[string][]string               // email → tenants where a member
	limits  map[string]ratelimit.Limits       // tenant → limits
}

// applyOrg applies member and limit changes; it reports whether subj was
// one of them. Called with c.mu held.
func (c *Catalog) applyOrg(subj string, seq uint64, data []byte) bool {
	switch {
	case strings.HasPrefix(subj, "control.v1."+streams.MemberChanged+"."):
		var m auth.Member
		if err := json.Unmarshal(data, &m); err != nil {
			c.log.Error("catalog: bad member change", slog.String("subject", subj), slog.String("error", err.Error()))
			return true
		}
		m.Revision = seq
		if c.org.members == nil {
			c.org.members, c.org.byEmail = map[string]map[string]auth.Member{}, map[string][]string{}
		}
		inner(c.org.members, m.Tenant)[m.Email] = m
		tenants := c.org.byEmail[m.Email]
		if m.RemovedAt != nil {
			tenants = slices.DeleteFunc(tenants, func(t string) bool { return t == m.Tenant })
		} else if !slices.Contains(tenants, m.Tenant) {
			tenants = append(tenants, m.Tenant)
		}
		c.org.byEmail[m.Email] = tenants
		return true
	case strings.HasPrefix(subj, "control.v1."+streams.LimitsChanged+"."):
		var l ratelimit.Limits
		if err := json.Unmarshal(data, &l); err != nil {
			c.log.Error("catalog: bad limits change", slog.String("subject", subj), slog.String("error", err.Error()))
			return true
		}
		if c.org.limits == nil {
			c.org.limits = map[string]ratelimit.Limits{}
		}
		c.org.limits[l.Tenant] = l
		return true
	}
	return false
}

// Keys lists a tenant's keys, oldest first, revoked ones included.
func (c *Catalog) Keys(tenant string) []auth.KeyRecord {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []auth.KeyRecord
	for _, k := range c.keys {
		if k.Tenant == tenant {
			out = append(out, k)
		}
	}
	slices.SortFunc(out, func(a, b auth.KeyRecord) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// Members lists a tenant's current members by email.
func (c *Catalog) Members(tenant string) []auth.Member {
	c.mu.RLock()
	defer c.mu.RUnlock()
	var out []auth.Member
	for _, m := range c.org.members[tenant] {
		if m.RemovedAt == nil {
			out = append(out, m)
		}
	}
	slices.SortFunc(out, func(a, b auth.Member) int { return strings.Compare(a.Email, b.Email) })
	return out
}

// Member returns a tenant's member by (normalised) email.
func (c *Catalog) Member(tenant, email string) (auth.Member, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.org.members[tenant][email]
	return m, ok && m.RemovedAt == nil
}

// MemberTenants lists the tenants where email is a member.
func (c *Catalog) MemberTenants(email string) []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.org.byEmail[email])
}

// Limits returns a tenant's rate limits, or def when none were set.
func (c *Catalog) Limits(tenant string, def ratelimit.Limits) ratelimit.Limits {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if l, ok := c.org.limits[tenant]; ok {
		return l.Clamp(def)
	}
	return def
}

// Member returns a member's current state and revision, or ErrNotFound.
func (s *Store) Member(ctx context.Context, tenant, email string) (auth.Member, error) {
	var m auth.Member
	seq, err := s.last(ctx, streams.MemberSubject(tenant, email), &m)
	m.Revision = seq
	return m, err
}

// PutMember records a member's new state, provided the member is still at
// expect (0: the member must not exist yet).
func (s *Store) PutMember(ctx context.Context, m auth.Member, expect uint64) (uint64, error) {
	return s.put(ctx, streams.MemberSubject(m.Tenant, m.Email), m, &expect)
}

// PutLimits records a tenant's rate limits (last write wins).
func (s *Store) PutLimits(ctx context.Context, l ratelimit.Limits) (uint64, error) {
	l.UpdatedAt = time.Now().UTC()
	return s.put(ctx, streams.LimitsSubject(l.Tenant), l, nil)
}

// authenticateMember verifies an OIDC token and maps it to a principal:
// a service account's token to its configured tenant and role, a person's
// verified email to their membership in one tenant (memberships are keyed
// by tenant and email). The tenant is the token's tenant claim, else the
// one the request names (want, from x-tenant-id), else the person's only
// active membership bound to this subject, else their only invitation.
// An invitation to someone's email from another tenant therefore never
// locks them out of their own.
func (c *Catalog) authenticateMember(ctx context.Context, token, want string) (auth.Principal, error) {
	claims, err := c.oidc.Verify(ctx, token)
	if errors.Is(err, oidc.ErrInvalid) {
		return auth.Principal{}, apperr.Unauthenticated("invalid sign-in token")
	}
	if err != nil {
		return auth.Principal{}, apperr.Unavailable("the identity provider could not be reached", 5*time.Second, err)
	}
	if claims.ClientID != "" {
		return c.serviceAccount(claims)
	}
	email, err := auth.NormalizeEmail(claims.Email)
	if err != nil {
		return auth.Principal{}, apperr.Unauthenticated("invalid sign-in token")
	}
	tenant := claims.Tenant
	if tenant == "" {
		tenant = want
	}
	if tenant == "" {
		if tenant, err = c.memberTenant(ctx, email, claims.Subject); err != nil {
			return auth.Principal{}, err
		}
	}
	m, ok := c.Member(tenant, email)
	if !ok {
		// Perhaps invited a moment ago on another instance.
		if err := c.Sync(ctx); err != nil {
			return auth.Principal{}, err
		}
		m, ok = c.Member(tenant, email)
	}
	if !ok || (m.Subject != "" && m.Subject != claims.Subject) {
		return auth.Principal{}, apperr.Unauthenticated("not a member of this tenant")
	}
	return auth.Principal{Tenant: m.Tenant, Role: m.Role, Member: m.Email, Subject: claims.Subject}, nil
}

// memberTenant picks the tenant of a person who named none.
func (c *Catalog) memberTenant(ctx context.Context, email, subject string) (string, error) {
	tenants := c.MemberTenants(email)
	if len(tenants) == 0 {
		if err := c.Sync(ctx); err != nil {
			return "", err
		}
		tenants = c.MemberTenants(email)
	}
	var active, invited []string
	for _, t := range tenants {
		m, ok := c.Member(t, email)
		switch {
		case !ok:
		case m.Status == auth.MemberActive && m.Subject == subject:
			active = append(active, t)
		case m.Status == auth.MemberInvited:
			invited = append(invited, t)
		}
	}
	switch {
	case len(active) == 1:
		return active[0], nil
	case len(active) == 0 && len(invited) == 1:
		return invited[0], nil
	case len(active)+len(invited) > 1:
		return "", apperr.Unauthenticated("this person is a member of several tenants; name one with the x-tenant-id header")
	}
	return "", apperr.Unauthenticated("not a member of any tenant")
}

// serviceAccount maps a client-credentials token to its configured
// principal.
func (c *Catalog) serviceAccount(claims oidc.Claims) (auth.Principal, error) {
	sa, ok := c.oidc.ServiceAccount(claims.ClientID)
	role, err := auth.ParseRole(sa.Role)
	if !ok || err != nil || !tenant.Valid(sa.Tenant) {
		// Validated at configuration; refuse rather than guess.
		return auth.Principal{}, apperr.Unauthenticated("service account is not configured")
	}
	return auth.Principal{Tenant: sa.Tenant, Role: role, Service: claims.ClientID, Subject: claims.Subject}, nil
}

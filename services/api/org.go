package api

import (
	"context"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/ratelimit"
)

// keyView is how a key is shown: never its secret or hash.
type keyView struct {
	ID         string     `json:"id"`
	Name       string     `json:"name,omitempty"`
	Role       auth.Role  `json:"role"`
	Agents     []string   `json:"agents,omitempty"`
	Prefix     string     `json:"prefix"`
	Status     string     `json:"status"`
	CreatedAt  time.Time  `json:"createdAt"`
	CreatedBy  string     `json:"createdBy,omitempty"`
	ExpiresAt  *time.Time `json:"expiresAt,omitempty"`
	LastUsedAt *time.Time `json:"lastUsedAt,omitempty"`
	RevokedAt  *time.Time `json:"revokedAt,omitempty"`
	RevokedBy  string     `json:"revokedBy,omitempty"`
	// Key is the secret, present only in the response that created it.
	Key string `json:"key,omitempty"`
}

func viewKey(k auth.KeyRecord, now time.Time) keyView {
	v := keyView{ID: k.ID, Name: k.Name, Role: k.Role, Agents: k.Agents, Prefix: k.Prefix, CreatedAt: k.CreatedAt, CreatedBy: k.CreatedBy,
		ExpiresAt: k.ExpiresAt, RevokedAt: k.RevokedAt, RevokedBy: k.RevokedBy, Status: "active"}
	switch {
	case k.RevokedAt != nil:
		v.Status = "revoked"
	case !k.Active(now):
		v.Status = "expired"
	}
	return v
}

const maxKeyName = 100

func (s *Service) createKey(c echo.Context) error {
	var in struct {
		Name      string     `json:"name"`
		Role      string     `json:"role"`
		ExpiresAt *time.Time `json:"expiresAt"`
		ExpiresIn string     `json:"expiresIn"`
		agentBinding
	}
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	var fields []apperr.FieldError
	in.Name = strings.TrimSpace(in.Name)
	if in.Name == "" || len(in.Name) > maxKeyName {
		fields = append(fields, apperr.FieldError{Path: "name", Code: "invalid_format", Message: "name is required, at most 100 characters"})
	}
	role, err := auth.ParseRole(in.Role)
	if err != nil {
		fields = append(fields, apperr.FieldError{Path: "role", Code: "invalid_format", Message: err.Error()})
	}
	var agents []string
	if err == nil {
		if agents, err = auth.Binding(role, in.ids()); err != nil {
			fields = append(fields, fieldErrors(err)...)
		}
	}
	now := time.Now().UTC()
	exp := in.ExpiresAt
	if in.ExpiresIn != "" {
		d, err := time.ParseDuration(in.ExpiresIn)
		switch {
		case exp != nil:
			fields = append(fields, apperr.FieldError{Path: "expiresIn", Code: "invalid_format", Message: "give expiresAt or expiresIn, not both"})
		case err != nil || d <= 0:
			fields = append(fields, apperr.FieldError{Path: "expiresIn", Code: "invalid_format", Message: "expiresIn must be a positive duration such as \"720h\""})
		default:
			t := now.Add(d)
			exp = &t
		}
	}
	if exp != nil && !exp.After(now) {
		fields = append(fields, apperr.FieldError{Path: "expiresAt", Code: "invalid_format", Message: "expiry must be in the future"})
	}
	if len(fields) > 0 {
		return apperr.Validation("key is not valid", fields...)
	}
	if !p.Role.Grants(role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot create " + string(role) + " keys")
	}
	if exp != nil {
		t := exp.UTC()
		exp = &t
	}
	ctx := c.Request().Context()
	rec, token, err := s.deps.Store.IssueKey(ctx, control.KeySpec{Tenant: p.Tenant, Role: role, Name: in.Name, By: p.Actor(), ExpiresAt: exp, Agents: agents})
	if err != nil {
		return err
	}
	v := viewKey(rec, now)
	v.Key = token
	c.Response().Header().Set(echo.HeaderLocation, "/v1/keys/"+rec.ID)
	return c.JSON(http.StatusCreated, v)
}

// agentBinding is how a request names the agents a key is bound to: one
// (agentId) or a list (agentIds), or both.
type agentBinding struct {
	AgentID  string   `json:"agentId"`
	AgentIDs []string `json:"agentIds"`
}

func (b agentBinding) ids() []string {
	if b.AgentID == "" {
		return b.AgentIDs
	}
	return append([]string{b.AgentID}, b.AgentIDs...)
}

// fieldErrors returns a validation error's details, so they can join
// others in one answer.
func fieldErrors(err error) []apperr.FieldError {
	var ae *apperr.Error
	if errors.As(err, &ae) {
		return ae.Details
	}
	return []apperr.FieldError{{Message: err.Error()}}
}

// bindKey binds an agent key to the agents it may act as, replacing any
// earlier binding: the migration path for agent keys created before keys
// were bound (docs/security.md).
func (s *Service) bindKey(c echo.Context) error {
	var in agentBinding
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	ctx := c.Request().Context()
	id := pathID(c)
	k, rev, err := s.pathKey(c)
	if err != nil {
		return err
	}
	agents, err := auth.Binding(k.Role, in.ids())
	if err != nil {
		return err
	}
	if k.RevokedAt != nil {
		return apperr.Conflict("key %q is revoked", id)
	}
	seq, err := s.deps.Store.BindKey(ctx, k, agents, httpkit.Principal(c).Actor(), rev)
	if err := s.keyApplied(ctx, id, seq, err); err != nil {
		return err
	}
	k.Agents = agents
	return c.JSON(http.StatusOK, viewKey(k, time.Now()))
}

func (s *Service) listKeys(c echo.Context) error {
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return err
	}
	now := time.Now()
	keys := s.deps.Catalog.Keys(p.Tenant)
	out := make([]keyView, 0, len(keys))
	for _, k := range keys {
		v := viewKey(k, now)
		if s.usage != nil {
			if v.LastUsedAt = s.usage.LastUsed(k.ID); v.LastUsedAt == nil && k.ID == p.KeyID {
				// This very request uses it; the flush may not have run yet.
				t := now.UTC()
				v.LastUsedAt = &t
			}
		}
		out = append(out, v)
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, false, nil))
}

// keyApplied turns the outcome of a write to key id at CONTROL sequence
// seq into the API's, and waits until this instance's catalog holds it:
// from the caller's next request on, this instance applies the change
// (a revocation, a binding); the others follow CONTROL within
// milliseconds.
func (s *Service) keyApplied(ctx context.Context, id string, seq uint64, err error) error {
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("key %q changed meanwhile; retry", id)
	}
	if err != nil {
		return err
	}
	return s.deps.Catalog.WaitFor(ctx, seq)
}

// pathKey reads the caller's tenant's key named by the path, and its
// revision for an optimistic write.
func (s *Service) pathKey(c echo.Context) (auth.KeyRecord, uint64, error) {
	id := pathID(c)
	k, rev, err := s.deps.Store.Key(c.Request().Context(), httpkit.Principal(c).Tenant, id)
	if errors.Is(err, control.ErrNotFound) {
		return k, 0, apperr.NotFound("key %q not found", id)
	}
	return k, rev, err
}

func (s *Service) revokeKey(c echo.Context) error {
	p := httpkit.Principal(c)
	ctx := c.Request().Context()
	id := pathID(c)
	k, rev, err := s.pathKey(c)
	if err != nil {
		return err
	}
	if k.RevokedAt != nil {
		return c.JSON(http.StatusOK, viewKey(k, time.Now()))
	}
	if !p.Role.Grants(k.Role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot revoke " + string(k.Role) + " keys")
	}
	if k.Role == auth.RoleOwner && s.lastOwnerKey(p.Tenant, k.ID) {
		return apperr.Conflict("key %q is the tenant's last owner key and it has no owner member; create another owner first", id)
	}
	seq, err := s.deps.Store.RevokeKey(ctx, k, p.Actor(), rev)
	if err := s.keyApplied(ctx, id, seq, err); err != nil {
		return err
	}
	k, _, err = s.deps.Store.Key(ctx, p.Tenant, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewKey(k, time.Now()))
}

// lastOwnerKey reports whether revoking key id would leave the tenant
// with neither an active owner key nor an owner member.
func (s *Service) lastOwnerKey(tenant, id string) bool {
	now := time.Now()
	for _, k := range s.deps.Catalog.Keys(tenant) {
		if k.ID != id && k.Role == auth.RoleOwner && k.Active(now) {
			return false
		}
	}
	return !slices.ContainsFunc(s.deps.Catalog.Members(tenant), func(m auth.Member) bool { return m.Role == auth.RoleOwner })
}

func (s *Service) listMembers(c echo.Context) error {
	p := httpkit.Principal(c)
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(s.deps.Catalog.Members(p.Tenant), false, nil))
}

func (s *Service) inviteMember(c echo.Context) error {
	var in struct {
		Email  string   `json:"email"`
		Name   string   `json:"name"`
		Role   string   `json:"role"`
		Groups []string `json:"groups"`
	}
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	email, role, err := memberInput(in.Email, in.Role)
	if err != nil {
		return err
	}
	if len(in.Name) > maxKeyName {
		return apperr.Validation("member is not valid", apperr.FieldError{Path: "name", Code: "invalid_format", Message: "name is at most 100 characters"})
	}
	if err := rules.ValidateGroups(in.Groups, "groups"); err != nil {
		return err
	}
	if !p.Role.Grants(role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot invite " + string(role) + "s")
	}
	ctx := c.Request().Context()
	var expect uint64
	cur, err := s.deps.Store.Member(ctx, p.Tenant, email)
	switch {
	case errors.Is(err, control.ErrNotFound):
	case err != nil:
		return err
	case cur.RemovedAt == nil:
		return apperr.Conflict("%s is already a member", email)
	default:
		expect = cur.Revision
	}
	now := time.Now().UTC()
	m := auth.Member{Tenant: p.Tenant, Email: email, Name: strings.TrimSpace(in.Name), Role: role, Groups: slices.Clip(in.Groups), Status: auth.MemberInvited,
		InvitedAt: now, InvitedBy: p.Actor(), UpdatedAt: now, By: p.Actor()}
	if err := s.putMember(ctx, m, expect, "%s is already a member"); err != nil {
		return err
	}
	c.Response().Header().Set(echo.HeaderLocation, "/v1/members/"+url.PathEscape(email))
	return c.JSON(http.StatusCreated, m)
}

func (s *Service) setMemberRole(c echo.Context) error {
	var in struct {
		Email string `json:"email"`
		Role  string `json:"role"`
	}
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	email, role, err := memberInput(in.Email, in.Role)
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	m, err := s.currentMember(ctx, p.Tenant, email)
	if err != nil {
		return err
	}
	if !p.Role.Grants(role) || !p.Role.Grants(m.Role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot change a " + string(m.Role) + " to " + string(role))
	}
	if m.Role == role {
		return c.JSON(http.StatusOK, m)
	}
	if m.Role == auth.RoleOwner && s.ownerMembers(p.Tenant) <= 1 {
		return apperr.Conflict("%s is the last owner and cannot be demoted; make someone else owner first", email)
	}
	m.Role, m.UpdatedAt, m.By = role, time.Now().UTC(), p.Actor()
	if err := s.putMember(ctx, m, m.Revision, "member %q changed meanwhile; retry"); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

// setMemberGroups replaces a member's reviewer groups (the groups policy
// rules name in approvals.groups). Whoever may change the member's role
// may change their groups: both decide what the member may approve.
func (s *Service) setMemberGroups(c echo.Context) error {
	var in struct {
		Email  string    `json:"email"`
		Groups *[]string `json:"groups"`
	}
	if err := httpkit.DecodeLenient(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	var fields []apperr.FieldError
	email, err := auth.NormalizeEmail(in.Email)
	if err != nil {
		fields = append(fields, apperr.FieldError{Path: "email", Code: "invalid_format", Message: err.Error()})
	}
	var groups []string
	if in.Groups == nil {
		fields = append(fields, apperr.FieldError{Path: "groups", Code: "required", Message: "groups (a list, possibly empty) is required"})
	} else if groups = *in.Groups; len(groups) > 0 {
		if err := rules.ValidateGroups(groups, "groups"); err != nil {
			fields = append(fields, fieldErrors(err)...)
		}
	}
	if len(fields) > 0 {
		return apperr.Validation("member groups are not valid", fields...)
	}
	ctx := c.Request().Context()
	m, err := s.currentMember(ctx, p.Tenant, email)
	if err != nil {
		return err
	}
	if !p.Role.Grants(m.Role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot change the groups of a " + string(m.Role))
	}
	if slices.Equal(m.Groups, groups) {
		return c.JSON(http.StatusOK, m)
	}
	m.Groups, m.UpdatedAt, m.By = groups, time.Now().UTC(), p.Actor()
	if len(m.Groups) == 0 {
		m.Groups = nil
	}
	if err := s.putMember(ctx, m, m.Revision, "member %q changed meanwhile; retry"); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, m)
}

func (s *Service) removeMember(c echo.Context) error {
	p := httpkit.Principal(c)
	email, err := auth.NormalizeEmail(c.Param("email"))
	if err != nil {
		return apperr.Validation("email is not valid", apperr.FieldError{Path: "email", Code: "invalid_format", Message: err.Error()})
	}
	ctx := c.Request().Context()
	m, err := s.currentMember(ctx, p.Tenant, email)
	if err != nil {
		return err
	}
	if !p.Role.Grants(m.Role) {
		return apperr.Forbidden("a " + string(p.Role) + " cannot remove a " + string(m.Role))
	}
	if m.Role == auth.RoleOwner && s.ownerMembers(p.Tenant) <= 1 {
		return apperr.Conflict("%s is the last owner and cannot be removed; make someone else owner first", email)
	}
	now := time.Now().UTC()
	m.RemovedAt, m.UpdatedAt, m.By = &now, now, p.Actor()
	if err := s.putMember(ctx, m, m.Revision, "member %q changed meanwhile; retry"); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// currentMember returns a tenant's member, or 404 if there is none (or
// they were removed).
func (s *Service) currentMember(ctx context.Context, tenant, email string) (auth.Member, error) {
	m, err := s.deps.Store.Member(ctx, tenant, email)
	if errors.Is(err, control.ErrNotFound) || (err == nil && m.RemovedAt != nil) {
		return m, apperr.NotFound("member %q not found", email)
	}
	return m, err
}

// putMember writes m if the member is still at expect (409 with conflict,
// formatted with the email, otherwise) and waits until this instance's
// catalog has applied it, so the next request — a sign-in, a list —
// sees the change.
func (s *Service) putMember(ctx context.Context, m auth.Member, expect uint64, conflict string) error {
	seq, err := s.deps.Store.PutMember(ctx, m, expect)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict(conflict, m.Email)
	}
	if err != nil {
		return err
	}
	return s.deps.Catalog.WaitFor(ctx, seq)
}

func (s *Service) ownerMembers(tenant string) int {
	n := 0
	for _, o := range s.deps.Catalog.Members(tenant) {
		if o.Role == auth.RoleOwner {
			n++
		}
	}
	return n
}

func memberInput(email, role string) (string, auth.Role, error) {
	var fields []apperr.FieldError
	e, err := auth.NormalizeEmail(email)
	if err != nil {
		fields = append(fields, apperr.FieldError{Path: "email", Code: "invalid_format", Message: err.Error()})
	}
	r, err := auth.ParseRole(role)
	if err == nil && r == auth.RoleAgent {
		err = errors.New("members are people; agents use API keys")
	}
	if err != nil {
		fields = append(fields, apperr.FieldError{Path: "role", Code: "invalid_format", Message: err.Error()})
	}
	if len(fields) > 0 {
		return "", "", apperr.Validation("member is not valid", fields...)
	}
	return e, r, nil
}

// activateMembers marks an invited member active, binding the provider's
// subject, on their first signed-in request. It never delays the request.
func (s *Service) activateMembers(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		p := httpkit.Principal(c)
		if p.Member != "" {
			if m, ok := s.deps.Catalog.Member(p.Tenant, p.Member); ok && m.Status == auth.MemberInvited {
				go func() {
					now := time.Now().UTC()
					m.Status, m.Subject, m.JoinedAt, m.UpdatedAt, m.By = auth.MemberActive, p.Subject, &now, now, p.Actor()
					ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
					defer cancel()
					// A conflict means another request activated them first.
					_, _ = s.deps.Store.PutMember(ctx, m, m.Revision)
				}()
			}
		}
		return next(c)
	}
}

func (s *Service) getLimits(c echo.Context) error {
	p := httpkit.Principal(c)
	l := s.deps.Catalog.Limits(p.Tenant, s.cfg.RateLimits)
	l.Tenant = p.Tenant
	return c.JSON(http.StatusOK, l)
}

// setLimits changes some or all of the tenant's rates: a rate left out
// keeps its current value, and every rate stays within the deployment's
// own limits (s.cfg.RateLimits), so no tenant removes or raises a limit.
func (s *Service) setLimits(c echo.Context) error {
	var in struct {
		Ingest          *ratelimit.Rate `json:"ingest"`
		IngestPerKey    *ratelimit.Rate `json:"ingestPerKey"`
		Decisions       *ratelimit.Rate `json:"decisions"`
		DecisionsPerKey *ratelimit.Rate `json:"decisionsPerKey"`
	}
	if err := httpkit.DecodeJSON(c, s.cfg.MaxBodyBytes, &in); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	next := s.deps.Catalog.Limits(p.Tenant, s.cfg.RateLimits)
	for _, f := range []struct{ from, to *ratelimit.Rate }{
		{in.Ingest, &next.Ingest}, {in.IngestPerKey, &next.IngestPerKey}, {in.Decisions, &next.Decisions}, {in.DecisionsPerKey, &next.DecisionsPerKey},
	} {
		if f.from != nil {
			*f.to = *f.from
		}
	}
	if err := next.Validate(); err != nil {
		return apperr.Validation("rate limits are not valid", apperr.FieldError{Path: "", Code: "invalid_format", Message: err.Error()})
	}
	if over := next.Beyond(s.cfg.RateLimits); len(over) > 0 {
		fields := make([]apperr.FieldError, len(over))
		for i, v := range over {
			fields[i] = apperr.FieldError{Path: v.Field, Code: "out_of_range", Message: v.Message}
		}
		return apperr.Validation("rate limits exceed the deployment's bounds", fields...)
	}
	next.Tenant, next.By = p.Tenant, p.Actor()
	ctx := c.Request().Context()
	seq, err := s.deps.Store.PutLimits(ctx, next)
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.WaitFor(ctx, seq); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.deps.Catalog.Limits(p.Tenant, s.cfg.RateLimits))
}

package main

import (
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/oidc"
)

// TestOIDCTenantsAndServiceAccounts: memberships are per (tenant, email).
// Another tenant inviting a person's email does not lock them out of
// their own tenant (issue 14); a person in several tenants picks one
// with x-tenant-id; a client-credentials token acts as its configured
// service account.
func TestOIDCTenantsAndServiceAccounts(t *testing.T) {
	provider := newIDP(t)
	v, err := oidc.New(oidc.Config{Issuer: provider.Issuer, Audience: "vigil",
		ServiceAccounts: map[string]oidc.ServiceAccount{"ci-bot": {Tenant: "default", Role: "admin"}, "dash": {Tenant: "globex", Role: "viewer"}}})
	if err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	e := &env{testStack: startStack(t, stacktest.Options{DSN: db.DSN, OIDC: v}), db: db}
	e.owner = e.st.BootstrapKey
	globex := e.key("globex", auth.RoleOwner)
	withTenant := func(token, tenant string) response {
		return e.do(req{method: http.MethodGet, path: "/v1/agents", key: token, header: map[string]string{"x-tenant-id": tenant}})
	}

	expect(t, e.post(e.owner, "/v1/members/invite", map[string]any{"email": "ada@example.com", "role": "admin"}), 201, "default invites ada")
	ada := provider.Token(t, provider.Issuer, "ada@example.com", time.Hour, nil)
	expect(t, e.get(ada, "/v1/agents"), 200, "ada signs in to default")
	eventually(t, 5*time.Second, func() (bool, string) {
		m, ok := e.st.Catalog.Member("default", "ada@example.com")
		return ok && m.Status == auth.MemberActive, "ada is not active in default"
	})

	// Another tenant invites ada's email: she keeps her own tenant without
	// naming it, and reaches the other only by naming it.
	expect(t, e.post(globex, "/v1/members/invite", map[string]any{"email": "ada@example.com", "role": "viewer"}), 201, "globex invites ada")
	expect(t, e.get(ada, "/v1/agents"), 200, "ada still signs in to default without naming it")
	expect(t, withTenant(ada, "default"), 200, "ada names default")
	expect(t, withTenant(ada, "globex"), 200, "ada names globex")
	checkEnvelope(t, withTenant(ada, "initech"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
	eventually(t, 5*time.Second, func() (bool, string) {
		m, ok := e.st.Catalog.Member("globex", "ada@example.com")
		return ok && m.Status == auth.MemberActive, "ada is not active in globex"
	})
	// Active in both: a request must name one.
	checkEnvelope(t, e.get(ada, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
	expect(t, e.post(ada, "/v1/members/invite", map[string]any{"email": "x@example.com", "role": "viewer"}), 401, "no tenant named")
	r := e.do(req{method: http.MethodPost, path: "/v1/members/invite", key: ada, header: map[string]string{"x-tenant-id": "globex"}, body: map[string]any{"email": "x@example.com", "role": "viewer"}})
	checkEnvelope(t, r, 403, "FORBIDDEN", "forbidden", nil) // a viewer there

	// An unverified token never binds an invitation.
	expect(t, e.post(e.owner, "/v1/members/invite", map[string]any{"email": "cy@example.com", "role": "viewer"}), 201, "invite cy")
	cy := provider.Token(t, provider.Issuer, "cy@example.com", time.Hour, map[string]any{"email_verified": nil})
	checkEnvelope(t, e.get(cy, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
	if m, _ := e.st.Catalog.Member("default", "cy@example.com"); m.Status != auth.MemberInvited || m.Subject != "" {
		t.Fatalf("an unverified token bound the invitation: %+v", m)
	}

	// Service accounts: no email, mapped by client id to tenant and role.
	ci := provider.Token(t, provider.Issuer, "", time.Hour, map[string]any{"client_id": "ci-bot"})
	expect(t, e.post(ci, "/v1/agents", map[string]any{"agentId": "built-by-ci"}), 201, "the ci service account (admin) registers an agent")
	checkEnvelope(t, withTenant(ci, "globex"), 403, "FORBIDDEN", "forbidden", nil)
	dash := provider.Token(t, provider.Issuer, "", time.Hour, map[string]any{"client_id": "dash"})
	expect(t, e.get(dash, "/v1/agents"), 200, "the dashboard reads its tenant")
	checkEnvelope(t, e.post(dash, "/v1/agents", map[string]any{"agentId": "nope"}), 403, "FORBIDDEN", "forbidden", nil)
	stranger := provider.Token(t, provider.Issuer, "", time.Hour, map[string]any{"client_id": "stranger"})
	checkEnvelope(t, e.get(stranger, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
}

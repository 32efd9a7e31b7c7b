package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/oidc/oidctest"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/services/api"
)

type keyDoc struct {
	ID         string     `json:"id"`
	Name       string     `json:"name"`
	Role       string     `json:"role"`
	Agents     []string   `json:"agents"`
	Prefix     string     `json:"prefix"`
	Status     string     `json:"status"`
	Key        string     `json:"key"`
	ExpiresAt  *time.Time `json:"expiresAt"`
	LastUsedAt *time.Time `json:"lastUsedAt"`
	RevokedAt  *time.Time `json:"revokedAt"`
}

func TestKeysAPI(t *testing.T) {
	e := newEnv(t)
	admin := e.key("default", auth.RoleAdmin)
	member := e.key("default", auth.RoleMember)
	other := e.key("globex", auth.RoleOwner)

	r := e.post(e.owner, "/v1/keys", map[string]any{"name": "ci deploys", "role": "agent", "agentId": "ci-bot"})
	expect(t, r, http.StatusCreated, "create key")
	var k keyDoc
	r.decode(t, &k)
	if _, ok := auth.ParseToken(k.Key); !ok || k.Role != "agent" || k.Status != "active" || !strings.HasPrefix(k.Key, strings.TrimSuffix(k.Prefix, "…")) {
		t.Fatalf("created key %+v", k)
	}
	expect(t, e.get(k.Key, "/v1/agents"), http.StatusOK, "the new key authenticates")

	// The listing never shows a secret or a hash, and shows last use.
	r = e.get(e.owner, "/v1/keys")
	expect(t, r, http.StatusOK, "list keys")
	if bytes.Contains(r.body, []byte(k.Key[25:])) || bytes.Contains(r.body, []byte("sha256:")) || bytes.Contains(r.body, []byte(`"key"`)) {
		t.Fatalf("key listing leaks a secret: %s", r.body)
	}
	var list page[keyDoc]
	r.decode(t, &list)
	found := false
	for _, x := range list.Data {
		found = found || x.ID == k.ID
	}
	if !found || len(list.Data) < 3 {
		t.Fatalf("listing lacks the new key: %+v", list.Data)
	}
	if r := e.get(other, "/v1/keys"); bytes.Contains(r.body, []byte(k.ID)) {
		t.Fatalf("another tenant lists this tenant's key: %s", r.body)
	}

	for _, tc := range []struct {
		name   string
		key    string
		body   any
		status int
		code   string
	}{
		{"member may not manage keys", member, map[string]any{"name": "x", "role": "viewer"}, 403, "forbidden"},
		{"admin may not mint owners", admin, map[string]any{"name": "x", "role": "owner"}, 403, "forbidden"},
		{"unknown role", e.owner, map[string]any{"name": "x", "role": "root"}, 400, "invalid_request"},
		{"no name", e.owner, map[string]any{"role": "viewer"}, 400, "invalid_request"},
		{"past expiry", e.owner, map[string]any{"name": "x", "role": "viewer", "expiresAt": "2001-01-01T00:00:00Z"}, 400, "invalid_request"},
		{"both expiries", e.owner, map[string]any{"name": "x", "role": "viewer", "expiresAt": "2101-01-01T00:00:00Z", "expiresIn": "1h"}, 400, "invalid_request"},
		{"bad duration", e.owner, map[string]any{"name": "x", "role": "viewer", "expiresIn": "soon"}, 400, "invalid_request"},
		// Unknown fields are ignored (fidelity_e2e_test.go); the known ones
		// beside them are still checked.
		{"unknown field beside an invalid role", e.owner, map[string]any{"name": "x", "role": "root", "scopes": []string{"all"}}, 400, "invalid_request"},
		{"not JSON", e.owner, "role=viewer", 400, "invalid_request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post(tc.key, "/v1/keys", tc.body)
			var env envelope
			if r.status != tc.status {
				t.Fatalf("want %d, got %s", tc.status, r)
			}
			r.decode(t, &env)
			if env.Code != tc.code {
				t.Errorf("code %q, want %q: %s", env.Code, tc.code, r)
			}
		})
	}

	// A mistyped key is refused by its checksum, the same as an unknown one.
	typo := k.Key[:30] + string(k.Key[30]^1) + k.Key[31:]
	checkEnvelope(t, e.get(typo, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)

	// Revocation: refused at once here, and by another instance's catalog
	// as soon as it follows CONTROL.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	peer := control.NewCatalog(e.st.JS, testLogger(t))
	if err := peer.Run(ctx); err != nil {
		t.Fatal(err)
	}
	if err := peer.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := peer.Authenticate(ctx, k.Key); err != nil {
		t.Fatalf("peer refuses a live key: %v", err)
	}
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/keys/" + k.ID, key: other}), 404, "another tenant revokes")
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/keys/" + k.ID, key: member}), 403, "a member revokes")
	r = e.do(req{method: http.MethodDelete, path: "/v1/keys/" + k.ID, key: admin})
	expect(t, r, http.StatusOK, "revoke")
	var revoked keyDoc
	r.decode(t, &revoked)
	if revoked.Status != "revoked" || revoked.RevokedAt == nil {
		t.Fatalf("revoked key %+v", revoked)
	}
	checkEnvelope(t, e.get(k.Key, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
	start := time.Now()
	eventually(t, 5*time.Second, func() (bool, string) {
		_, err := peer.Authenticate(ctx, k.Key)
		return err != nil, "the peer still accepts the revoked key"
	})
	t.Logf("revocation reached the peer catalog in %v", time.Since(start))
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/keys/" + k.ID, key: admin}), http.StatusOK, "revoking twice is idempotent")

	// Expiry: a key that lives one second.
	r = e.post(e.owner, "/v1/keys", map[string]any{"name": "brief", "role": "viewer", "expiresIn": "1s"})
	expect(t, r, http.StatusCreated, "create expiring key")
	var brief keyDoc
	r.decode(t, &brief)
	if brief.ExpiresAt == nil {
		t.Fatal("no expiresAt")
	}
	time.Sleep(time.Until(*brief.ExpiresAt) + 50*time.Millisecond)
	checkEnvelope(t, e.get(brief.Key, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)

	// The last owner key of a tenant without owner members cannot go.
	r = e.get(other, "/v1/keys")
	var globex page[keyDoc]
	r.decode(t, &globex)
	if len(globex.Data) != 1 {
		t.Fatalf("globex keys: %+v", globex.Data)
	}
	checkEnvelope(t, e.do(req{method: http.MethodDelete, path: "/v1/keys/" + globex.Data[0].ID, key: other}), 409, "CONFLICT", "conflict", nil)

	// Idempotency-Key: a replay returns the original key, not a new one.
	h := map[string]string{"Idempotency-Key": "key-create-1"}
	r1 := e.do(req{method: http.MethodPost, path: "/v1/keys", key: e.owner, body: map[string]any{"name": "idem", "role": "viewer"}, header: h})
	r2 := e.do(req{method: http.MethodPost, path: "/v1/keys", key: e.owner, body: map[string]any{"name": "idem", "role": "viewer"}, header: h})
	expect(t, r1, 201, "first create")
	if !bytes.Equal(r1.body, r2.body) {
		t.Fatalf("replay differs:\n%s\n%s", r1.body, r2.body)
	}
	checkEnvelope(t, e.do(req{method: http.MethodPost, path: "/v1/keys", key: e.owner, body: map[string]any{"name": "other", "role": "viewer"}, header: h}), 409, "CONFLICT", "conflict", nil)

	// Issue 14: an admin replaying an owner's key creation with the same
	// Idempotency-Key gets its own answer (403), never the owner's key.
	k1 := map[string]string{"Idempotency-Key": "k-1"}
	ownerKey := map[string]any{"name": "root", "role": "owner"}
	r1 = e.do(req{method: http.MethodPost, path: "/v1/keys", key: e.owner, body: ownerKey, header: k1})
	expect(t, r1, 201, "owner creates an owner key")
	var created keyDoc
	r1.decode(t, &created)
	r2 = e.do(req{method: http.MethodPost, path: "/v1/keys", key: admin, body: ownerKey, header: k1})
	checkEnvelope(t, r2, 403, "FORBIDDEN", "forbidden", nil)
	if r2.header.Get("Idempotent-Replayed") != "" || bytes.Contains(r2.body, []byte(created.Key)) {
		t.Fatalf("the admin's replay reveals the owner's key: %s", r2.body)
	}
}

func TestKeyLastUsed(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for the usage flush")
	}
	e := newEnv(t)
	viewer := e.key("default", auth.RoleViewer)
	expect(t, e.get(viewer, "/v1/agents"), 200, "use the viewer key")
	eventually(t, 15*time.Second, func() (bool, string) {
		var list page[keyDoc]
		e.get(e.owner, "/v1/keys").decode(t, &list)
		for _, k := range list.Data {
			if k.Role == "viewer" && k.LastUsedAt != nil {
				return true, ""
			}
		}
		return false, "the viewer key shows no last use"
	})
}

type memberDoc struct {
	Email  string `json:"email"`
	Role   string `json:"role"`
	Status string `json:"status"`
}

// newIDP runs an OIDC provider for the test (pkg/oidc/oidctest) whose
// tokens are issued for the audience "vigil".
func newIDP(t *testing.T) *oidctest.Provider { return oidctest.New(t, oidctest.Options{}) }

func TestMembersAndOIDC(t *testing.T) {
	provider := newIDP(t)
	v, err := oidc.New(oidc.Config{Issuer: provider.Issuer, Audience: "vigil"})
	if err != nil {
		t.Fatal(err)
	}
	db := chtest.New(t)
	e := &env{testStack: startStack(t, stacktest.Options{DSN: db.DSN, OIDC: v}), db: db}
	e.owner = e.st.BootstrapKey
	admin := e.key("default", auth.RoleAdmin)
	viewer := e.key("default", auth.RoleViewer)

	r := e.post(e.owner, "/v1/members/invite", map[string]any{"email": "Ada@Example.com", "role": "owner"})
	expect(t, r, http.StatusCreated, "invite owner")
	var m memberDoc
	r.decode(t, &m)
	if m.Email != "ada@example.com" || m.Role != "owner" || m.Status != "invited" {
		t.Fatalf("member %+v", m)
	}
	expect(t, e.post(admin, "/v1/members/invite", map[string]any{"email": "bob@example.com", "role": "viewer"}), 201, "admin invites a viewer")
	for _, tc := range []struct {
		name   string
		key    string
		body   any
		status int
	}{
		{"duplicate", e.owner, map[string]any{"email": "ada@example.com", "role": "viewer"}, 409},
		{"viewer invites", viewer, map[string]any{"email": "c@example.com", "role": "viewer"}, 403},
		{"admin invites an owner", admin, map[string]any{"email": "c@example.com", "role": "owner"}, 403},
		{"bad email", e.owner, map[string]any{"email": "not an email", "role": "viewer"}, 400},
		{"agent role", e.owner, map[string]any{"email": "c@example.com", "role": "agent"}, 400},
		{"missing role", e.owner, map[string]any{"email": "c@example.com"}, 400},
	} {
		t.Run("invite "+tc.name, func(t *testing.T) {
			expect(t, e.post(tc.key, "/v1/members/invite", tc.body), tc.status, tc.name)
		})
	}

	// Roles: the last owner cannot be demoted; an admin cannot touch owners.
	checkEnvelope(t, e.post(e.owner, "/v1/members/role", map[string]any{"email": "ada@example.com", "role": "admin"}), 409, "CONFLICT", "conflict", nil)
	expect(t, e.post(admin, "/v1/members/role", map[string]any{"email": "ada@example.com", "role": "viewer"}), 403, "admin demotes an owner")
	expect(t, e.post(admin, "/v1/members/role", map[string]any{"email": "bob@example.com", "role": "member"}), 200, "admin promotes a viewer")
	expect(t, e.post(admin, "/v1/members/role", map[string]any{"email": "nobody@example.com", "role": "member"}), 404, "unknown member")
	expect(t, e.post(e.owner, "/v1/members/role", map[string]any{"email": "bob@example.com", "role": "owner"}), 200, "owner makes an owner")
	expect(t, e.post(e.owner, "/v1/members/role", map[string]any{"email": "ada@example.com", "role": "admin"}), 200, "with two owners, one may step down")

	var members page[memberDoc]
	e.get(viewer, "/v1/members").decode(t, &members)
	if len(members.Data) != 2 || members.Data[0].Email != "ada@example.com" || members.Data[0].Role != "admin" || members.Data[1].Role != "owner" {
		t.Fatalf("members %+v", members.Data)
	}

	// Sign-in: a member's token works with the member's role.
	ada := provider.Token(t, provider.Issuer, "ada@example.com", time.Hour, nil)
	expect(t, e.get(ada, "/v1/agents"), 200, "ada reads agents")
	expect(t, e.post(ada, "/v1/members/role", map[string]any{"email": "bob@example.com", "role": "owner"}), 403, "an admin member cannot touch owners")
	eventually(t, 5*time.Second, func() (bool, string) {
		var ms page[memberDoc]
		e.get(viewer, "/v1/members").decode(t, &ms)
		return ms.Data[0].Status == "active", "ada is not active after signing in"
	})
	// Removal: refused for the last owner and for lesser roles; a removed
	// member's token stops working at once.
	bob := provider.Token(t, provider.Issuer, "bob@example.com", time.Hour, nil)
	expect(t, e.get(bob, "/v1/agents"), 200, "bob signs in")
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/members/bob@example.com", key: viewer}), 403, "viewer removes")
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/members/bob@example.com", key: admin}), 403, "admin removes an owner")
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/members/nobody@example.com", key: e.owner}), 404, "unknown member")
	checkEnvelope(t, e.do(req{method: http.MethodDelete, path: "/v1/members/not-an-email", key: e.owner}), 400, "VALIDATION_ERROR", "invalid_request", nil)
	expect(t, e.post(e.owner, "/v1/members/role", map[string]any{"email": "ada@example.com", "role": "owner"}), 200, "ada owner again")
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/members/bob@example.com", key: e.owner}), 204, "owner removes bob")
	checkEnvelope(t, e.get(bob, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
	checkEnvelope(t, e.do(req{method: http.MethodDelete, path: "/v1/members/ada@example.com", key: e.owner}), 409, "CONFLICT", "conflict", nil)
	expect(t, e.post(e.owner, "/v1/members/invite", map[string]any{"email": "bob@example.com", "role": "viewer"}), 201, "a removed member can be invited again")

	for _, tc := range []struct{ name, token string }{
		{"not a member", provider.Token(t, provider.Issuer, "eve@example.com", time.Hour, nil)},
		{"expired", provider.Token(t, provider.Issuer, "ada@example.com", -2*time.Minute, nil)},
		{"wrong issuer", provider.Token(t, "https://evil.example", "ada@example.com", time.Hour, nil)},
		{"unverified email", provider.Token(t, provider.Issuer, "ada@example.com", time.Hour, map[string]any{"email_verified": false})},
		{"email_verified absent", provider.Token(t, provider.Issuer, "ada@example.com", time.Hour, map[string]any{"email_verified": nil})},
		{"tampered", ada[:len(ada)-4] + "AAAA"},
		{"unsigned", "eyJhbGciOiJub25lIn0." + strings.Split(ada, ".")[1] + "."},
	} {
		t.Run("sign-in "+tc.name, func(t *testing.T) {
			checkEnvelope(t, e.get(tc.token, "/v1/agents"), 401, "AUTHENTICATION_FAILED", "unauthorized", nil)
		})
	}
}

type auditDoc struct {
	Actor      string          `json:"actor"`
	Action     string          `json:"action"`
	EntityType string          `json:"entityType"`
	EntityID   string          `json:"entityId"`
	Before     json.RawMessage `json:"before"`
	After      json.RawMessage `json:"after"`
}

func TestAuditLog(t *testing.T) {
	e := newEnv(t)
	admin := e.key("default", auth.RoleAdmin)
	viewer := e.key("default", auth.RoleViewer)
	other := e.key("globex", auth.RoleOwner)

	expect(t, e.post(admin, "/v1/agents", map[string]any{"agentId": "audited", "name": "Audited"}), 201, "register")
	expect(t, e.patch(admin, "/v1/agents/audited", map[string]any{"description": "now described"}), 200, "patch")
	var k keyDoc
	e.post(e.owner, "/v1/keys", map[string]any{"name": "temp", "role": "viewer"}).decode(t, &k)
	expect(t, e.do(req{method: http.MethodDelete, path: "/v1/keys/" + k.ID, key: admin}), 200, "revoke")
	expect(t, e.post(admin, "/v1/org-policy", map[string]any{"mode": "blocklist", "tools": []string{"rm"}}), 200, "org policy")
	expect(t, e.post(other, "/v1/agents", map[string]any{"agentId": "foreign"}), 201, "other tenant registers")

	var all page[auditDoc]
	eventually(t, 10*time.Second, func() (bool, string) {
		r := e.get(admin, "/v1/audit?limit=100")
		if r.status != 200 {
			return false, r.String()
		}
		all = page[auditDoc]{}
		r.decode(t, &all)
		return len(all.Data) >= 5, "audit has " + strconv.Itoa(len(all.Data)) + " entries"
	})
	find := func(typ, id, action string) auditDoc {
		t.Helper()
		for _, d := range all.Data {
			if d.EntityType == typ && d.EntityID == id && d.Action == action {
				return d
			}
		}
		t.Fatalf("no %s %s %s in %+v", typ, id, action, all.Data)
		return auditDoc{}
	}
	adminID, _ := auth.ParseToken(admin)
	reg := find("agent", "audited", "registered")
	upd := find("agent", "audited", "updated")
	if reg.Actor != "key:"+adminID || string(reg.Before) != "null" || !bytes.Contains(upd.Before, []byte(`"Audited"`)) || !bytes.Contains(upd.After, []byte("now described")) || bytes.Contains(upd.Before, []byte("now described")) {
		t.Errorf("agent entries: %+v / %+v", reg, upd)
	}
	rev := find("key", k.ID, "revoked")
	if rev.Actor != "key:"+adminID || bytes.Contains(rev.After, []byte("sha256:")) || !bytes.Contains(upd.After, []byte(`"manifestHash":"sha256:`)) {
		t.Errorf("key revocation entry %+v", rev)
	}
	find("org_policy", "org", "created")
	for _, d := range all.Data {
		if d.EntityID == "foreign" {
			t.Fatalf("another tenant's change in the audit log: %+v", d)
		}
	}

	// Filters, pagination, export, roles.
	var keysOnly page[auditDoc]
	e.get(admin, "/v1/audit?entityType=key").decode(t, &keysOnly)
	for _, d := range keysOnly.Data {
		if d.EntityType != "key" {
			t.Fatalf("entityType filter let through %+v", d)
		}
	}
	seen := 0
	cursor := ""
	for range 20 {
		r := e.get(admin, "/v1/audit?limit=2"+cursor)
		expect(t, r, 200, "page")
		var p page[auditDoc]
		r.decode(t, &p)
		seen += len(p.Data)
		if !p.HasMore {
			break
		}
		cursor = "&cursor=" + *p.NextCursor
	}
	if seen != len(all.Data) {
		t.Errorf("paging saw %d entries, the full list has %d", seen, len(all.Data))
	}
	r := e.get(admin, "/v1/audit/export")
	expect(t, r, 200, "export")
	lines := 0
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	for sc.Scan() {
		var d auditDoc
		if err := json.Unmarshal(sc.Bytes(), &d); err != nil {
			t.Fatalf("export line %q: %v", sc.Text(), err)
		}
		lines++
	}
	if lines != len(all.Data) {
		t.Errorf("export has %d lines, the list %d", lines, len(all.Data))
	}
	expect(t, e.get(viewer, "/v1/audit"), 403, "viewers do not read the audit log")
	checkEnvelope(t, e.get(admin, "/v1/audit?from=yesterday"), 400, "VALIDATION_ERROR", "invalid_request", nil)
	var foreign page[auditDoc]
	e.get(other, "/v1/audit").decode(t, &foreign)
	for _, d := range foreign.Data {
		if d.EntityID == "audited" {
			t.Fatalf("globex sees default's audit: %+v", d)
		}
	}
}

func TestRateLimits(t *testing.T) {
	db := chtest.New(t)
	e := &env{testStack: startStack(t, stacktest.Options{DSN: db.DSN}), db: db}
	e.owner = e.st.BootstrapKey
	agentA, agentB := e.key("default", auth.RoleAgent, "rl", "rl-agent"), e.key("default", auth.RoleAgent, "rl")
	e.register("default", "rl")
	viewer := e.key("default", auth.RoleViewer)

	checkEnvelope(t, e.post(e.owner, "/v1/settings/rate-limits", map[string]any{"decisions": map[string]any{"perSecond": -1, "burst": 1}}), 400, "VALIDATION_ERROR", "invalid_request", nil)
	expect(t, e.post(viewer, "/v1/settings/rate-limits", map[string]any{}), 403, "viewer sets limits")

	// Issue 14: `{}` used to remove every limit. Now a rate left out keeps
	// its value, no rate goes beyond the deployment's (here the defaults),
	// and only owners change them.
	admin := e.key("default", auth.RoleAdmin)
	checkEnvelope(t, e.post(admin, "/v1/settings/rate-limits", map[string]any{"ingest": map[string]any{"perSecond": 1, "burst": 1}}), 403, "FORBIDDEN", "forbidden", nil)
	var kept ratelimit.Limits
	r0 := e.post(e.owner, "/v1/settings/rate-limits", map[string]any{})
	expect(t, r0, 200, "empty body")
	r0.decode(t, &kept)
	if kept.Ingest != ratelimit.DefaultLimits.Ingest || kept.DecisionsPerKey != ratelimit.DefaultLimits.DecisionsPerKey {
		t.Fatalf("{} changed the limits: %+v", kept)
	}
	for _, body := range []map[string]any{
		{"ingest": map[string]any{"perSecond": 0, "burst": 0}},
		{"decisions": map[string]any{"perSecond": ratelimit.DefaultLimits.Decisions.PerSecond * 10, "burst": 1}},
		{"decisionsPerKey": map[string]any{"perSecond": 1, "burst": ratelimit.DefaultLimits.DecisionsPerKey.Burst + 1}},
	} {
		checkEnvelope(t, e.post(e.owner, "/v1/settings/rate-limits", body), 400, "VALIDATION_ERROR", "invalid_request", nil)
	}
	r := e.post(e.owner, "/v1/settings/rate-limits", map[string]any{
		"decisions": map[string]any{"perSecond": 1, "burst": 3}, "decisionsPerKey": map[string]any{"perSecond": 1, "burst": 2},
		"ingest": map[string]any{"perSecond": 1, "burst": 5}, "ingestPerKey": map[string]any{"perSecond": 100, "burst": 100},
	})
	expect(t, r, 200, "set limits")

	evaluate := func(key string) response {
		return e.post(key, "/v1/decisions.evaluate", map[string]any{"agentId": "rl", "action": "search"})
	}
	expect(t, evaluate(agentA), 200, "A 1")
	expect(t, evaluate(agentA), 200, "A 2")
	limited := evaluate(agentA)
	checkEnvelope(t, limited, 429, "RATE_LIMITED", "rate_limited", nil)
	ra, err := strconv.Atoi(limited.header.Get("Retry-After"))
	if err != nil || ra < 1 {
		t.Fatalf("Retry-After = %q", limited.header.Get("Retry-After"))
	}
	// Key B has its own bucket but shares the tenant's: one more fits.
	expect(t, evaluate(agentB), 200, "B 1")
	checkEnvelope(t, evaluate(agentB), 429, "RATE_LIMITED", "rate_limited", nil)
	time.Sleep(time.Duration(ra)*time.Second + 100*time.Millisecond)
	expect(t, evaluate(agentA), 200, "A recovers after Retry-After")

	// Ingest: a batch costs its events.
	events := make([]map[string]any, 5)
	for i := range events {
		events[i] = ev("rl-agent", "rl-session", time.Now())
	}
	b := e.post(agentA, "/v1/events/batch", map[string]any{"events": events})
	expect(t, b, http.StatusAccepted, "batch within the burst")
	checkEnvelope(t, e.post(agentA, "/v1/events", ev("rl-agent", "rl-session", time.Now())), 429, "RATE_LIMITED", "rate_limited", nil)
	// Another tenant is not affected.
	other := e.key("globex", auth.RoleAgent, "rl")
	e.register("globex", "rl")
	expect(t, evaluate(other), 200, "another tenant")
}

// TestDefaultLimits checks the configured defaults apply to tenants that
// set none (here: very low, through the api config).
func TestDefaultLimits(t *testing.T) {
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN, API: func(c *api.Config) {
		c.RateLimits.Decisions.PerSecond, c.RateLimits.Decisions.Burst = 0.01, 1
	}})
	key := s.key("default", auth.RoleAgent, "d")
	s.register("default", "d")
	expect(t, s.post(key, "/v1/decisions.evaluate", map[string]any{"agentId": "d", "action": "x"}), 200, "first")
	checkEnvelope(t, s.post(key, "/v1/decisions.evaluate", map[string]any{"agentId": "d", "action": "x"}), 429, "RATE_LIMITED", "rate_limited", nil)
}

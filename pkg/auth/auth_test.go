package auth_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
)

var (
	tokenRe = regexp.MustCompile(`^vgl_[0-9a-f]{16}_[A-Za-z0-9_-]{43}[0-9A-Za-z]{6}$`)
	hashRe  = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

func TestKeyRoundTrip(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id, token, err := auth.NewKey()
		if err != nil {
			t.Fatal(err)
		}
		if !tokenRe.MatchString(token) {
			t.Fatalf("token %q has the wrong shape", token)
		}
		if seen[id] || seen[token] {
			t.Fatalf("NewKey repeated %q / %q", id, token)
		}
		seen[id], seen[token] = true, true
		got, ok := auth.ParseToken(token)
		if !ok || got != id {
			t.Fatalf("ParseToken(%q) = %q, %v; want %q", token, got, ok, id)
		}
		h := auth.Hash(token)
		if !hashRe.MatchString(h) || strings.Contains(h, token) {
			t.Fatalf("Hash = %q", h)
		}
		if auth.Hash(token) != h {
			t.Fatal("Hash is not deterministic")
		}
		rec := auth.KeyRecord{ID: id, Hash: h}
		if !rec.Matches(token) {
			t.Fatal("a key does not match its own token")
		}
	}
}

// flip returns token with the byte at i replaced by a different one of the
// same alphabet class, so the shape stays valid.
func flip(token string, i int) string {
	b := []byte(token)
	if b[i] == 'a' {
		b[i] = 'b'
	} else {
		b[i] = 'a'
	}
	return string(b)
}

func TestTamperedTokens(t *testing.T) {
	id, token, err := auth.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	rec := auth.KeyRecord{ID: id, Hash: auth.Hash(token)}
	_, other, _ := auth.NewKey()
	cases := []struct {
		name       string
		token      string
		wellFormed bool // ParseToken accepts the shape; only the hash check stops it
	}{
		// A typo anywhere breaks the checksum: rejected before any lookup.
		{"secret first byte", flip(token, 21), false},
		{"secret last byte", flip(token, len(token)-auth.TokenLen+63), false},
		{"checksum byte", flip(token, len(token)-1), false},
		{"id byte", flip(token, 5), false},
		{"another key", other, true},
		{"truncated", token[:len(token)-1], false},
		{"extended", token + "A", false},
		{"wrong prefix", "vgk_" + token[4:], false},
		{"no prefix", token[4:], false},
		{"upper-case prefix", "VGL_" + token[4:], false},
		{"separator removed", "vgl_" + id + token[21:], false},
		{"short id", "vgl_" + id[:15] + "_" + token[21:], false},
		{"long id", "vgl_" + id + "0_" + token[21:], false},
		{"empty", "", false},
		{"leading space", " " + token, false},
		{"trailing newline", token + "\n", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if tc.token == token {
				t.Fatal("test case did not change the token")
			}
			if rec.Matches(tc.token) {
				t.Errorf("tampered token %q matches", tc.token)
			}
			if _, ok := auth.ParseToken(tc.token); ok != tc.wellFormed {
				t.Errorf("ParseToken ok = %v, want %v", ok, tc.wellFormed)
			}
		})
	}
	if !rec.Matches(token) {
		t.Fatal("original token stopped matching")
	}
	if (auth.KeyRecord{}).Matches("") {
		t.Error("an empty record matches the empty token")
	}
}

func TestRolePermissions(t *testing.T) {
	perms := []auth.Permission{auth.EventsWrite, auth.SessionsRead, auth.AgentsRead, auth.AgentsWrite, auth.KeysManage}
	// Rows: role; columns in the order of perms.
	table := map[auth.Role][5]bool{
		auth.RoleOwner:  {true, true, true, true, true},
		auth.RoleAdmin:  {true, true, true, true, true},
		auth.RoleMember: {true, true, true, true, false},
		auth.RoleViewer: {false, true, true, false, false},
		auth.RoleAgent:  {true, false, true, false, false},
		auth.Role(""):   {false, false, false, false, false},
		"root":          {false, false, false, false, false},
	}
	for role, row := range table {
		for i, p := range perms {
			if got := role.Allows(p); got != row[i] {
				t.Errorf("%q.Allows(%s) = %v, want %v", role, p, got, row[i])
			}
		}
		if role.Allows("events:delete") {
			t.Errorf("%q allows an unknown permission", role)
		}
	}
	if len(auth.Roles) != 5 {
		t.Errorf("Roles = %v; add the new role to this table", auth.Roles)
	}
	// Rate limits are the owners' alone.
	for _, r := range auth.Roles {
		if got := r.Allows(auth.LimitsManage); got != (r == auth.RoleOwner) {
			t.Errorf("%s.Allows(limits:manage) = %v", r, got)
		}
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range auth.Roles {
		got, err := auth.ParseRole(string(r))
		if err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Owner", "ADMIN", "root", " owner", "owner "} {
		if got, err := auth.ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) = %q, want an error", s, got)
		}
	}
}

func TestKeyRecord(t *testing.T) {
	now := time.Now()
	later, earlier := now.Add(time.Hour), now.Add(-time.Second)
	for _, tc := range []struct {
		name   string
		rec    auth.KeyRecord
		active bool
	}{
		{"plain", auth.KeyRecord{}, true},
		{"revoked", auth.KeyRecord{RevokedAt: &now}, false},
		{"expires later", auth.KeyRecord{ExpiresAt: &later}, true},
		{"expired", auth.KeyRecord{ExpiresAt: &earlier}, false},
		{"expires now", auth.KeyRecord{ExpiresAt: &now}, false},
	} {
		if got := tc.rec.Active(now); got != tc.active {
			t.Errorf("%s: Active = %v, want %v", tc.name, got, tc.active)
		}
	}
	_, token, _ := auth.NewKey()
	p := auth.DisplayPrefix(token)
	if !strings.HasPrefix(token, strings.TrimSuffix(p, "…")) || len(strings.TrimSuffix(p, "…")) != 24 {
		t.Errorf("DisplayPrefix = %q", p)
	}
	if strings.Contains(p, token[25:]) {
		t.Errorf("DisplayPrefix %q reveals the secret", p)
	}
	if got := auth.DisplayPrefix("short"); got != "short" {
		t.Errorf("DisplayPrefix(short) = %q", got)
	}
}

// FuzzParseToken: whatever arrives in an Authorization header, parsing
// never panics, and anything it accepts has the documented shape.
func FuzzParseToken(f *testing.F) {
	_, token, _ := auth.NewKey()
	for _, s := range []string{token, "", "vgl_", token[:len(token)-1], "Bearer " + token, strings.ToUpper(token)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, ok := auth.ParseToken(s)
		if !ok {
			return
		}
		if len(s) != auth.TokenLen || !tokenRe.MatchString(s) || !strings.Contains(s, id) || len(id) != 16 {
			t.Fatalf("ParseToken accepted %q (id %q)", s, id)
		}
	})
}

func TestAgentBinding(t *testing.T) {
	const ok = apperr.Kind(-1)
	bound := auth.Principal{Tenant: "acme", Role: auth.RoleAgent, KeyID: "k", Agents: []string{"bot-a"}}
	two := auth.Principal{Tenant: "acme", Role: auth.RoleAgent, KeyID: "k", Agents: []string{"bot-a", "bot-b"}}
	unbound := auth.Principal{Tenant: "acme", Role: auth.RoleAgent, KeyID: "k"}
	admin := auth.Principal{Tenant: "acme", Role: auth.RoleAdmin, KeyID: "k"}
	tests := []struct {
		name  string
		p     auth.Principal
		named []string
		want  string
		kind  apperr.Kind // ok when no error is expected
	}{
		{"bound, omitted", bound, []string{"", ""}, "bot-a", ok},
		{"bound, own", bound, []string{"bot-a"}, "bot-a", ok},
		{"bound, other", bound, []string{"bot-zzz"}, "", apperr.KindForbidden},
		{"bound, case variant", bound, []string{"BOT-A"}, "", apperr.KindForbidden},
		{"bound, trailing space", bound, []string{"bot-a "}, "", apperr.KindForbidden},
		{"bound, body own, header other", bound, []string{"bot-a", "", "bot-zzz"}, "", apperr.KindForbidden},
		{"bound, empty body, header other", bound, []string{"", "bot-zzz"}, "", apperr.KindForbidden},
		{"two, omitted", two, nil, "", apperr.KindValidation},
		{"two, second", two, []string{"bot-b"}, "bot-b", ok},
		{"two, both named", two, []string{"bot-a", "bot-b"}, "bot-a", ok},
		{"unbound, omitted", unbound, nil, "", apperr.KindForbidden},
		{"unbound, named", unbound, []string{"bot-a"}, "", apperr.KindForbidden},
		{"admin, any", admin, []string{"", "bot-zzz"}, "bot-zzz", ok},
		{"admin, none", admin, nil, "", ok},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.p.AgentFor(tc.named...)
			if tc.kind == ok {
				if err != nil || got != tc.want {
					t.Fatalf("AgentFor(%q) = %q, %v; want %q", tc.named, got, err, tc.want)
				}
				return
			}
			if !apperr.Is(err, tc.kind) || got != "" {
				t.Fatalf("AgentFor(%q) = %q, %v; want an error of kind %d", tc.named, got, err, tc.kind)
			}
		})
	}

	perms := []auth.Permission{auth.EventsWrite, auth.AgentsRead, auth.AgentsRegister, auth.DecisionsEvaluate, auth.AgentsWrite, auth.VerdictsTriage, auth.VerdictsRead}
	for _, tc := range []struct {
		name string
		p    auth.Principal
		want []bool
	}{
		{"bound", bound, []bool{true, true, true, true, false, false, false}},
		{"unbound", unbound, []bool{true, true, false, false, false, false, false}},
		{"admin", admin, []bool{true, true, true, true, true, true, true}},
	} {
		for i, perm := range perms {
			if got := tc.p.Allows(perm); got != tc.want[i] {
				t.Errorf("%s.Allows(%s) = %v, want %v", tc.name, perm, got, tc.want[i])
			}
		}
	}
	if !admin.ActsAs("anything") || !bound.ActsAs("bot-a") || bound.ActsAs("Bot-a") || unbound.ActsAs("bot-a") {
		t.Error("ActsAs: people act for any agent, bound keys only for their own, unbound keys for none")
	}
}

func TestBinding(t *testing.T) {
	tests := []struct {
		name string
		role auth.Role
		ids  []string
		want []string
		bad  bool
	}{
		{"agent, one", auth.RoleAgent, []string{"bot-a"}, []string{"bot-a"}, false},
		{"agent, duplicates sorted", auth.RoleAgent, []string{"bot-b", "bot-a", "bot-b"}, []string{"bot-a", "bot-b"}, false},
		{"agent, none", auth.RoleAgent, nil, nil, true},
		{"agent, empty id", auth.RoleAgent, []string{""}, nil, true},
		{"agent, bad id", auth.RoleAgent, []string{"bot a"}, nil, true},
		{"agent, too many", auth.RoleAgent, make([]string, auth.MaxBoundAgents+1), nil, true},
		{"admin, bound", auth.RoleAdmin, []string{"bot-a"}, nil, true},
		{"viewer, none", auth.RoleViewer, nil, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := auth.Binding(tc.role, tc.ids)
			if tc.bad != (err != nil) || !slices.Equal(got, tc.want) {
				t.Fatalf("Binding(%s, %q) = %q, %v", tc.role, tc.ids, got, err)
			}
			if err != nil && !apperr.Is(err, apperr.KindValidation) {
				t.Fatalf("Binding error %v is not a validation error", err)
			}
		})
	}
}

// FuzzMatches: Matches agrees with comparing Hash(token) to the stored
// hash, for tokens of any length (an API key's, shorter, longer) and for
// stored hashes that are right, off by one byte, truncated or empty.
func FuzzMatches(f *testing.F) {
	_, key, err := auth.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	f.Add(key, key, 0)
	f.Add(key, key[:len(key)-1], 1)
	f.Add("", "", 2)
	f.Add(key+"x", key+"x", 3)
	f.Add(strings.Repeat("k", 500), key, 0)
	f.Fuzz(func(t *testing.T, token, stored string, mutate int) {
		h := auth.Hash(stored)
		switch mutate % 4 {
		case 1:
			b := []byte(h)
			b[len(b)-1-(mutate/4)%len(b)] ^= 1
			h = string(b)
		case 2:
			h = h[:len(h)-1]
		case 3:
			h = ""
		}
		k := auth.KeyRecord{Hash: h}
		if got, want := k.Matches(token), auth.Hash(token) == h; got != want {
			t.Fatalf("Matches(%q) against %q = %v, want %v", token, h, got, want)
		}
	})
}

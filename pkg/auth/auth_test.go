package auth_test

import (
	"regexp"
	"strings"
	"testing"
	"time"

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
		auth.RoleAgent:  {true, false, true, true, false},
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

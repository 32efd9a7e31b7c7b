// Package auth defines API keys, roles and what each role may do. Keys are
// random 256-bit secrets shown once; only their SHA-256 is stored. A fast
// hash is the right tool here (unlike passwords): the secret has full
// entropy, so there is nothing for a slow hash to protect against, and
// every request pays the cost.
package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
)

// Role is a key's role. Roles form a fixed hierarchy of permission sets.
type Role string

// The roles, most to least privileged.
const (
	RoleOwner  Role = "owner"
	RoleAdmin  Role = "admin"
	RoleMember Role = "member"
	RoleViewer Role = "viewer"
	RoleAgent  Role = "agent"
)

// Roles lists every valid role.
var Roles = []Role{RoleOwner, RoleAdmin, RoleMember, RoleViewer, RoleAgent}

// ParseRole validates a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown role %q (want one of owner, admin, member, viewer, agent)", s)
}

// Permission names one kind of operation.
type Permission string

// Permissions checked by the HTTP API.
const (
	EventsWrite  Permission = "events:write"
	SessionsRead Permission = "sessions:read"
	AgentsRead   Permission = "agents:read"
	// AgentsWrite changes the controls that govern an agent: its record
	// (owner, status), declaration, settings (pause) and baseline (reset).
	AgentsWrite Permission = "agents:write"
	// AgentsRegister registers an agent and declares or narrows its
	// manifest: what an agent key may do for the agents it is bound to.
	AgentsRegister Permission = "agents:register"
	KeysManage     Permission = "keys:manage"
	// PoliciesRead and PoliciesWrite cover policies and the org policy.
	PoliciesRead  Permission = "policies:read"
	PoliciesWrite Permission = "policies:write"
	// DecisionsEvaluate asks for a decision (KLA, Kaplaix, Kaizen doors).
	DecisionsEvaluate Permission = "decisions:evaluate"
	VerdictsRead      Permission = "verdicts:read"
	// VerdictsTriage sets a verdict's status and folds it into a baseline.
	VerdictsTriage Permission = "verdicts:triage"
	// ApprovalsRead lists pending actions; ApprovalsDecide approves,
	// rejects or reroutes them.
	ApprovalsRead   Permission = "approvals:read"
	ApprovalsDecide Permission = "approvals:decide"
	// LedgerRead reads checkpoints, proofs and evidence bundles.
	LedgerRead Permission = "ledger:read"
	// RiskRead reads baselines, session risk and metrics.
	RiskRead Permission = "risk:read"
	// ChannelsRead and ChannelsManage cover notification channels,
	// webhooks and their deliveries.
	ChannelsRead   Permission = "channels:read"
	ChannelsManage Permission = "channels:manage"
	// MembersRead and MembersManage cover console members and their roles.
	MembersRead   Permission = "members:read"
	MembersManage Permission = "members:manage"
	// AuditRead reads the audit log.
	AuditRead Permission = "audit:read"
	// SettingsManage changes tenant settings: rate limits, redaction, the
	// LLM judge.
	SettingsRead   Permission = "settings:read"
	SettingsManage Permission = "settings:manage"
	// LimitsManage changes a tenant's rate limits (within the
	// deployment's bounds). Owners only: lowering a limit can starve
	// every agent of the tenant.
	LimitsManage Permission = "limits:manage"
	// HaltsManage raises, lists and lifts halts (kill switches). Owners
	// and admins only: a halt stops every agent in its scope.
	HaltsManage Permission = "halts:manage"
	// BudgetsRead lists budgets and their current use; BudgetsManage
	// creates and deletes them. Managing is for owners and admins: a
	// budget can stop every agent of the tenant.
	BudgetsRead   Permission = "budgets:read"
	BudgetsManage Permission = "budgets:manage"
)

var grants = map[Role][]Permission{
	RoleOwner: {EventsWrite, SessionsRead, AgentsRead, AgentsWrite, AgentsRegister, KeysManage,
		PoliciesRead, PoliciesWrite, DecisionsEvaluate, VerdictsRead, VerdictsTriage, ApprovalsRead, ApprovalsDecide,
		LedgerRead, RiskRead, ChannelsRead, ChannelsManage, MembersRead, MembersManage, AuditRead, SettingsRead, SettingsManage, LimitsManage, HaltsManage, BudgetsRead, BudgetsManage},
	RoleAdmin: {EventsWrite, SessionsRead, AgentsRead, AgentsWrite, AgentsRegister, KeysManage,
		PoliciesRead, PoliciesWrite, DecisionsEvaluate, VerdictsRead, VerdictsTriage, ApprovalsRead, ApprovalsDecide,
		LedgerRead, RiskRead, ChannelsRead, ChannelsManage, MembersRead, MembersManage, AuditRead, SettingsRead, SettingsManage, HaltsManage, BudgetsRead, BudgetsManage},
	// Members run the floor: they report, ask, read and triage, but
	// changing the rules is for admins.
	RoleMember: {EventsWrite, SessionsRead, AgentsRead, AgentsWrite, AgentsRegister, PoliciesRead, DecisionsEvaluate, VerdictsRead, VerdictsTriage,
		ApprovalsRead, ApprovalsDecide, LedgerRead, RiskRead, ChannelsRead, MembersRead, SettingsRead, BudgetsRead},
	RoleViewer: {SessionsRead, AgentsRead, PoliciesRead, VerdictsRead, ApprovalsRead, LedgerRead, RiskRead, ChannelsRead, MembersRead, BudgetsRead},
	// Agents report what they do, register themselves and ask before they
	// act; they cannot read other agents' sessions or verdicts, nor change
	// the controls that govern them (agents:write). What they may do is
	// further limited to the agents their key is bound to (Principal).
	RoleAgent: {EventsWrite, AgentsRead, AgentsRegister, DecisionsEvaluate},
}

// unboundAgent is what an agent key created before keys were bound to
// agents may still do until an admin binds it: report and read agents.
var unboundAgent = []Permission{EventsWrite, AgentsRead}

// Allows reports whether role r grants p.
func (r Role) Allows(p Permission) bool {
	for _, g := range grants[r] {
		if g == p {
			return true
		}
	}
	return false
}

// Principal is the authenticated caller of one request: an API key, or a
// console member signed in through the deployment's OIDC provider.
type Principal struct {
	Tenant string
	Role   Role
	// KeyID is set for API keys, Member (the member's email) for people.
	KeyID  string
	Member string
	// Subject is the identity provider's id of a member ("sub").
	Subject string
	// Agents are the agent ids an agent key is bound to; empty for other
	// roles and for agent keys created before binding existed.
	Agents []string
	// Service is the OAuth client id of a service account signed in with
	// a client-credentials token.
	Service string
}

// Allows reports whether the principal may do p: its role's grants, and
// for an agent key not bound to any agent only reports and agent reads.
func (p Principal) Allows(perm Permission) bool {
	if p.Role == RoleAgent && len(p.Agents) == 0 {
		return slices.Contains(unboundAgent, perm)
	}
	return p.Role.Allows(perm)
}

// Bound reports whether the principal is an agent key restricted to the
// agents it is bound to (so every agent it names must be checked).
func (p Principal) Bound() bool { return p.Role == RoleAgent }

// ActsAs reports whether the principal may act as, or read the records
// of, agent id. People and non-agent keys may act for any agent of their
// tenant; an agent key only for the ids it is bound to, compared exactly
// (agent ids are case-sensitive).
func (p Principal) ActsAs(id string) bool {
	return !p.Bound() || slices.Contains(p.Agents, id)
}

// Covers reports whether the principal may read agent id's record and
// report its events: whoever may act as it, and, until an admin binds
// it, an agent key created before keys were bound (it keeps the
// tenant-wide reports and agent reads it had; it has lost decisions and
// registration).
func (p Principal) Covers(id string) bool {
	return p.ActsAs(id) || (p.Bound() && len(p.Agents) == 0)
}

// NotBound is why an agent key not bound to any agent is refused what it
// could do before keys were bound.
const NotBound = "this agent key is not bound to an agent; an admin binds it with POST /v1/keys/{id}/bind"

// AgentFor resolves the agent a request is attributed to from every
// place the request names one (body agentId, agent, X-Agent-Id…; empty
// strings are ignored). For an agent key each named id must be one it is
// bound to (403 otherwise), and a request that names none is attributed
// to the key's agent when it has exactly one. Other principals get the
// first non-empty name, unchanged, possibly "".
func (p Principal) AgentFor(named ...string) (string, error) {
	first := ""
	for _, n := range named {
		if n == "" {
			continue
		}
		if first == "" {
			first = n
		}
		if p.Bound() && !slices.Contains(p.Agents, n) {
			if len(p.Agents) == 0 {
				return "", apperr.Forbidden(NotBound)
			}
			return "", apperr.Forbidden(fmt.Sprintf("this agent key may not act as agent %q", n))
		}
	}
	if first != "" || !p.Bound() {
		return first, nil
	}
	switch len(p.Agents) {
	case 0:
		return "", apperr.Forbidden(NotBound)
	case 1:
		return p.Agents[0], nil
	}
	return "", apperr.Validation("agentId is required: this key is bound to several agents",
		apperr.FieldError{Path: "agentId", Code: "required", Message: "name one of the agents this key is bound to"})
}

// ForbidOther is the error for an agent key reading or changing another
// agent's records.
func ForbidOther(id string) error {
	return apperr.Forbidden(fmt.Sprintf("this agent key may not access agent %q", id))
}

// Actor names the principal in records and the audit log:
// "key:<id>", "member:<email>" or "service:<client id>".
func (p Principal) Actor() string {
	switch {
	case p.Member != "":
		return "member:" + p.Member
	case p.Service != "":
		return "service:" + p.Service
	}
	return "key:" + p.KeyID
}

// KeyRecord is an API key's stored state: never the secret itself.
type KeyRecord struct {
	ID     string `json:"id"`
	Tenant string `json:"tenant"`
	Name   string `json:"name,omitempty"`
	Role   Role   `json:"role"`
	// Agents binds an agent key to the agent ids it may act as.
	Agents    []string   `json:"agents,omitempty"`
	Hash      string     `json:"hash"`
	Prefix    string     `json:"prefix"`
	CreatedAt time.Time  `json:"createdAt"`
	CreatedBy string     `json:"createdBy,omitempty"`
	ExpiresAt *time.Time `json:"expiresAt,omitempty"`
	RevokedAt *time.Time `json:"revokedAt,omitempty"`
	RevokedBy string     `json:"revokedBy,omitempty"`
	// BoundAt and BoundBy record the last binding made after creation
	// (POST /v1/keys/:id/bind), for the audit log.
	BoundAt *time.Time `json:"boundAt,omitempty"`
	BoundBy string     `json:"boundBy,omitempty"`
}

// Active reports whether the key may authenticate at now.
func (k KeyRecord) Active(now time.Time) bool {
	return k.RevokedAt == nil && (k.ExpiresAt == nil || now.Before(*k.ExpiresAt))
}

// Token layout: "vgl_" + 16 hex id + "_" + 43 base64url secret + 6 base62
// checksum (CRC-32 of everything before it). The fixed prefix and length
// let secret scanners recognise a leaked key, and the checksum rejects a
// mistyped or truncated one without a lookup.
const (
	keyPrefix   = "vgl_"
	idLen       = 16
	secretLen   = 43
	checksumLen = 6
	// TokenLen is the length of every API key.
	TokenLen = len(keyPrefix) + idLen + 1 + secretLen + checksumLen
)

const base62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

func checksum(body string) string {
	v := crc32.ChecksumIEEE([]byte(body))
	var out [checksumLen]byte
	for i := checksumLen - 1; i >= 0; i-- {
		out[i] = base62[v%62]
		v /= 62
	}
	return string(out[:])
}

// NewKey returns a fresh key id and the secret token to show once. The id
// lets the server find the record without scanning; the secret is 32
// random bytes.
func NewKey() (id, token string, err error) {
	var idb [idLen / 2]byte
	var sec [32]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", "", fmt.Errorf("generate key id: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", "", fmt.Errorf("generate key secret: %w", err)
	}
	id = hex.EncodeToString(idb[:])
	body := keyPrefix + id + "_" + base64.RawURLEncoding.EncodeToString(sec[:])
	return id, body + checksum(body), nil
}

// ParseToken extracts the key id from a token, or reports it malformed:
// wrong prefix, wrong length, a non-hex id or a checksum that does not
// match.
func ParseToken(token string) (id string, ok bool) {
	if len(token) != TokenLen || !strings.HasPrefix(token, keyPrefix) || token[len(keyPrefix)+idLen] != '_' {
		return "", false
	}
	id = token[len(keyPrefix) : len(keyPrefix)+idLen]
	for i := 0; i < len(id); i++ {
		if c := id[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return "", false
		}
	}
	body := token[:len(token)-checksumLen]
	if subtle.ConstantTimeCompare([]byte(checksum(body)), []byte(token[len(body):])) != 1 {
		return "", false
	}
	return id, true
}

// Hash is the stored form of a token.
func Hash(token string) string {
	sum := sha256.Sum256([]byte(token))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// Matches compares a presented token with a stored hash in constant time.
// It is Hash compared with k.Hash, without the allocations: every
// authenticated request pays it.
func (k KeyRecord) Matches(token string) bool {
	const prefix = "sha256:"
	var in [TokenLen]byte
	var sum [sha256.Size]byte
	if len(token) <= len(in) {
		// An API key (every one is TokenLen long) is hashed from the
		// stack; converting it would allocate.
		sum = sha256.Sum256(in[:copy(in[:], token)])
	} else {
		sum = sha256.Sum256([]byte(token))
	}
	var want [len(prefix) + 2*sha256.Size]byte
	copy(want[:], prefix)
	hex.Encode(want[len(prefix):], sum[:])
	if len(k.Hash) != len(want) {
		return false
	}
	// subtle.ConstantTimeCompare over the string without converting it.
	var v byte
	for i := range want {
		v |= want[i] ^ k.Hash[i]
	}
	return subtle.ConstantTimeByteEq(v, 0) == 1
}

// DisplayPrefix is the part of a token safe to show in listings.
func DisplayPrefix(token string) string {
	if len(token) < 24 {
		return token
	}
	return token[:24] + "…"
}

// MaxBoundAgents caps how many agents one key may be bound to.
const MaxBoundAgents = 100

// Binding validates the agent ids a key of role is bound to and returns
// them sorted without duplicates. Only agent keys carry a binding, and
// an agent key created through the API must carry one: an unbound agent
// key could speak for every agent of its tenant.
func Binding(role Role, ids []string) ([]string, error) {
	if role != RoleAgent {
		if len(ids) > 0 {
			return nil, apperr.Validation("only agent keys are bound to agents",
				apperr.FieldError{Path: "agentId", Code: "invalid_format", Message: "a " + string(role) + " key cannot be bound to an agent; use role agent"})
		}
		return nil, nil
	}
	if len(ids) == 0 {
		return nil, apperr.Validation("an agent key must be bound to its agent",
			apperr.FieldError{Path: "agentId", Code: "required", Message: "give agentId (or agentIds) for an agent key"})
	}
	if len(ids) > MaxBoundAgents {
		return nil, apperr.Validation("too many agents",
			apperr.FieldError{Path: "agentIds", Code: "too_long", Message: fmt.Sprintf("a key is bound to at most %d agents", MaxBoundAgents)})
	}
	var errs []apperr.FieldError
	for i, id := range ids {
		if !event.ValidID(id, event.MaxAgentIDLen) {
			errs = append(errs, apperr.FieldError{Path: fmt.Sprintf("agentIds[%d]", i), Code: "invalid_format",
				Message: "agent ids are 1-128 letters, digits or ._:@+=-, starting with a letter or digit"})
		}
	}
	if len(errs) > 0 {
		return nil, apperr.Validation("agent ids are not valid", errs...)
	}
	out := slices.Clone(ids)
	slices.Sort(out)
	return slices.Compact(out), nil
}

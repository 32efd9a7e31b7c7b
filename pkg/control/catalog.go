// Package control reads and writes control-plane state on the CONTROL
// stream: agents and API keys (later policies, channels and settings).
//
// Catalog is the in-memory projection every service keeps by watching the
// stream from its first message. Sync waits until it has applied every
// message the stream held when Sync was called, which turns the
// asynchronous projection into read-your-writes for lists and for keys
// created a moment ago.
package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/oidc"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Catalog is the in-memory view of CONTROL.
type Catalog struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu      sync.RWMutex
	applied natsx.Watermark // advanced after a message's state is applied
	keys    map[string]auth.KeyRecord
	agents  map[string]map[string]agent.Agent // tenant → agent id → state
	// registry holds each tenant's agent-registry settings.
	registry map[string]agent.RegistrySettings

	policies  map[string]map[string]policy.Record // tenant → policy id → state
	policyGen map[string]uint64                   // tenant → bumped on every policy change
	orgs      map[string]policy.OrgRecord
	triage    map[string]map[string]policy.Triage // tenant → decision id → latest triage
	falsePos  map[string]map[string]int           // tenant → signature → false-positive triages
	org       orgState
	halts     lifecycle[policy.Halt]
	budgets   lifecycle[policy.Budget]
	oidc      *oidc.Verifier
	usage     usage
	misses    *misses
}

// Option configures a Catalog.
type Option func(*Catalog)

// WithOIDC lets members sign in with tokens from the deployment's OIDC
// provider, verified by v, besides API keys.
func WithOIDC(v *oidc.Verifier) Option { return func(c *Catalog) { c.oidc = v } }

// NewCatalog returns an empty catalog; Run fills it.
func NewCatalog(js jetstream.JetStream, log *slog.Logger, opts ...Option) *Catalog {
	c := &Catalog{
		js: js, log: log,
		keys:   map[string]auth.KeyRecord{},
		agents: map[string]map[string]agent.Agent{},

		registry:  map[string]agent.RegistrySettings{},
		policies:  map[string]map[string]policy.Record{},
		policyGen: map[string]uint64{},
		orgs:      map[string]policy.OrgRecord{},
		triage:    map[string]map[string]policy.Triage{},
		falsePos:  map[string]map[string]int{},
		misses:    newMisses(),
		halts:     newHalts(),
		budgets:   newBudgets(),
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// Run follows CONTROL with an ordered consumer until ctx ends. It returns
// once the consumer is started; the catalog fills in the background.
func (c *Catalog) Run(ctx context.Context) error {
	if _, err := natsx.Follow(ctx, c.js, streams.Control, []string{"control.v1.>"}, c.apply); err != nil {
		return fmt.Errorf("catalog: %w", err)
	}
	return nil
}

func (c *Catalog) apply(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	subj := m.Subject()
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.applyOrg(subj, meta.Sequence.Stream, m.Data()):
	case c.halts.apply(c.log, "control.v1."+streams.HaltChanged+".", subj, m.Data()):
	case c.budgets.apply(c.log, "control.v1."+streams.BudgetChanged+".", subj, m.Data()):
	case strings.HasPrefix(subj, "control.v1."+streams.AgentChanged+"."):
		var ch agent.Change
		if err := json.Unmarshal(m.Data(), &ch); err != nil {
			c.log.Error("catalog: bad agent change", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		ch.Agent.Revision = meta.Sequence.Stream
		t := c.agents[ch.Tenant]
		if t == nil {
			t = map[string]agent.Agent{}
			c.agents[ch.Tenant] = t
		}
		t[ch.Agent.AgentID] = ch.Agent
	case strings.HasPrefix(subj, "control.v1."+streams.RegistryChanged+"."):
		var r agent.RegistrySettings
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			c.log.Error("catalog: bad registry settings", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		c.registry[r.Tenant] = r
	case strings.HasPrefix(subj, "control.v1."+streams.KeyChanged+"."):
		var k auth.KeyRecord
		if err := json.Unmarshal(m.Data(), &k); err != nil {
			c.log.Error("catalog: bad key change", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		c.keys[k.ID] = k
	case strings.HasPrefix(subj, "control.v1."+streams.PolicyChanged+"."):
		var r policy.Record
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			c.log.Error("catalog: bad policy change", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		r.Version = meta.Sequence.Stream
		inner(c.policies, r.Tenant)[r.ID] = r
		c.policyGen[r.Tenant]++
	case strings.HasPrefix(subj, "control.v1."+streams.OrgPolicyChanged+"."):
		var r policy.OrgRecord
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			c.log.Error("catalog: bad org policy change", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		c.orgs[r.Tenant] = r
	case strings.HasPrefix(subj, "control.v1."+streams.VerdictTriaged+"."):
		var t policy.Triage
		if err := json.Unmarshal(m.Data(), &t); err != nil {
			c.log.Error("catalog: bad triage", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		byDecision := inner(c.triage, t.Tenant)
		fp := inner(c.falsePos, t.Tenant)
		if prev, ok := byDecision[t.DecisionID]; ok && prev.Status == policy.TriageFalsePositive {
			fp[prev.Signature]--
		}
		if t.Status == policy.TriageFalsePositive {
			fp[t.Signature]++
		}
		byDecision[t.DecisionID] = t
	}
	c.applied.Advance(meta.Sequence.Stream)
}

// Sync blocks until the catalog reflects every message CONTROL held when
// it was called.
func (c *Catalog) Sync(ctx context.Context) error {
	// Unanswered (a NATS cluster electing a new CONTROL leader) is a 503
	// to a request that syncs, never a 500.
	s, err := c.js.Stream(ctx, streams.Control)
	if err != nil {
		return apperr.Unavailable("control stream did not answer", time.Second, fmt.Errorf("catalog sync: %w", err))
	}
	info, err := s.Info(ctx)
	if err != nil {
		return apperr.Unavailable("control stream did not answer", time.Second, fmt.Errorf("catalog sync: %w", err))
	}
	return c.WaitFor(ctx, info.State.LastSeq)
}

// Applied returns the last CONTROL sequence the catalog has applied: a
// consistency token another process can WaitFor.
func (c *Catalog) Applied() uint64 { return c.applied.At() }

// WaitFor blocks until the catalog has applied stream sequence seq.
func (c *Catalog) WaitFor(ctx context.Context, seq uint64) error {
	if err := c.applied.WaitFor(ctx, seq); err != nil {
		return apperr.Unavailable("control state is catching up", 0, err)
	}
	return nil
}

// Authenticate resolves a bearer token to its principal. A key unknown to
// the catalog makes it catch up (paced, see misses.go), so a key created
// a moment ago works.
func (c *Catalog) Authenticate(ctx context.Context, token string) (auth.Principal, error) {
	return c.AuthenticateTenant(ctx, token, "")
}

// AuthenticateTenant is Authenticate for a request that names a tenant
// (x-tenant-id): a person who is a member of several tenants signs in to
// that one. An API key belongs to one tenant and ignores it (the caller
// compares it with the key's).
func (c *Catalog) AuthenticateTenant(ctx context.Context, token, tenant string) (auth.Principal, error) {
	if c.oidc != nil && oidc.LooksLikeJWT(token) {
		return c.authenticateMember(ctx, token, tenant)
	}
	id, ok := auth.ParseToken(token)
	if !ok {
		return auth.Principal{}, apperr.Unauthenticated("invalid API key")
	}
	k, found := c.key(id)
	now := time.Now()
	if !found {
		// Perhaps created elsewhere a moment ago: catch up first (paced,
		// and never again for an id just found unknown; see misses.go).
		if c.misses.known(id, now) {
			return auth.Principal{}, apperr.Unauthenticated("invalid API key")
		}
		if err := c.catchUpSince(ctx, now); err != nil {
			return auth.Principal{}, err
		}
		if k, found = c.key(id); !found {
			c.misses.remember(id, now)
		}
	}
	if !found || !k.Active(now) || !k.Matches(token) {
		return auth.Principal{}, apperr.Unauthenticated("invalid API key")
	}
	c.noteUse(k.ID, now)
	return auth.Principal{Tenant: k.Tenant, Role: k.Role, KeyID: k.ID, Agents: k.Agents}, nil
}

func (c *Catalog) key(id string) (auth.KeyRecord, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	k, ok := c.keys[id]
	return k, ok
}

// KeyCount returns how many keys exist across all tenants.
func (c *Catalog) KeyCount() int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.keys)
}

// AgentCount returns how many agents a tenant has (without syncing).
func (c *Catalog) AgentCount(tenant string) int {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return len(c.agents[tenant])
}

// HasAgent reports whether the catalog knows the agent (without syncing).
func (c *Catalog) HasAgent(tenant, id string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	_, ok := c.agents[tenant][id]
	return ok
}

// Registry returns a tenant's agent-registry settings (the defaults, auto
// registration off, when never set).
func (c *Catalog) Registry(tenant string) agent.RegistrySettings {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if r, ok := c.registry[tenant]; ok {
		return r
	}
	return agent.RegistrySettings{Tenant: tenant}
}

// RegisteredNamed returns a tenant's explicitly registered agent with the
// given name, if there is one (without syncing). It scans the tenant's
// agents, which MaxAgents bounds; registrations are rare.
func (c *Catalog) RegisteredNamed(tenant, name string) (agent.Agent, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, a := range c.agents[tenant] {
		if a.Name == name && a.Source == agent.SourceRegistered {
			return a, true
		}
	}
	return agent.Agent{}, false
}

// Agents returns a tenant's agents sorted by id, starting after the
// given id, at most limit of them, and whether more follow.
func (c *Catalog) Agents(tenant, after string, limit int) ([]agent.Agent, bool) {
	c.mu.RLock()
	all := make([]agent.Agent, 0, len(c.agents[tenant]))
	for _, a := range c.agents[tenant] {
		if a.AgentID > after {
			all = append(all, a)
		}
	}
	c.mu.RUnlock()
	slices.SortFunc(all, func(x, y agent.Agent) int { return strings.Compare(x.AgentID, y.AgentID) })
	if len(all) > limit {
		return all[:limit], true
	}
	return all, false
}

func inner[V any](m map[string]map[string]V, tenant string) map[string]V {
	t := m[tenant]
	if t == nil {
		t = map[string]V{}
		m[tenant] = t
	}
	return t
}

// Agent returns an agent's state as the catalog knows it.
func (c *Catalog) Agent(tenant, id string) (agent.Agent, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	a, ok := c.agents[tenant][id]
	return a, ok
}

// Policies returns a tenant's policies (all statuses) sorted by id, and
// the tenant's policy generation, which changes whenever one changes.
func (c *Catalog) Policies(tenant string) ([]policy.Record, uint64) {
	c.mu.RLock()
	out := make([]policy.Record, 0, len(c.policies[tenant]))
	for _, r := range c.policies[tenant] {
		out = append(out, r)
	}
	gen := c.policyGen[tenant]
	c.mu.RUnlock()
	slices.SortFunc(out, func(x, y policy.Record) int { return strings.Compare(x.ID, y.ID) })
	return out, gen
}

// PolicyGen returns the tenant's policy generation.
func (c *Catalog) PolicyGen(tenant string) uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.policyGen[tenant]
}

// Org returns the tenant's org policy (mode off when never set).
func (c *Catalog) Org(tenant string) policy.OrgRecord {
	c.mu.RLock()
	defer c.mu.RUnlock()
	r, ok := c.orgs[tenant]
	if !ok {
		return policy.OrgRecord{Tenant: tenant, Org: policy.OrgPolicy{Mode: policy.OrgOff, Tools: []string{}, Destinations: []string{}, Publishers: []string{}}}
	}
	return r
}

// Suppressed reports whether a decision signature was triaged as a false
// positive (and not re-triaged since).
func (c *Catalog) Suppressed(tenant, signature string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.falsePos[tenant][signature] > 0
}

// Triage returns the latest triage of a decision.
func (c *Catalog) Triage(tenant, decisionID string) (policy.Triage, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	t, ok := c.triage[tenant][decisionID]
	return t, ok
}

// Triages returns every triage of a tenant's decisions.
func (c *Catalog) Triages(tenant string) []policy.Triage {
	c.mu.RLock()
	defer c.mu.RUnlock()
	out := make([]policy.Triage, 0, len(c.triage[tenant]))
	for _, t := range c.triage[tenant] {
		out = append(out, t)
	}
	return out
}

// ErrNotFound is returned by Store reads of entities that do not exist.
var ErrNotFound = errors.New("not found")

// Component runs the catalog as a view of a process: once CONTROL exists
// (the api creates it) it follows the stream on the supervisor's context
// and is loaded before later components start, so nothing answers — a
// decision, a key lookup — from a half-loaded catalog.
func (c *Catalog) Component() daemon.Component {
	return daemon.Component{Name: "catalog", Start: func(ctx context.Context) error {
		if err := natsx.WaitForStream(ctx, c.js, streams.Control, c.log); err != nil {
			return err
		}
		if err := c.Run(ctx); err != nil {
			return err
		}
		return c.Sync(ctx)
	}}
}

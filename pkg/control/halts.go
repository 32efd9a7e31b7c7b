package control

import (
	"context"
	"time"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// newHalts is the catalog's view of halts.
func newHalts() lifecycle[policy.Halt] {
	return lifecycle[policy.Halt]{what: "halt", key: func(h policy.Halt) (string, string, bool, time.Time) {
		return h.Tenant, h.ID, h.Active, h.CreatedAt
	}}
}

// HaltFor returns the oldest active halt covering a decision about
// agentID in sessionID, if any. It reads memory only: the decision path
// calls it for every decision.
func (c *Catalog) HaltFor(tenant, agentID, sessionID string) (policy.Halt, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	for _, h := range c.halts.active[tenant] {
		if h.Covers(agentID, sessionID) {
			return h, true
		}
	}
	return policy.Halt{}, false
}

// Halts lists a tenant's halts, newest first: the active ones, or with
// all every halt ever raised.
func (c *Catalog) Halts(tenant string, all bool) []policy.Halt {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.halts.list(tenant, all)
}

// Halt returns a halt's current state and revision, or ErrNotFound.
func (s *Store) Halt(ctx context.Context, tenant, id string) (policy.Halt, uint64, error) {
	var h policy.Halt
	seq, err := s.last(ctx, streams.HaltSubject(tenant, id), &h)
	return h, seq, err
}

// PutHalt records a halt's new state, provided its subject is still at
// expect (0: a new halt). A resume therefore happens once.
func (s *Store) PutHalt(ctx context.Context, h policy.Halt, expect uint64) (uint64, error) {
	return s.put(ctx, streams.HaltSubject(h.Tenant, h.ID), h, &expect)
}

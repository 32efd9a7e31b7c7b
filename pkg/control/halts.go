package control

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// haltState is the catalog's view of halts: every halt ever raised (for
// GET /v1/halts?all=true) and, apart, the active ones, which every
// decision looks at and which are few.
type haltState struct {
	all    map[string]map[string]policy.Halt // tenant → id → latest state
	active map[string][]policy.Halt          // tenant → active halts, oldest first
}

// applyHalt applies a halt change; it reports whether subj was one. Called
// with c.mu held.
func (c *Catalog) applyHalt(subj string, data []byte) bool {
	if !strings.HasPrefix(subj, "control.v1."+streams.HaltChanged+".") {
		return false
	}
	var h policy.Halt
	if err := json.Unmarshal(data, &h); err != nil {
		// A halt that cannot be read is a stop that cannot be honoured;
		// it is logged loudly. The api writes only well-formed halts.
		c.log.Error("catalog: bad halt change", slog.String("subject", subj), slog.String("error", err.Error()))
		return true
	}
	if c.halts.all == nil {
		c.halts.all, c.halts.active = map[string]map[string]policy.Halt{}, map[string][]policy.Halt{}
	}
	inner(c.halts.all, h.Tenant)[h.ID] = h
	act := slices.DeleteFunc(c.halts.active[h.Tenant], func(x policy.Halt) bool { return x.ID == h.ID })
	if h.Active {
		act = append(act, h)
	}
	if len(act) == 0 {
		delete(c.halts.active, h.Tenant)
	} else {
		c.halts.active[h.Tenant] = act
	}
	return true
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
	var out []policy.Halt
	if all {
		for _, h := range c.halts.all[tenant] {
			out = append(out, h)
		}
	} else {
		out = slices.Clone(c.halts.active[tenant])
	}
	c.mu.RUnlock()
	slices.SortFunc(out, func(a, b policy.Halt) int {
		if x := b.CreatedAt.Compare(a.CreatedAt); x != 0 {
			return x
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out
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

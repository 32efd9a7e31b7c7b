package ingest

import (
	"github.com/vigilhq/vigil/pkg/agent"
)

// agentGate admits, within one request, the events of agents the tenant
// already has, and of new agents while the tenant stays below the cap
// (counting the new agents admitted earlier in the same request, so one
// batch of new ids cannot overshoot it). A gate is a value and holds its
// first new agent inline: a request of one event allocates nothing for
// it (a single event of an agent the catalog did not know yet allocated
// a map on every request).
type agentGate struct {
	agents Agents // nil: no cap, everything is admitted
	tenant string
	max    int
	count  int
	// The new agents admitted so far: the first inline, the rest in more.
	first    string
	hasFirst bool
	more     map[string]struct{}
}

func (s *Service) agentGate(tenant string) agentGate {
	if s.deps.Agents == nil || s.cfg.MaxAgents == 0 {
		return agentGate{}
	}
	return agentGate{agents: s.deps.Agents, tenant: tenant, max: s.cfg.MaxAgents, count: -1}
}

// admit returns nil if an event of agent id may be accepted.
func (g *agentGate) admit(id, path string) error {
	if g.agents == nil || g.agents.HasAgent(g.tenant, id) {
		return nil
	}
	if g.hasFirst && g.first == id {
		return nil
	}
	if _, ok := g.more[id]; ok {
		return nil
	}
	if g.count < 0 {
		g.count = g.agents.AgentCount(g.tenant)
	}
	fresh := len(g.more)
	if g.hasFirst {
		fresh++
	}
	if g.count+fresh >= g.max {
		return agent.LimitReached(g.max, id, path)
	}
	switch {
	case !g.hasFirst:
		g.first, g.hasFirst = id, true
	case g.more == nil:
		g.more = map[string]struct{}{id: {}}
	default:
		g.more[id] = struct{}{}
	}
	return nil
}

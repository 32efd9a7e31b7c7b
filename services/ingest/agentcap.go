package ingest

import (
	"github.com/vigilhq/vigil/pkg/agent"
)

// agentGate admits, within one request, the events of agents the tenant
// already has, and of new agents while the tenant stays below the cap
// (counting the new agents admitted earlier in the same request, so one
// batch of new ids cannot overshoot it).
type agentGate struct {
	agents Agents
	tenant string
	max    int
	count  int
	fresh  map[string]struct{}
}

func (s *Service) agentGate(tenant string) *agentGate {
	if s.deps.Agents == nil || s.cfg.MaxAgents == 0 {
		return nil
	}
	return &agentGate{agents: s.deps.Agents, tenant: tenant, max: s.cfg.MaxAgents, count: -1}
}

// admit returns nil if an event of agent id may be accepted. A nil gate
// admits everything.
func (g *agentGate) admit(id, path string) error {
	if g == nil || g.agents.HasAgent(g.tenant, id) {
		return nil
	}
	if _, ok := g.fresh[id]; ok {
		return nil
	}
	if g.count < 0 {
		g.count = g.agents.AgentCount(g.tenant)
	}
	if g.count+len(g.fresh) >= g.max {
		return agent.LimitReached(g.max, id, path)
	}
	if g.fresh == nil {
		g.fresh = map[string]struct{}{}
	}
	g.fresh[id] = struct{}{}
	return nil
}

// admitOne is admit for a request of one event: the same answer as a
// fresh gate's first admit, without the gate's map of the request's new
// agents (a single event of an agent the catalog does not know yet
// allocated one on every request).
func (s *Service) admitOne(tenant, id string) error {
	a := s.deps.Agents
	if a == nil || s.cfg.MaxAgents == 0 || a.HasAgent(tenant, id) {
		return nil
	}
	if a.AgentCount(tenant) >= s.cfg.MaxAgents {
		return agent.LimitReached(s.cfg.MaxAgents, id, "")
	}
	return nil
}

package main

import (
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/services/api"
	"github.com/vigilhq/vigil/services/ingest"
)

// counter reads a counter of the stack's registry (0 if absent).
func (s *testStack) counter(name string) float64 {
	s.t.Helper()
	fams, err := s.st.Reg.Gather()
	if err != nil {
		s.t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			var sum float64
			for _, m := range f.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
			return sum
		}
	}
	return 0
}

func (s *testStack) agentCount(key string) int {
	s.t.Helper()
	var p page[agentDoc]
	r := s.get(key, "/v1/agents?limit=100")
	expect(s.t, r, http.StatusOK, "list agents")
	r.decode(s.t, &p)
	return len(p.Data)
}

func newAgentEvents(prefix string, n int) []map[string]any {
	events := make([]map[string]any, n)
	for i := range events {
		events[i] = ev(fmt.Sprintf("%s-%04d", prefix, i), "s-"+prefix, time.Now())
	}
	return events
}

// TestAgentCap is issue 14's reproduction: one batch of 1,000 events with
// new agent ids created 1,000 agents. With a cap of 10, ingest accepts the
// events of the first 10 new agents, refuses the rest with a clear error,
// and discovery registers exactly 10.
func TestAgentCap(t *testing.T) {
	const limit = 10
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN,
		Ingest: func(c *ingest.Config) { c.MaxAgents = limit },
		API:    func(c *api.Config) { unlimited(c); c.MaxAgents = limit }})
	owner := s.st.BootstrapKey
	agentKey := s.key("default", auth.RoleAgent)

	br := s.postBatch(agentKey, newAgentEvents("flood", 1000))
	if br.Accepted != limit || br.Rejected != 1000-limit {
		t.Fatalf("batch: accepted %d, rejected %d; want %d and %d", br.Accepted, br.Rejected, limit, 1000-limit)
	}
	last := br.Results[999]
	if last.Status != "rejected" || last.Error == nil || last.Error.Code != "CONFLICT" || len(last.Error.Details) != 1 ||
		last.Error.Details[0].Code != agent.CodeLimit || last.Error.Details[0].Path != "events[999].agentId" || last.EventID == "" {
		t.Fatalf("refused event's result: %+v", last)
	}
	eventually(t, 15*time.Second, func() (bool, string) {
		n := s.counter("vigil_agents_discovered_total")
		return n == limit, fmt.Sprintf("%v agents discovered", n)
	})
	if n := s.agentCount(owner); n != limit {
		t.Fatalf("%d agents, want %d", n, limit)
	}

	// One event of a new agent: the single-event door gives the same
	// answer; a known agent still reports.
	r := s.post(agentKey, "/v1/events", ev("one-more", "s-1", time.Now()))
	checkEnvelope(t, r, http.StatusConflict, "CONFLICT", "conflict", []pair{{"agentId", agent.CodeLimit}})
	expect(t, s.post(agentKey, "/v1/events", ev("flood-0003", "s-1", time.Now())), http.StatusAccepted, "known agent")

	// Registering a new agent explicitly is refused the same way; claiming
	// a discovered one is not a new agent.
	checkEnvelope(t, s.post(owner, "/v1/agents", map[string]any{"agentId": "registered-past-the-cap"}), http.StatusConflict, "CONFLICT", "conflict", []pair{{"agentId", agent.CodeLimit}})
	expect(t, s.post(owner, "/v1/agents", map[string]any{"agentId": "flood-0004", "name": "claimed"}), http.StatusCreated, "claim a discovered agent")
}

// TestAgentCapDiscoveryBackstop: with no cap at ingest (or batches racing
// on several instances), discovery still registers no agent past the cap
// and counts the ones it refused.
func TestAgentCapDiscoveryBackstop(t *testing.T) {
	const limit = 10
	db := chtest.New(t)
	s := startStack(t, stacktest.Options{DSN: db.DSN,
		Ingest: func(c *ingest.Config) { c.MaxAgents = 0 },
		API:    func(c *api.Config) { unlimited(c); c.MaxAgents = limit }})
	br := s.postBatch(s.key("default", auth.RoleAgent), newAgentEvents("flood", 1000))
	if br.Accepted != 1000 {
		t.Fatalf("batch: accepted %d, want 1000 (nothing accepted is lost)", br.Accepted)
	}
	eventually(t, 30*time.Second, func() (bool, string) {
		d, r := s.counter("vigil_agents_discovered_total"), s.counter("vigil_agents_discovery_refused_total")
		return d+r == 1000, fmt.Sprintf("%v discovered, %v refused", d, r)
	})
	if d := s.counter("vigil_agents_discovered_total"); d != limit {
		t.Fatalf("%v agents discovered, want %d", d, limit)
	}
	if n := s.agentCount(s.st.BootstrapKey); n != limit {
		t.Fatalf("%d agents, want %d", n, limit)
	}
}

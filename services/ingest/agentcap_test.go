package ingest

import (
	"errors"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// catalog is an Agents of fixed content: the gate only reads it.
type catalog map[string]bool

func (c catalog) HasAgent(_, id string) bool { return c[id] }
func (c catalog) AgentCount(string) int      { return len(c) }

// TestAgentGate: new agents are admitted while the tenant stays below
// the cap, counting the ones admitted earlier in the request; a new
// agent admitted once is admitted again; known agents always are.
func TestAgentGate(t *testing.T) {
	known := catalog{"k1": true, "k2": true}
	tests := []struct {
		name  string
		max   int
		ids   []string
		admit []bool
	}{
		{"no cap", 0, []string{"a", "b", "c"}, []bool{true, true, true}},
		{"one new agent, room for one", 3, []string{"a", "a", "b", "k1"}, []bool{true, true, false, true}},
		{"no room", 2, []string{"k2", "a"}, []bool{true, false}},
		{"several new agents", 5, []string{"a", "b", "c", "b", "a", "d", "k1"}, []bool{true, true, true, true, true, false, true}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &Service{cfg: Config{MaxAgents: tc.max}, deps: Deps{Agents: known}}
			g := s.agentGate("acme")
			for i, id := range tc.ids {
				err := g.admit(id, "agentId")
				if (err == nil) != tc.admit[i] {
					t.Fatalf("admit %q (#%d) = %v, want admitted %v", id, i, err, tc.admit[i])
				}
				var ae *apperr.Error
				if err != nil && !errors.As(err, &ae) {
					t.Fatalf("admit %q: %T is not the error envelope's", id, err)
				}
			}
		})
	}
}

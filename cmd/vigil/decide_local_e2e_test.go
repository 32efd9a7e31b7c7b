package main

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/vigilhq/vigil/pkg/auth"
)

// TestDecisionsInProcess: the all-in-one's api decides with the policy
// service of its own process (rpc.Local), and that path is held to what
// the NATS one is: nothing went over NATS; a decision right after a
// policy change (the caller's consistency token) uses the new policy; a
// halt stored just before is honoured. (No policy service in the process
// falls back to NATS, where nothing answering is a 503: TestPolServiceDown
// and pkg/rpc's TestLocalOnlyWhileServed; a record that cannot be stored
// is a 503 from the same Decide either way.)
func TestDecisionsInProcess(t *testing.T) {
	s := polStart(t)
	c := s.as(s.key("pol-local", auth.RoleOwner))
	s.register("pol-local", "agt-local")
	refund := func(amount float64) polKLA {
		t.Helper()
		return c.evaluate(map[string]any{"agentId": "agt-local", "action": "execute_refund", "context": map[string]any{"amount": amount}})
	}
	id := c.createPolicy(polKLARefundPolicy)
	if d := refund(500); d.Decision != "allow" {
		t.Fatalf("500 under a 1000 threshold: %s", d)
	}
	srv, err := s.st.Policy.StartRPC()
	if err != nil {
		t.Fatal(err)
	}
	var overNATS int
	for _, e := range srv.Stats().Endpoints {
		overNATS += e.NumRequests
	}
	if overNATS != 0 {
		t.Fatalf("%d decisions went over NATS; the api and the policy service share this process", overNATS)
	}

	// Each change answered, then at once a decision: the new policy.
	for i, threshold := range []int{100, 1000, 100} {
		patch := map[string]any{"rules": []map[string]any{{
			"id": "big-refund", "when": fmt.Sprintf(`action.tool == "execute_refund" && context.amount > %d`, threshold),
			"outcome": "require_approval", "reasonCodes": []string{"AMOUNT_OVER_THRESHOLD"},
		}}}
		c.do(http.MethodPatch, "/v1/policies/"+id, patch).want(t, http.StatusOK, "patch threshold")
		want := map[int]string{100: "require_approval", 1000: "allow"}[threshold]
		if d := refund(500); d.Decision != want {
			t.Fatalf("change %d (threshold %d): 500 is %s, want %s", i, threshold, d, want)
		}
	}

	// A halt raised, then at once a decision: halted.
	c.raiseHalt(map[string]any{"scope": "agent", "agentId": "agt-local", "reason": "in-process check"})
	if d := refund(1); !halted(d) {
		t.Fatalf("right after the halt: %s, want block HALTED", d)
	}
}

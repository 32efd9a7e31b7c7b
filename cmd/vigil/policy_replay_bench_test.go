package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/services/api"
)

// BenchmarkPolicyReplayRoute measures POST /v1/policies/replay end to end
// on the in-process stack and the real ClickHouse: one op is one replay of
// a full window (api.MaxReplayDecisions recorded decisions, streamed from
// the decisions table, decoded and re-decided with the draft). decisions/s
// is the throughput of re-evaluation including the read.
func BenchmarkPolicyReplayRoute(b *testing.B) {
	st, base, key := readBenchStack(b, 100*time.Millisecond)
	const ten = "bench"
	pack, _, err := buildPack(policyTestdata+"/policies", ten)
	if err != nil {
		b.Fatal(err)
	}
	inputs := replayFixtureInputs(ten)
	now := time.Now()
	recs := make([]policy.DecisionRecord, api.MaxReplayDecisions)
	for i := range recs {
		in := inputs[i%len(inputs)]
		recs[i] = policy.DecisionRecord{ID: fmt.Sprintf("dec_%020x", i), Tenant: ten, AgentID: in.Agent.ID, Source: policy.SourceDecision,
			Input: in, Decision: pack.Evaluate(in, policy.OrgPolicy{Mode: policy.OrgOff}), At: now.Add(-time.Duration(i) * time.Second)}
	}
	insertDecisions(b, st.CH, recs)
	draft := `
id: refunds
name: Refunds, higher threshold
rules:
  - {id: big-refund, when: 'action.tool == "issue_refund" && context.amount > 5000', outcome: require_approval, reasonCodes: [AMOUNT_OVER_THRESHOLD]}
`
	examined := 0
	b.ResetTimer()
	for b.Loop() {
		r, err := send(base, req{method: http.MethodPost, path: "/v1/policies/replay?days=1", key: key, body: draft, header: map[string]string{"Content-Type": "application/yaml"}})
		if err != nil || r.status != http.StatusOK {
			b.Fatalf("replay: %v %s", err, r)
		}
		var rep api.ReplayReport
		if err := json.Unmarshal(r.body, &rep); err != nil {
			b.Fatal(err)
		}
		if rep.Examined != api.MaxReplayDecisions {
			b.Fatalf("examined %d of %d", rep.Examined, api.MaxReplayDecisions)
		}
		examined += rep.Examined
	}
	b.ReportMetric(float64(examined)/b.Elapsed().Seconds(), "decisions/s")
}

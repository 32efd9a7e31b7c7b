package policy

import (
	"encoding/json"
	"testing"
	"time"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// fullCandidate is the test pickDecision made on the whole record before
// judgeCandidate.
func fullCandidate(data []byte) bool {
	var rec rules.DecisionRecord
	return json.Unmarshal(data, &rec) == nil && rec.Decision.Outcome == rules.Warn && rec.Input.Agent.JudgeEnabled
}

// FuzzJudgeCandidate holds judgeCandidate to the full decode's test: every
// record that test flags passes (so prefiltering loses no flag), and a
// record both decode gets the same answer.
func FuzzJudgeCandidate(f *testing.F) {
	for _, o := range []rules.Outcome{rules.Allow, rules.Warn, rules.Block, rules.RequireApproval} {
		for _, judge := range []bool{false, true} {
			rec := rules.DecisionRecord{ID: "d1", Tenant: "acme", AgentID: "a1", At: time.Unix(1, 0).UTC(),
				Input:    rules.Input{Agent: rules.AgentState{ID: "a1", JudgeEnabled: judge}, Action: rules.Action{Kind: "tool_call", Tool: "t"}, Context: map[string]any{"k": []any{1, "x"}}},
				Decision: rules.Decision{Outcome: o, ReasonCodes: []string{"r"}}}
			data, err := json.Marshal(rec)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(data)
		}
	}
	f.Add([]byte(`{"input":{"agent":{"judgeEnabled":true}},"result":{"decision":"warn"},"at":"x"}`))
	f.Add([]byte(`{"input":{"agent":{"judgeEnabled":"yes"}},"result":{"decision":"warn"}}`))
	f.Add([]byte(`{"INPUT":{"Agent":{"JudgeEnabled":true}},"Result":{"Decision":"warn"}}`))
	f.Add([]byte(`{"input":null,"result":{"decision":"warn"},"input":{"agent":{"judgeEnabled":true}}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		full, quick := fullCandidate(data), judgeCandidate(data)
		if full && !quick {
			t.Fatalf("the full decode flags %q, judgeCandidate does not", data)
		}
		var rec rules.DecisionRecord
		if json.Unmarshal(data, &rec) == nil && full != quick {
			t.Fatalf("%q decodes: full %v, judgeCandidate %v", data, full, quick)
		}
	})
}

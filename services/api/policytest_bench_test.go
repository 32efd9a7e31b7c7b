package api

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// BenchmarkReplayDecisions measures the CPU side of POST
// /v1/policies/replay per recorded decision: decoding the stored record
// JSON (as the ClickHouse rows carry it), re-deciding it with a draft pack
// of the tenant's policies and tallying the change. ns/op is per
// decision; decisions/s is reported.
func BenchmarkReplayDecisions(b *testing.B) {
	c, err := rules.NewCompiler()
	if err != nil {
		b.Fatal(err)
	}
	var vs []rules.Versioned
	for i := range 10 {
		d, err := rules.Parse(fmt.Appendf(nil, `
id: p%d
name: policy %d
rules:
  - {id: big, when: 'action.tool == "refund%d" && context.amount > 1000', outcome: require_approval}
  - {id: shell, when: 'action.tool == "shell" && context.cmd.contains("rm -rf")', outcome: block}
  - {id: pii, when: '"pii" in session.labels && action.tool == "send_email"', outcome: warn}
`, i, i, i))
		if err != nil {
			b.Fatal(err)
		}
		comp, err := c.Compile(d)
		if err != nil {
			b.Fatal(err)
		}
		vs = append(vs, rules.Versioned{Version: 1, Compiled: comp})
	}
	pack, err := rules.NewPack("t", vs, nil)
	if err != nil {
		b.Fatal(err)
	}
	org := rules.OrgPolicy{Mode: rules.OrgOff}
	raws := make([]string, 1000)
	for i := range raws {
		in := rules.Input{Tenant: "t", Agent: rules.AgentState{ID: "bot"}, Session: rules.Session{ID: "s", Events: i},
			Action:  rules.Action{Kind: "tool_call", Tool: fmt.Sprintf("refund%d", i%12), Arguments: map[string]any{"amount": float64(i * 7)}},
			Context: map[string]any{"amount": float64(i * 3), "cmd": "ls"}}
		d := pack.Evaluate(in, org)
		if i%3 == 0 { // a third recorded under another pack: they change
			d.Outcome, d.ReasonCodes = rules.Block, []string{"OLD"}
		}
		raw, _ := json.Marshal(rules.DecisionRecord{ID: fmt.Sprintf("dec_%020d", i), Tenant: "t", AgentID: "bot", Source: rules.SourceDecision,
			Input: in, Decision: d, At: time.Now()})
		raws[i] = string(raw)
	}
	rep := ReplayReport{ByChange: []ReplayCount{}, Changes: []ReplayChange{}}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		var rec rules.DecisionRecord
		if err := json.Unmarshal([]byte(raws[i%len(raws)]), &rec); err != nil {
			b.Fatal(err)
		}
		rep.add(pack, org, rec, true, DefaultReplayLimit)
	}
	b.StopTimer()
	if rep.Changed == 0 || rep.Unchanged == 0 {
		b.Fatalf("nothing changed or nothing stayed: %+v", rep.ByChange)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "decisions/s")
}

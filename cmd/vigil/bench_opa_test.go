package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	rules "github.com/vigilhq/vigil/pkg/policy"
)

// opaBinary builds (once, cached in the user's cache directory) and
// returns the opa binary that `vigil bench decide --opa` compares against.
func opaBinary(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("bash", "../../scripts/opa.sh").Output()
	if err != nil {
		var stderr string
		if ee, ok := err.(*exec.ExitError); ok {
			stderr = string(ee.Stderr)
		}
		t.Fatalf("scripts/opa.sh: %v\n%s", err, stderr)
	}
	return strings.TrimSpace(string(out))
}

// TestBenchRegoDecidesLikeEngine holds the Rego twin of the bench's pack
// to Vigil's engine: on every rule's tool at, just above and far above its
// threshold, and on a tool no rule names, OPA's server with benchRego
// decides what the compiled YAML pack (benchPolicy) decides. A comparison
// against a Rego that decides differently would measure something else.
func TestBenchRegoDecidesLikeEngine(t *testing.T) {
	const n, tenant = 100, "t"
	comp, err := rules.NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := rules.Parse([]byte(benchPolicy(n)))
	if err != nil {
		t.Fatal(err)
	}
	c, err := comp.Compile(doc)
	if err != nil {
		t.Fatal(err)
	}
	pack, err := rules.NewPack(tenant, []rules.Versioned{{Version: 1, Compiled: c}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	outcomes := map[string]int{}
	for _, r := range benchRules(n) {
		for _, amount := range []float64{float64(r.Min) - 1, float64(r.Min), float64(r.Min) + 0.5, float64(r.Min) + 1, 1e6} {
			b, _ := json.Marshal(map[string]any{"agentId": "a", "action": r.Tool, "context": map[string]any{"amount": amount}})
			bodies = append(bodies, b)
		}
	}
	bodies = append(bodies, []byte(`{"agentId":"a","action":"tool_none","context":{"amount":5}}`))
	for _, b := range bodies {
		var in struct {
			Action  string         `json:"action"`
			Context map[string]any `json:"context"`
		}
		_ = json.Unmarshal(b, &in)
		outcomes[pack.Evaluate(rules.Input{Tenant: tenant, Action: rules.Action{Kind: "tool_call", Tool: in.Action}, Context: in.Context}, rules.OrgPolicy{}).Outcome.String()]++
	}
	// The sample must exercise every outcome, or equal answers prove little.
	for _, o := range []string{"allow", "warn", "require_approval", "block"} {
		if outcomes[o] == 0 {
			t.Fatalf("the sample never decides %s: %v", o, outcomes)
		}
	}

	// Built before the clock starts: on a clean machine the one-time build
	// of opa can take longer than the servers are given.
	bin := opaBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s, err := startOPA(ctx, bin, benchRego(n))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := checkOPAOutcomes(&http.Client{Timeout: 10 * time.Second}, s, pack, tenant, bodies); err != nil {
		t.Fatal(err)
	}

	// And the check itself fails on a Rego that decides otherwise.
	wrong, err := startOPA(ctx, s.cmd.Path, strings.Replace(benchRego(n), fmt.Sprintf("input.context.amount > %d\n", 30), "input.context.amount >= 30\n", 1))
	if err != nil {
		t.Fatal(err)
	}
	defer wrong.Close()
	if err := checkOPAOutcomes(&http.Client{Timeout: 10 * time.Second}, wrong, pack, tenant, bodies); err == nil {
		t.Fatal("a Rego deciding amount == 30 differently passed the outcome check")
	}
}

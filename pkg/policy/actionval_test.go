package policy

import (
	"testing"

	"cel.dev/cel-go/cel"
)

// TestActionValueMatchesMap: every way a condition can use `action`
// gives the same result with the on-demand value as with the plain map it
// replaces, errors included.
func TestActionValueMatchesMap(t *testing.T) {
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	in := Input{Action: Action{Kind: "http", Tool: "fetch", Target: "https://API.example.com:443/x", Publisher: "acme",
		Operation: "read", Arguments: map[string]any{"n": 2.0, "tags": []any{"a"}}}}
	host := in.Action.Host()
	plain := map[string]any{
		"kind": "http", "tool": "fetch", "target": in.Action.Target, "host": host, "publisher": "acme", "operation": "read",
		"toolType": "", "targetSystem": "", "initiatorType": "", "arguments": in.Action.Arguments, "metadata": map[string]any{},
	}
	for _, expr := range []string{
		`action.tool == "fetch"`,
		`action["tool"] == "fetch"`,
		`action.host == "api.example.com" && action.kind == "http"`,
		`action.arguments.n > 1`,
		`"a" in action.arguments.tags`,
		`size(action.metadata) == 0`,
		`has(action.tool) && !has(action.nope)`,
		`action.nope == "x"`,
		`action[dyn(1)] == "x"`,
		`size(action) == 11`,
		`"tool" in action`,
		`action.exists(k, k == "publisher")`,
		`action.all(k, k != "")`,
		`action == {"tool": "fetch"}`,
		`action.toolType == "" && action.targetSystem == "" && action.initiatorType == ""`,
	} {
		t.Run(expr, func(t *testing.T) {
			ast, iss := c.env.Compile(expr)
			if iss.Err() != nil {
				t.Fatal(iss.Err())
			}
			prg, err := c.env.Program(ast, cel.EvalOptions(cel.OptOptimize))
			if err != nil {
				t.Fatal(err)
			}
			want, _, wantErr := prg.Eval(map[string]any{"action": plain})
			got, _, gotErr := prg.Eval(&lazyActivation{in: &in, host: host})
			if (wantErr != nil) != (gotErr != nil) || wantErr == nil && got.Value() != want.Value() {
				t.Fatalf("got %v (%v), want %v (%v)", got, gotErr, want, wantErr)
			}
		})
	}
}

package policy

import (
	"fmt"
	"slices"
	"sort"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/operators"
	"cel.dev/cel-go/common/types"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// CostLimit bounds the work one rule may do per evaluation, so a
// pathological expression cannot stall the decision path.
const CostLimit = 10000

// newEnv declares the variables a condition may use. They are dynamic
// maps so that policies can reach any attribute an agent reports; opts
// may declare context and action with other types (typedEnv), which
// then replace the dynamic ones.
func newEnv(typed map[string]bool, opts ...cel.EnvOption) (*cel.Env, error) {
	dyn := cel.MapType(cel.StringType, cel.DynType)
	for _, name := range []string{"action", "context", "agent", "principal", "session", "budget"} {
		if !typed[name] {
			opts = append(opts, cel.Variable(name, dyn))
		}
	}
	return cel.NewEnv(append(opts, cel.Variable("tenant", cel.StringType))...)
}

// Compiled is a policy whose rules are ready to evaluate.
type Compiled struct {
	Doc    Document
	rules  []compiledRule
	inputs []compiledInput
	labels []compiledLabel
}

// tools is the union of the tools the rules are pinned to, or nil when
// some rule (or label rule) can hold for any tool.
func (c *Compiled) tools() []string {
	for _, l := range c.labels {
		if l.prg != nil {
			return nil // a label rule's condition may read inputs for any tool
		}
	}
	var out []string
	for _, r := range c.rules {
		if r.tools == nil {
			return nil
		}
		for _, t := range r.tools {
			if !slices.Contains(out, t) {
				out = append(out, t)
			}
		}
	}
	return out
}

type compiledRule struct {
	policyID string
	rule     Rule
	outcome  Outcome
	timeout  time.Duration
	// approvals is the rule's approvals block, compiled (nil: none).
	approvals *ApprovalRequirement
	prg       cel.Program
	// skipOnError is the rule's explicit opt-out of failing closed.
	skipOnError bool
	// tools, when non-nil, are the only action.tool values for which the
	// condition can hold (from a top-level equality or `in` list).
	tools []string
	// labels is what the condition reads of session.labels.
	labels labelUse
}

// Compiler compiles documents; it is safe for concurrent use.
type Compiler struct{ env *cel.Env }

// NewCompiler prepares the CEL environment.
func NewCompiler() (*Compiler, error) {
	env, err := newEnv(nil)
	if err != nil {
		return nil, fmt.Errorf("cel environment: %w", err)
	}
	return &Compiler{env: env}, nil
}

// Compile checks and compiles every rule of d (already Normalized).
// Errors name the rule, its line and the CEL error.
func (c *Compiler) Compile(d Document) (*Compiled, error) {
	out := &Compiled{Doc: d, inputs: compileInputs(d.Inputs)}
	var typed *cel.Env
	if len(d.Inputs) > 0 {
		var err error
		if typed, err = typedEnv(d.Inputs); err != nil {
			return nil, fmt.Errorf("cel environment for inputs: %w", err)
		}
	}
	var errs []apperr.FieldError
	for i, r := range d.Rules {
		where := "rule " + r.ID
		if r.line > 0 {
			where = fmt.Sprintf("line %d: rule %s", r.line, r.ID)
		}
		prg, ast, fe := c.compileWhen(r.When, typed, fmt.Sprintf("rules[%d].when", i), where)
		if fe != nil {
			errs = append(errs, *fe)
			continue
		}
		o, _ := ParseOutcome(r.Outcome)
		var timeout time.Duration
		if r.ApprovalTimeout != "" {
			timeout, _ = time.ParseDuration(r.ApprovalTimeout)
		}
		out.rules = append(out.rules, compiledRule{policyID: d.ID, rule: r, outcome: o, timeout: timeout, prg: prg, approvals: requirement(d.ID, r),
			skipOnError: r.OnError == OnErrorSkip, tools: toolKeys(ast.NativeRep().Expr()), labels: labelsUsed(ast.NativeRep().Expr())})
	}
	labels, lerrs := c.compileLabels(d, typed)
	out.labels, errs = labels, append(errs, lerrs...)
	if len(errs) > 0 {
		return nil, apperr.Validation("policy has invalid conditions", errs...)
	}
	return out, nil
}

// program compiles one condition (a rule's or a label rule's when).
func (c *Compiler) program(when string, typed *cel.Env, path, where string) (cel.Program, *apperr.FieldError) {
	prg, _, fe := c.compileWhen(when, typed, path, where)
	return prg, fe
}

// compileWhen checks a condition against the dynamic environment and,
// when the policy declares inputs, against their types; it must be a
// bool. Errors name where it is (path, and rule and line in the message).
func (c *Compiler) compileWhen(when string, typed *cel.Env, path, where string) (cel.Program, *cel.Ast, *apperr.FieldError) {
	fail := func(code, format string, args ...any) (cel.Program, *cel.Ast, *apperr.FieldError) {
		return nil, nil, &apperr.FieldError{Path: path, Code: code, Message: where + ": " + fmt.Sprintf(format, args...)}
	}
	ast, iss := c.env.Compile(when)
	if iss != nil && iss.Err() != nil {
		return fail("invalid_expression", "%v", iss.Err())
	}
	if typed != nil {
		// Checked against the declared input types; evaluated with the
		// dynamic context, which the request check keeps consistent with
		// the declarations.
		if _, iss := typed.Compile(when); iss != nil && iss.Err() != nil {
			return fail("type_mismatch", "does not match the declared inputs: %v", iss.Err())
		}
	}
	if !ast.OutputType().IsExactType(types.BoolType) && !ast.OutputType().IsExactType(types.DynType) {
		return fail("invalid_expression", "condition must be a bool, not %s", ast.OutputType())
	}
	prg, err := c.env.Program(ast, cel.EvalOptions(cel.OptOptimize), cel.CostLimit(CostLimit))
	if err != nil {
		return fail("invalid_expression", "%v", err)
	}
	return prg, ast, nil
}

// toolKeys finds, among the top-level conjuncts of e, a test that pins
// action.tool to literals (`action.tool == "x"`, `"x" == action.tool`,
// `action.tool in ["x", "y"]`). Such a rule can only match those tools,
// which lets the engine index rules by tool the way OPA indexes rules on
// equality; nil means the rule must always be considered.
func toolKeys(e celast.Expr) []string {
	if e.Kind() != celast.CallKind {
		return nil
	}
	call := e.AsCall()
	args := call.Args()
	switch call.FunctionName() {
	case operators.LogicalAnd:
		for _, a := range args {
			if k := toolKeys(a); k != nil {
				return k
			}
		}
	case operators.Equals:
		if len(args) == 2 {
			if isActionTool(args[0]) {
				if s, ok := stringLit(args[1]); ok {
					return []string{s}
				}
			}
			if isActionTool(args[1]) {
				if s, ok := stringLit(args[0]); ok {
					return []string{s}
				}
			}
		}
	case operators.In:
		if len(args) == 2 && isActionTool(args[0]) && args[1].Kind() == celast.ListKind {
			var keys []string
			for _, el := range args[1].AsList().Elements() {
				s, ok := stringLit(el)
				if !ok {
					return nil
				}
				keys = append(keys, s)
			}
			if len(keys) > 0 {
				sort.Strings(keys)
				return keys
			}
		}
	}
	return nil
}

// isActionTool matches `action.tool` and `action["tool"]`.
func isActionTool(e celast.Expr) bool {
	switch e.Kind() {
	case celast.SelectKind:
		s := e.AsSelect()
		return !s.IsTestOnly() && s.FieldName() == "tool" && s.Operand().Kind() == celast.IdentKind && s.Operand().AsIdent() == "action"
	case celast.CallKind:
		c := e.AsCall()
		if c.FunctionName() == operators.Index && len(c.Args()) == 2 && c.Args()[0].Kind() == celast.IdentKind && c.Args()[0].AsIdent() == "action" {
			s, ok := stringLit(c.Args()[1])
			return ok && s == "tool"
		}
	}
	return false
}

func stringLit(e celast.Expr) (string, bool) {
	if e.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := e.AsLiteral().Value().(string)
	return s, ok
}

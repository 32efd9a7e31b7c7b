package policy

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

// The fail-closed property, over generated policies: whatever the
// context and tool arguments (well typed, mistyped, missing or extra
// fields), the decision
// is exactly what an independent three-valued evaluation of every rule
// gives when each erroring rule is resolved to the stricter of "matched"
// and "did not match" — except rules that say onError: skip, which do not
// match. So the outcome is never more permissive than that bound. With
// declared inputs, rules that compare a field with a literal of another
// type are refused at compile time, and CheckInput refuses exactly the
// requests whose fields violate the declarations.

// fcGen draws choices from fuzz bytes (zeros once they run out), so that
// every input of the fuzzer is a valid scenario.
type fcGen struct {
	b []byte
	i int
}

func (g *fcGen) n(k int) int {
	if k <= 1 {
		return 0
	}
	var v byte
	if g.i < len(g.b) {
		v = g.b[g.i]
		g.i++
	}
	return int(v) % k
}

// fcVal is a three-valued CEL result: true, false or error.
type fcVal int

const (
	fcFalse fcVal = iota
	fcTrue
	fcErr
)

// fcNode is a generated condition: a comparison of a context field with
// a literal, or a logical combination.
type fcNode struct {
	op       string // "&&", "||", "!", "cmp", "bare"
	kids     []*fcNode
	field    string
	cmp      string // ==, !=, >, <
	lit      any    // float64, string or bool
	mistyped bool   // the literal's type differs from the field's
}

var fcFieldTypes = []string{InputNumber, InputString, InputBool}

type fcScenario struct {
	types    map[string]string // field → declared type
	required map[string]bool
	declare  bool
	rules    []fcRule
	org      OrgPolicy
	tool     string
	ctx      map[string]any
}

type fcRule struct {
	tool    string // "" when not pinned
	cond    *fcNode
	outcome Outcome
	skip    bool
}

func fcLiteral(g *fcGen, typ string) any {
	switch typ {
	case InputNumber:
		return float64(g.n(10))
	case InputString:
		return fmt.Sprintf("s%d", g.n(3))
	}
	return g.n(2) == 0
}

func (g *fcGen) node(s *fcScenario, depth int) *fcNode {
	if depth < 2 {
		switch g.n(5) {
		case 0:
			return &fcNode{op: "&&", kids: []*fcNode{g.node(s, depth+1), g.node(s, depth+1)}}
		case 1:
			return &fcNode{op: "||", kids: []*fcNode{g.node(s, depth+1), g.node(s, depth+1)}}
		case 2:
			return &fcNode{op: "!", kids: []*fcNode{g.node(s, depth+1)}}
		}
	}
	names := sortedKeys(s.types)
	field := names[g.n(len(names))]
	typ := s.types[field]
	if typ == InputBool && g.n(3) == 0 {
		return &fcNode{op: "bare", field: field}
	}
	litType := typ
	mistyped := g.n(6) == 0
	if mistyped {
		litType = fcFieldTypes[(slices.Index(fcFieldTypes, typ)+1+g.n(2))%3]
	}
	ops := []string{"==", "!="}
	if litType != InputBool {
		ops = append(ops, ">", "<")
	}
	return &fcNode{op: "cmp", field: field, cmp: ops[g.n(len(ops))], lit: fcLiteral(g, litType), mistyped: mistyped}
}

func (n *fcNode) cel() string {
	switch n.op {
	case "&&", "||":
		return "(" + n.kids[0].cel() + " " + n.op + " " + n.kids[1].cel() + ")"
	case "!":
		return "!(" + n.kids[0].cel() + ")"
	case "bare":
		return n.ref()
	}
	lit := ""
	switch v := n.lit.(type) {
	case float64:
		// Relational operators take an integer literal (CEL compares it
		// with a double); equality wants a double under typed inputs.
		lit = fmt.Sprintf("%d", int(v))
		if n.cmp == "==" || n.cmp == "!=" {
			lit += ".0"
		}
	case string:
		lit = fmt.Sprintf("%q", v)
	case bool:
		lit = fmt.Sprint(v)
	}
	return n.ref() + " " + n.cmp + " " + lit
}

// ref is how a rule reads the field: a context field, or a tool argument
// for a name declared "arguments.<name>".
func (n *fcNode) ref() string {
	if strings.HasPrefix(n.field, ArgumentsPrefix) {
		return "action." + n.field
	}
	return "context." + n.field
}

func (n *fcNode) hasMistyped() bool {
	if n.mistyped {
		return true
	}
	for _, k := range n.kids {
		if k.hasMistyped() {
			return true
		}
	}
	return false
}

// eval is CEL's semantics, written independently of the engine: && and
// || are commutative and absorb errors (false && error is false), a
// missing key errors, equality across types is false, ordering is defined
// between two numbers, two strings or two bools and errors otherwise.
func (n *fcNode) eval(ctx map[string]any) fcVal {
	switch n.op {
	case "&&":
		a, b := n.kids[0].eval(ctx), n.kids[1].eval(ctx)
		switch {
		case a == fcFalse || b == fcFalse:
			return fcFalse
		case a == fcErr || b == fcErr:
			return fcErr
		}
		return fcTrue
	case "||":
		a, b := n.kids[0].eval(ctx), n.kids[1].eval(ctx)
		switch {
		case a == fcTrue || b == fcTrue:
			return fcTrue
		case a == fcErr || b == fcErr:
			return fcErr
		}
		return fcFalse
	case "!":
		switch n.kids[0].eval(ctx) {
		case fcTrue:
			return fcFalse
		case fcFalse:
			return fcTrue
		}
		return fcErr
	}
	v, ok := ctx[n.field]
	if !ok {
		return fcErr
	}
	if n.op == "bare" {
		b, isBool := v.(bool)
		if !isBool {
			return fcErr
		}
		return fcBool(b)
	}
	switch n.cmp {
	case "==":
		return fcBool(v == n.lit)
	case "!=":
		return fcBool(v != n.lit)
	}
	var less, greater bool
	switch a := v.(type) {
	case float64:
		b, ok := n.lit.(float64)
		if !ok {
			return fcErr
		}
		less, greater = a < b, a > b
	case string:
		b, ok := n.lit.(string)
		if !ok {
			return fcErr
		}
		less, greater = a < b, a > b
	case bool:
		b, ok := n.lit.(bool)
		if !ok {
			return fcErr
		}
		less, greater = !a && b, a && !b
	default:
		return fcErr
	}
	if n.cmp == "<" {
		return fcBool(less)
	}
	return fcBool(greater)
}

func fcBool(b bool) fcVal {
	if b {
		return fcTrue
	}
	return fcFalse
}

// fcValue draws a context value: usually of the field's type, otherwise
// anything JSON can carry.
func fcValue(g *fcGen, typ string) (any, bool) {
	switch g.n(9) {
	case 0:
		return nil, false // missing
	case 1:
		return nil, true // null
	case 2:
		return []any{float64(g.n(10))}, true
	case 3:
		return map[string]any{"v": float64(g.n(10))}, true
	case 4:
		return fcLiteral(g, fcFieldTypes[g.n(3)]), true
	}
	return fcLiteral(g, typ), true
}

func fcGenerate(data []byte) fcScenario {
	g := &fcGen{b: data}
	s := fcScenario{types: map[string]string{}, required: map[string]bool{}, ctx: map[string]any{}}
	for i := range 1 + g.n(4) {
		f := fmt.Sprintf("f%d", i)
		if g.n(3) == 0 {
			f = ArgumentsPrefix + f
		}
		s.types[f] = fcFieldTypes[g.n(3)]
		s.required[f] = g.n(2) == 0
	}
	s.declare = g.n(2) == 0
	for range 1 + g.n(5) {
		r := fcRule{cond: g.node(&s, 0), outcome: Outcome(g.n(4)), skip: g.n(5) == 0}
		if g.n(2) == 0 {
			r.tool = fmt.Sprintf("t%d", g.n(3))
		}
		s.rules = append(s.rules, r)
	}
	if g.n(2) == 0 {
		// A deny default: only t0 and t1 are admitted.
		s.org = OrgPolicy{Mode: OrgAllowlist, Tools: []string{"t0", "t1"}}
	}
	s.tool = fmt.Sprintf("t%d", g.n(4))
	for f, typ := range fcSorted(s.types) {
		if v, present := fcValue(g, typ); present {
			s.ctx[f] = v
		}
	}
	if g.n(2) == 0 {
		s.ctx["extra"] = "x"
	}
	return s
}

// fcSorted iterates a map in key order, so a scenario is a function of
// its bytes.
func fcSorted(m map[string]string) func(func(string, string) bool) {
	return func(yield func(string, string) bool) {
		for _, k := range sortedKeys(m) {
			if !yield(k, m[k]) {
				return
			}
		}
	}
}

func (s fcScenario) document() Document {
	d := Document{ID: "gen", Name: "generated"}
	if s.declare {
		d.Inputs = map[string]InputSpec{}
		for f, typ := range s.types {
			d.Inputs[f] = InputSpec{Type: typ, Required: s.required[f]}
		}
	}
	for i, r := range s.rules {
		when := r.cond.cel()
		if r.tool != "" {
			when = fmt.Sprintf("action.tool == %q && %s", r.tool, when)
		}
		rule := Rule{ID: fmt.Sprintf("r%d", i), When: when, Outcome: r.outcome.String(), ReasonCodes: []string{fmt.Sprintf("R%d", i)}}
		if r.skip {
			rule.OnError = OnErrorSkip
		}
		d.Rules = append(d.Rules, rule)
	}
	return d
}

func checkFailClosed(t *testing.T, c *Compiler, data []byte) {
	s := fcGenerate(data)
	d := s.document()
	if err := d.Normalize(); err != nil {
		t.Fatalf("generated document invalid: %v\n%+v", err, d)
	}
	comp, err := c.Compile(d)
	mistyped := slices.ContainsFunc(s.rules, func(r fcRule) bool { return r.cond.hasMistyped() })
	if s.declare && mistyped {
		if err == nil {
			t.Fatalf("a rule comparing a field with another type compiled against declared inputs: %+v", d.Rules)
		}
		return
	}
	if err != nil {
		t.Fatalf("compile: %v\n%+v", err, d.Rules)
	}
	pack, err := NewPack("t", []Versioned{{Version: 1, Compiled: comp}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The oracle keeps context fields and tool arguments in one map keyed
	// by declared name; the request carries them apart.
	in := Input{Tenant: "t", Action: Action{Tool: s.tool}, Context: map[string]any{}}
	for k, v := range s.ctx {
		if arg, ok := strings.CutPrefix(k, ArgumentsPrefix); ok {
			if in.Action.Arguments == nil {
				in.Action.Arguments = map[string]any{}
			}
			in.Action.Arguments[arg] = v
		} else {
			in.Context[k] = v
		}
	}

	// The request check refuses exactly the declared violations of a
	// policy that can apply to the tool.
	applies := slices.ContainsFunc(s.rules, func(r fcRule) bool { return r.tool == "" || r.tool == s.tool })
	var wantViolations []string
	if s.declare && applies {
		for f, typ := range fcSorted(s.types) {
			v, present := s.ctx[f]
			switch {
			case !present && s.required[f]:
				wantViolations = append(wantViolations, f)
			case !present:
			case typ == InputNumber && !isFloat(v), typ == InputString && !isString(v), typ == InputBool && !isBool(v):
				wantViolations = append(wantViolations, f)
			}
		}
	}
	var gotViolations []string
	for _, fe := range pack.CheckInput(in) {
		gotViolations = append(gotViolations, strings.TrimPrefix(fe.Path, "context."))
	}
	if !slices.Equal(gotViolations, wantViolations) {
		t.Fatalf("CheckInput: got %v, want %v (context %v, inputs %+v)", gotViolations, wantViolations, s.ctx, d.Inputs)
	}

	// The decision: the strictest of the built-in org check and every
	// rule that held or errored (stricter resolution) without opting out.
	want, evalErr := Allow, false
	if s.org.Mode == OrgAllowlist && !slices.Contains(s.org.Tools, s.tool) {
		want = Block
	}
	var explain []string
	for i, r := range s.rules {
		v := fcTrue
		if r.tool != "" && r.tool != s.tool {
			v = fcFalse
		} else {
			v = r.cond.eval(s.ctx)
		}
		explain = append(explain, fmt.Sprintf("r%d %s %q → %v", i, r.outcome, d.Rules[i].When, v))
		if v == fcTrue || v == fcErr && !r.skip && r.outcome > Allow {
			want = max(want, r.outcome)
			evalErr = evalErr || v == fcErr
		}
	}
	got := pack.Evaluate(in, s.org)
	if got.Outcome != want || slices.Contains(got.ReasonCodes, ReasonEvaluationError) != evalErr {
		t.Fatalf("got %s %v (errors %v), want %s (EVALUATION_ERROR: %v)\ncontext %v, tool %s, org %+v\n%s",
			got.Outcome, got.ReasonCodes, got.Errors, want, evalErr, s.ctx, s.tool, s.org, strings.Join(explain, "\n"))
	}
}

func isFloat(v any) bool  { _, ok := v.(float64); return ok }
func isString(v any) bool { _, ok := v.(string); return ok }
func isBool(v any) bool   { _, ok := v.(bool); return ok }

// TestFailClosedProperty runs the property over a fixed set of generated
// scenarios on every `go test`.
func TestFailClosedProperty(t *testing.T) {
	c, err := NewCompiler()
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(12, 2026))
	for i := range 1500 {
		data := make([]byte, 64)
		for j := range data {
			data[j] = byte(r.IntN(256))
		}
		t.Run(fmt.Sprint(i), func(t *testing.T) { checkFailClosed(t, c, data) })
	}
}

// FuzzFailClosed explores further (`make fuzz`); its seeds are committed
// in testdata/fuzz/FuzzFailClosed.
func FuzzFailClosed(f *testing.F) {
	c, err := NewCompiler()
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte{})
	f.Add([]byte("\x03\x02\x01\x00\x01\x00\x02\x01\x00\x04\x03\x00\x01\x02\x00\x05\x01"))
	f.Fuzz(func(t *testing.T, data []byte) { checkFailClosed(t, c, data) })
}

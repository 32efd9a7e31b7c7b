package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// The CEL object types the variables have while the rules of a policy
// with declared inputs are type-checked: `context` always, `action` (with
// its arguments) when tool arguments are declared.
const (
	contextTypeName   = "vigil.Context"
	actionTypeName    = "vigil.Action"
	argumentsTypeName = "vigil.Arguments"
)

// actionFields are the string attributes of the action variable.
var actionFields = []string{"kind", "tool", "target", "host", "publisher", "operation", "toolType", "targetSystem", "initiatorType"}

// celType is the CEL type a declared input has in a rule. Numbers are
// doubles, as JSON gives them; CEL compares a double with an integer
// literal (`context.amount > 1000`), but `==`, `in` and arithmetic need a
// double literal (`1000.0`).
func celType(t string) *types.Type {
	switch t {
	case InputNumber:
		return types.DoubleType
	case InputString:
		return types.StringType
	case InputBool:
		return types.BoolType
	case InputList:
		return types.NewListType(types.DynType)
	default:
		return types.NewMapType(types.StringType, types.DynType)
	}
}

// inputProvider declares `context` (and `action.arguments`) as objects
// whose fields are exactly the declared inputs, so that CEL's checker
// refuses a rule that reads an undeclared field or compares a field with
// a value of another type. It is used to check rules only; evaluation
// keeps the dynamic maps.
type inputProvider struct {
	*types.Registry
	objects map[string]map[string]*types.Type // type name → field → type
}

func (p inputProvider) FindStructType(name string) (*types.Type, bool) {
	if _, ok := p.objects[name]; ok {
		return types.NewTypeTypeWithParam(types.NewObjectType(name)), true
	}
	return p.Registry.FindStructType(name)
}

func (p inputProvider) FindStructFieldNames(name string) ([]string, bool) {
	if fields, ok := p.objects[name]; ok {
		return sortedKeys(fields), true
	}
	return p.Registry.FindStructFieldNames(name)
}

func (p inputProvider) FindStructFieldType(name, field string) (*types.FieldType, bool) {
	if fields, ok := p.objects[name]; ok {
		t, ok := fields[field]
		if !ok {
			return nil, false
		}
		return &types.FieldType{Type: t}, true
	}
	return p.Registry.FindStructFieldType(name, field)
}

func (p inputProvider) NewValue(name string, fields map[string]ref.Val) ref.Val {
	return p.Registry.NewValue(name, fields)
}

// typedEnv is the checking environment for a policy declaring inputs.
func typedEnv(inputs map[string]InputSpec) (*cel.Env, error) {
	reg, err := types.NewRegistry()
	if err != nil {
		return nil, fmt.Errorf("cel registry: %w", err)
	}
	ctx, args := map[string]*types.Type{}, map[string]*types.Type{}
	for name, spec := range inputs {
		if arg, ok := strings.CutPrefix(name, ArgumentsPrefix); ok {
			args[arg] = celType(spec.Type)
		} else {
			ctx[name] = celType(spec.Type)
		}
	}
	objects := map[string]map[string]*types.Type{contextTypeName: ctx}
	typed := map[string]bool{"context": true}
	opts := []cel.EnvOption{cel.CrossTypeNumericComparisons(true), cel.Variable("context", cel.ObjectType(contextTypeName))}
	if len(args) > 0 {
		action := map[string]*types.Type{"arguments": types.NewObjectType(argumentsTypeName), "metadata": celType(InputMap)}
		for _, f := range actionFields {
			action[f] = types.StringType
		}
		objects[actionTypeName], objects[argumentsTypeName] = action, args
		opts = append(opts, cel.Variable("action", cel.ObjectType(actionTypeName)))
		typed["action"] = true
	}
	return newEnv(typed, append([]cel.EnvOption{cel.CustomTypeProvider(inputProvider{Registry: reg, objects: objects})}, opts...)...)
}

// compiledInput is a declared input ready to check values.
type compiledInput struct {
	name string // as declared: "amount" or "arguments.amount"
	key  string // the key in the context or the arguments
	args bool   // a tool argument rather than a context field
	path string // where a violation points: context.amount, arguments.amount
	spec InputSpec
	re   *regexp.Regexp
}

func compileInputs(inputs map[string]InputSpec) []compiledInput {
	out := make([]compiledInput, 0, len(inputs))
	for _, name := range sortedKeys(inputs) {
		spec := inputs[name]
		ci := compiledInput{name: name, key: name, path: "context." + name, spec: spec}
		if arg, ok := strings.CutPrefix(name, ArgumentsPrefix); ok {
			ci.key, ci.args, ci.path = arg, true, name
		}
		if spec.Pattern != "" {
			// Normalize has checked the pattern compiles.
			ci.re = regexp.MustCompile(spec.Pattern)
		}
		out = append(out, ci)
	}
	return out
}

// check returns the violation of v (present says whether the key was
// sent at all), or nil.
func (ci *compiledInput) check(v any, present bool) *apperr.FieldError {
	bad := func(code, format string, args ...any) *apperr.FieldError {
		return &apperr.FieldError{Path: ci.path, Code: code, Message: fmt.Sprintf("field '%s' ", ci.name) + fmt.Sprintf(format, args...)}
	}
	s := ci.spec
	if !present {
		if s.Required {
			return bad("required", "is required")
		}
		return nil
	}
	var size float64
	switch s.Type {
	case InputNumber:
		n, ok := number(v)
		if !ok {
			return bad("invalid_type", "must be a number")
		}
		if len(s.Enum) > 0 && !inEnum(s.Enum, n) {
			return bad("invalid_value", "must be one of %s", enumList(s.Enum))
		}
		if s.Min != nil && n < *s.Min {
			return bad("out_of_range", "must be at least %s", fmtNum(*s.Min))
		}
		if s.Max != nil && n > *s.Max {
			return bad("out_of_range", "must be at most %s", fmtNum(*s.Max))
		}
		return nil
	case InputString:
		str, ok := v.(string)
		if !ok {
			return bad("invalid_type", "must be a string")
		}
		if len(s.Enum) > 0 && !inEnum(s.Enum, str) {
			return bad("invalid_value", "must be one of %s", enumList(s.Enum))
		}
		if ci.re != nil && !ci.re.MatchString(str) {
			return bad("invalid_format", "must match %s", s.Pattern)
		}
		size = float64(utf8.RuneCountInString(str))
	case InputBool:
		if _, ok := v.(bool); !ok {
			return bad("invalid_type", "must be a bool")
		}
		return nil
	case InputList:
		l, ok := v.([]any)
		if !ok {
			return bad("invalid_type", "must be a list")
		}
		size = float64(len(l))
	case InputMap:
		m, ok := v.(map[string]any)
		if !ok {
			return bad("invalid_type", "must be a map")
		}
		size = float64(len(m))
	}
	if s.Min != nil && size < *s.Min {
		return bad("out_of_range", "must have a length of at least %s", fmtNum(*s.Min))
	}
	if s.Max != nil && size > *s.Max {
		return bad("out_of_range", "must have a length of at most %s", fmtNum(*s.Max))
	}
	return nil
}

// inEnum compares without boxing v, which would allocate on every
// request.
func inEnum[T float64 | string](enum []any, v T) bool {
	for _, e := range enum {
		if x, ok := e.(T); ok && x == v {
			return true
		}
	}
	return false
}

func fmtNum(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

func enumList(vals []any) string {
	parts := make([]string, len(vals))
	for i, v := range vals {
		if f, ok := v.(float64); ok {
			parts[i] = fmtNum(f)
		} else {
			parts[i] = fmt.Sprint(v)
		}
	}
	return strings.Join(parts, ", ")
}

// inputCheck is one policy's declared inputs; the pack indexes it by the
// tools the policy's rules can apply to.
type inputCheck struct {
	inputs []compiledInput
}

// CheckInput returns every way in violates the declared inputs of the
// policies in the pack that can apply to its action (a policy whose
// rules all pin action.tool to other tools does not apply), or nil.
// Callers refuse such a request before deciding (InputError).
func (p *Pack) CheckInput(in Input) []apperr.FieldError {
	if p == nil || len(p.checks) == 0 {
		return nil
	}
	var out []apperr.FieldError
	out = p.checkInputs(out, p.generalChecks, &in)
	return p.checkInputs(out, p.checksByTool[in.Action.Tool], &in)
}

func (p *Pack) checkInputs(out []apperr.FieldError, idx []int, in *Input) []apperr.FieldError {
	for _, i := range idx {
		c := &p.checks[i]
		for j := range c.inputs {
			ci := &c.inputs[j]
			from := in.Context
			if ci.args {
				from = in.Action.Arguments
			}
			v, present := from[ci.key]
			if fe := ci.check(v, present); fe != nil && !slices.Contains(out, *fe) {
				out = append(out, *fe)
			}
		}
	}
	return out
}

// InputError is the 400 for a request that violates declared inputs:
// the first violation is the message (KLA's shape), all are details.
func InputError(violations []apperr.FieldError) *apperr.Error {
	return apperr.Validation(violations[0].Message, violations...)
}

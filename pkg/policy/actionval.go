package policy

import (
	"reflect"
	"slices"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/common/types/traits"
)

// actionVal is the `action` variable as a CEL map that reads the
// Action's fields on demand. Nearly every rule reads action.tool, so
// building the eleven-entry map for each decision was most of the
// engine's allocations; a field read here costs one small value instead.
// Whatever needs the whole map (iteration, size, equality, `in`, native
// conversion) gets the map, built once.
type actionVal struct {
	a    *Action
	host string
	full traits.Mapper
	// vals caches each field's CEL value, so that a hundred rules reading
	// action.tool box it once.
	vals [11]ref.Val
}

// actionKeys are the keys of the action map.
var actionKeys = append(slices.Clone(actionFields), "arguments", "metadata")

// field returns the attribute named k, as the map would hold it, and its
// slot in vals.
func (v *actionVal) field(k string) (any, int) {
	a := v.a
	switch k {
	case "kind":
		return a.Kind, 0
	case "tool":
		return a.Tool, 1
	case "target":
		return a.Target, 2
	case "host":
		return v.host, 3
	case "publisher":
		return a.Publisher, 4
	case "operation":
		return a.Operation, 5
	case "toolType":
		return a.ToolType, 6
	case "targetSystem":
		return a.TargetSystem, 7
	case "initiatorType":
		return a.InitiatorType, 8
	case "arguments":
		return orEmpty(a.Arguments), 9
	case "metadata":
		return orEmpty(a.Metadata), 10
	}
	return nil, -1
}

func (v *actionVal) mapper() traits.Mapper {
	if v.full == nil {
		m := make(map[string]any, len(actionKeys))
		for _, k := range actionKeys {
			m[k], _ = v.field(k)
		}
		v.full = types.NewStringInterfaceMap(types.DefaultTypeAdapter, m)
	}
	return v.full
}

// Find is the fast path of `action.x` and `action["x"]`.
func (v *actionVal) Find(key ref.Val) (ref.Val, bool) {
	if s, ok := key.(types.String); ok {
		x, i := v.field(string(s))
		if i < 0 {
			return nil, false
		}
		if v.vals[i] == nil {
			v.vals[i] = types.DefaultTypeAdapter.NativeToValue(x)
		}
		return v.vals[i], true
	}
	return v.mapper().Find(key)
}

func (v *actionVal) Get(key ref.Val) ref.Val {
	if val, found := v.Find(key); found {
		return val
	}
	return v.mapper().Get(key)
}

func (v *actionVal) Contains(key ref.Val) ref.Val { return v.mapper().Contains(key) }
func (v *actionVal) Iterator() traits.Iterator    { return v.mapper().Iterator() }
func (v *actionVal) Size() ref.Val                { return v.mapper().Size() }
func (v *actionVal) Equal(o ref.Val) ref.Val      { return v.mapper().Equal(o) }
func (v *actionVal) Type() ref.Type               { return types.MapType }
func (v *actionVal) Value() any                   { return v.mapper().Value() }

func (v *actionVal) ConvertToNative(t reflect.Type) (any, error) {
	return v.mapper().ConvertToNative(t)
}

func (v *actionVal) ConvertToType(t ref.Type) ref.Val { return v.mapper().ConvertToType(t) }

package agent

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/policy"
)

// Declaration lists the tools and destinations an agent is expected to
// use; anything else draws a warning (UNDECLARED_TOOL,
// UNDECLARED_DESTINATION).
type Declaration struct {
	Tools        []string `json:"tools"`
	Destinations []string `json:"destinations"`
	// Sources say what reading from a declared tool or destination
	// brings into a session: tool or destination → data-flow source
	// labels (untrusted_content, pii, …). A policy's label rule with
	// `source: <label>` marks the session of an action that uses one
	// (docs/policies.md, "Data-flow labels").
	Sources    map[string][]string `json:"sources,omitempty"`
	DeclaredAt time.Time           `json:"declaredAt"`
}

// Narrows reports whether declaring next in place of d takes nothing
// new into scope: d is nil (no declaration: everything is in scope), or
// next's tools and destinations are among d's, and every source d
// declares is kept: dropping a source (or the tool or destination that
// carries it) would let an agent stop its reads from labelling its
// session.
func (d *Declaration) Narrows(next Declaration) bool {
	if d == nil {
		return true
	}
	for k, labels := range d.Sources {
		for _, l := range labels {
			if !slices.Contains(next.Sources[k], l) {
				return false
			}
		}
	}
	for _, t := range next.Tools {
		if !slices.Contains(d.Tools, t) {
			return false
		}
	}
	for _, h := range next.Destinations {
		if !slices.Contains(d.Destinations, h) {
			return false
		}
	}
	return true
}

// Settings are per-agent switches (Kaizen's field names).
type Settings struct {
	Paused       bool `json:"paused"`
	JudgeEnabled bool `json:"judge_enabled"`
}

// More op names for agent changes.
const (
	OpDeclared        = "declared"
	OpSettingsChanged = "settings_changed"
)

// DeclarationFields are the fields of a manifest body.
var DeclarationFields = []string{"tools", "destinations", "sources"}

// SettingsFields are the fields of a settings body.
var SettingsFields = []string{"paused", "judge_enabled", "judgeEnabled"}

// ParseDeclaration validates a POST /v1/agents/{agent}/manifest body.
func ParseDeclaration(body []byte, now time.Time) (Declaration, error) {
	fields, err := objectFields(body)
	if err != nil {
		return Declaration{}, err
	}
	d := Declaration{Tools: []string{}, Destinations: []string{}, DeclaredAt: now}
	var errs []apperr.FieldError
	for name, raw := range fields {
		var dst *[]string
		switch name {
		case "tools":
			dst = &d.Tools
		case "destinations":
			dst = &d.Destinations
		case "sources":
			if !isNull(raw) {
				d.Sources, errs = parseSources(raw, errs)
			}
			continue
		default:
			errs = append(errs, fe(name, "unknown_field", "unknown field %q (want tools, destinations, sources)", name))
			continue
		}
		if isNull(raw) {
			continue
		}
		var l []string
		if json.Unmarshal(raw, &l) != nil {
			errs = append(errs, fe(name, event.CodeInvalidType, "%s must be an array of strings", name))
			continue
		}
		if len(l) > 1000 {
			errs = append(errs, fe(name, event.CodeTooLong, "%s must have at most 1000 items", name))
			continue
		}
		for i, s := range l {
			if s == "" || len(s) > 256 {
				errs = append(errs, fe(fmt.Sprintf("%s[%d]", name, i), event.CodeInvalid, "must be 1-256 bytes"))
			}
		}
		*dst = l
	}
	for _, k := range slices.Sorted(maps.Keys(d.Sources)) {
		if !slices.Contains(d.Tools, k) && !slices.Contains(d.Destinations, k) {
			errs = append(errs, fe("sources."+k, event.CodeInvalid, "%q is neither a declared tool nor a declared destination", k))
		}
	}
	if len(errs) > 0 {
		sortErrs(errs)
		return Declaration{}, apperr.Validation("manifest failed validation", errs...)
	}
	return d, nil
}

// parseSources reads the manifest's sources: an object from a tool or
// destination to its source labels (a string or an array of them).
func parseSources(raw json.RawMessage, errs []apperr.FieldError) (map[string][]string, []apperr.FieldError) {
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return nil, append(errs, fe("sources", event.CodeInvalidType, "sources must be an object: tool or destination → source labels"))
	}
	if len(m) > 1000 {
		return nil, append(errs, fe("sources", event.CodeTooLong, "sources must have at most 1000 entries"))
	}
	out := make(map[string][]string, len(m))
	for k, v := range m {
		var labels []string
		var one string
		switch {
		case json.Unmarshal(v, &one) == nil:
			labels = []string{one}
		case json.Unmarshal(v, &labels) == nil && len(labels) > 0 && len(labels) <= 32:
		default:
			errs = append(errs, fe("sources."+k, event.CodeInvalidType, "a source is a label or an array of 1-32 labels"))
			continue
		}
		for i, l := range labels {
			if !policy.ValidLabel(l) {
				errs = append(errs, fe(fmt.Sprintf("sources.%s[%d]", k, i), event.CodeInvalid, "label %q must be lower case letters, digits and _.:- (at most 64), starting with a letter", l))
			}
		}
		out[k] = labels
	}
	return out, errs
}

// ApplySettings applies a POST /v1/agents/{agent}/settings body: fields
// present replace, absent ones keep their value.
func ApplySettings(cur Settings, body []byte) (Settings, error) {
	fields, err := objectFields(body)
	if err != nil {
		return Settings{}, err
	}
	var errs []apperr.FieldError
	for name, raw := range fields {
		var dst *bool
		switch name {
		case "paused":
			dst = &cur.Paused
		case "judge_enabled", "judgeEnabled":
			dst = &cur.JudgeEnabled
		default:
			errs = append(errs, fe(name, "unknown_field", "unknown field %q (want paused, judge_enabled)", name))
			continue
		}
		if json.Unmarshal(raw, dst) != nil {
			errs = append(errs, fe(name, event.CodeInvalidType, "%s must be a boolean", name))
		}
	}
	if len(errs) > 0 {
		sortErrs(errs)
		return Settings{}, apperr.Validation("settings failed validation", errs...)
	}
	return cur, nil
}

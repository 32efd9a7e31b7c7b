package agent

import (
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
)

// Declaration lists the tools and destinations an agent is expected to
// use; anything else draws a warning (UNDECLARED_TOOL,
// UNDECLARED_DESTINATION).
type Declaration struct {
	Tools        []string  `json:"tools"`
	Destinations []string  `json:"destinations"`
	DeclaredAt   time.Time `json:"declaredAt"`
}

// Narrows reports whether declaring next in place of d takes nothing
// new into scope: d is nil (no declaration: everything is in scope), or
// next's tools and destinations are among d's.
func (d *Declaration) Narrows(next Declaration) bool {
	if d == nil {
		return true
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
var DeclarationFields = []string{"tools", "destinations"}

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
		default:
			errs = append(errs, fe(name, "unknown_field", "unknown field %q (want tools, destinations)", name))
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
	if len(errs) > 0 {
		sortErrs(errs)
		return Declaration{}, apperr.Validation("manifest failed validation", errs...)
	}
	return d, nil
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

package redact

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Limits on tenant patterns. Patterns are RE2 (linear time), and these
// caps bound their memory and per-string cost, since they run on every
// event of the tenant.
const (
	MaxPatterns     = 32
	MaxPatternBytes = 512
	// MaxPatternInsts caps the compiled program size; a{1000}{1000}-style
	// blow-ups are rejected before they reach the hot path.
	MaxPatternInsts = 4000
)

// Pattern is a tenant-defined detector: values matching Regex are
// replaced by "[NAME:hash]".
type Pattern struct {
	Name  string `json:"name"`
	Regex string `json:"regex"`
}

// Settings are a tenant's redaction settings.
type Settings struct {
	// Disabled lists built-in classes the tenant turned off, lower case
	// (email, phone, card, iban, national_id, secret).
	Disabled []string  `json:"disabledClasses"`
	Patterns []Pattern `json:"patterns"`
}

// Record is the tenant's settings as stored on CONTROL.
type Record struct {
	Tenant    string    `json:"tenant"`
	Settings  Settings  `json:"settings"`
	UpdatedAt time.Time `json:"updatedAt"`
	By        string    `json:"by,omitempty"`
	// Revision is the CONTROL sequence of this state.
	Revision uint64 `json:"revision"`
}

var patternName = regexp.MustCompile(`^[a-z][a-z0-9_]{0,31}$`)

func builtinName(c Class) string { return strings.ToLower(string(c)) }

// Validate reports every problem with s as a validation error whose
// details point at the offending field.
func (s Settings) Validate() error {
	var errs []apperr.FieldError
	add := func(path, code, format string, args ...any) {
		errs = append(errs, apperr.FieldError{Path: path, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	for i, c := range s.Disabled {
		if !slices.ContainsFunc(Classes, func(k Class) bool { return builtinName(k) == c }) {
			add(fmt.Sprintf("disabledClasses[%d]", i), "invalid_format", "unknown class %q (want email, phone, card, iban, national_id or secret)", c)
		}
	}
	if len(s.Patterns) > MaxPatterns {
		add("patterns", "too_long", "at most %d patterns", MaxPatterns)
	}
	names := map[string]bool{}
	for i, p := range s.Patterns {
		path := fmt.Sprintf("patterns[%d]", i)
		switch {
		case !patternName.MatchString(p.Name):
			add(path+".name", "invalid_format", "name must be 1-32 lower-case letters, digits or _ starting with a letter")
		case slices.ContainsFunc(Classes, func(k Class) bool { return builtinName(k) == p.Name }):
			add(path+".name", "invalid_format", "name %q is a built-in class", p.Name)
		case names[p.Name]:
			add(path+".name", "duplicate", "name %q is used twice", p.Name)
		}
		names[p.Name] = true
		if err := checkRegex(p.Regex); err != nil {
			add(path+".regex", "invalid_format", "%s", err.Error())
		}
	}
	if len(errs) > 0 {
		return apperr.Validation("redaction settings failed validation", errs...)
	}
	return nil
}

func checkRegex(expr string) error {
	switch {
	case expr == "":
		return fmt.Errorf("regex is required")
	case len(expr) > MaxPatternBytes:
		return fmt.Errorf("regex must be at most %d bytes", MaxPatternBytes)
	}
	re, err := syntax.Parse(expr, syntax.Perl)
	if err != nil {
		return fmt.Errorf("regex is not valid RE2: %v", err)
	}
	prog, err := syntax.Compile(re.Simplify())
	if err != nil {
		return fmt.Errorf("regex is not valid RE2: %v", err)
	}
	if len(prog.Inst) > MaxPatternInsts {
		return fmt.Errorf("regex is too complex (%d instructions, at most %d)", len(prog.Inst), MaxPatternInsts)
	}
	c, err := regexp.Compile(expr)
	if err != nil {
		return fmt.Errorf("regex is not valid RE2: %v", err)
	}
	if c.MatchString("") {
		return fmt.Errorf("regex must not match the empty string")
	}
	return nil
}

// ParseSettings decodes and validates a POST /v1/settings/redaction body.
// Unknown fields are rejected so that a typo does not silently leave a
// class on.
func ParseSettings(body []byte) (Settings, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var s Settings
	if err := dec.Decode(&s); err != nil {
		return Settings{}, apperr.Validation("body must be {\"disabledClasses\": [...], \"patterns\": [{\"name\", \"regex\"}]}",
			apperr.FieldError{Path: "", Code: "invalid_type", Message: err.Error()})
	}
	if dec.More() {
		return Settings{}, apperr.Validation("body must be one JSON object", apperr.FieldError{Path: "", Code: "invalid_type", Message: "trailing data"})
	}
	if s.Disabled == nil {
		s.Disabled = []string{}
	}
	if s.Patterns == nil {
		s.Patterns = []Pattern{}
	}
	return s, s.Validate()
}

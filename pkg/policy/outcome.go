// Package policy is Vigil's policy language and engine: YAML documents
// whose rules are CEL conditions, compiled once into a signed pack and
// evaluated many times. Outcomes are ordered allow < warn <
// require_approval < block; the strictest matching rule wins and every
// decision lists the reason codes of the rules that produced it.
package policy

import "fmt"

// Outcome is a decision outcome. The zero value is Allow.
type Outcome int

// Outcomes in precedence order: a larger value is stricter.
const (
	Allow Outcome = iota
	Warn
	RequireApproval
	Block
)

var outcomeNames = [...]string{"allow", "warn", "require_approval", "block"}

func (o Outcome) String() string {
	if o < Allow || o > Block {
		return fmt.Sprintf("outcome(%d)", int(o))
	}
	return outcomeNames[o]
}

// ParseOutcome accepts Vigil/KLA names and the Kaplaix and Kaizen
// synonyms (allowed, requires_review, denied, deny, review).
func ParseOutcome(s string) (Outcome, error) {
	switch s {
	case "allow", "allowed":
		return Allow, nil
	case "warn", "warning":
		return Warn, nil
	case "require_approval", "requires_review", "review", "requires_approval":
		return RequireApproval, nil
	case "block", "blocked", "deny", "denied":
		return Block, nil
	}
	return 0, fmt.Errorf("unknown outcome %q (want allow, warn, require_approval or block)", s)
}

// MarshalText encodes an outcome as its name.
func (o Outcome) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

// UnmarshalText decodes an outcome name or synonym.
func (o *Outcome) UnmarshalText(b []byte) error {
	v, err := ParseOutcome(string(b))
	if err != nil {
		return err
	}
	*o = v
	return nil
}

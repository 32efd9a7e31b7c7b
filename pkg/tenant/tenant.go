// Package tenant validates tenant identifiers. A tenant id is used verbatim
// as a NATS subject token and a ClickHouse predicate value, so its alphabet
// is deliberately narrow.
package tenant

import "regexp"

// Default is the tenant created by `vigil dev` on first start.
const Default = "default"

var pattern = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// Valid reports whether id is a well-formed tenant id.
func Valid(id string) bool { return pattern.MatchString(id) }

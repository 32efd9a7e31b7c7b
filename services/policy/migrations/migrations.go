// Package migrations embeds the ClickHouse schema owned by the policy
// service: the decisions projection.
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

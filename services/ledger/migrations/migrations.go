// Package migrations embeds the ClickHouse schema owned by the ledger
// service: leaves, lookups, tiles and checkpoints of every tenant's log.
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

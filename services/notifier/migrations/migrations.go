// Package migrations embeds the ClickHouse schema owned by the notifier:
// the deliveries projection (one row per delivery attempt).
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

// Package migrations embeds the ClickHouse schema owned by ingest: the
// events table and the sessions aggregate derived from it.
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

// Package migrations embeds the ClickHouse schema owned by the api
// service: projections of the CONTROL stream.
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

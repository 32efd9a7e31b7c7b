// Package migrations embeds the ClickHouse schema owned by the risk
// service: anomalies, session scores, reviews and the metrics views.
package migrations

import "embed"

// FS holds the numbered migration files, one statement each.
//
//go:embed *.sql
var FS embed.FS

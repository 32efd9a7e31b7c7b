package chx

import "github.com/ClickHouse/clickhouse-go/v2/lib/driver"

// PresizeRows is presizeStrings for rows of one message.
func PresizeRows(b driver.Batch, rows Rows) { presizeStrings(b, []entry{{rows: rows}}, len(rows)) }

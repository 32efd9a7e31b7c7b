// Package readmodel declares Vigil's ClickHouse tables in one place: for
// each, the service that owns it (its only writer and the only one that
// migrates it), its columns, and the services that read it. Migration
// order follows from it (an owner migrates before the services whose
// migrations read its tables), and tests hold the code to it: every
// table a service queries or builds a view on must be declared with that
// service as a reader, and the declared columns are the migrated ones.
package readmodel

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Services that own tables, as named by their components.
const (
	Ingest   = "ingest"
	API      = "api"
	Policy   = "policy"
	Risk     = "risk"
	Ledger   = "ledger"
	Notifier = "notifier"
	// CLI is the vigil command's own queries (`vigil policy` reads
	// recorded decisions).
	CLI = "vigil"
)

// Table is one ClickHouse table (or materialized view) of a read model.
type Table struct {
	Name  string
	Owner string
	// Columns are the table's columns in the order its migrations create
	// them.
	Columns []string
	// Writers are the services other than the owner that insert rows
	// into it (never migrate it): risk lists each anomaly among policy's
	// decisions, as the verdict the ledger seals with them.
	Writers []string
	// Readers are the other services (or the CLI) that query it.
	Readers []string
	// ViewedBy are the services whose migrations create materialized
	// views selecting from it: they migrate after the owner.
	ViewedBy []string
}

// The tables, grouped by owner. Writers and readers name a table through
// these variables, so its name and column list are written once, here.
var (
	Events = Table{Name: "events", Owner: Ingest, Readers: []string{API, Ledger, CLI}, Columns: []string{
		"tenant_id", "event_id", "agent_id", "session_id", "category", "schema_version", "source_time", "source_ms",
		"received_ms", "previous_hash", "tool_name", "response_status", "payload", "sdk", "framework", "agent_version",
		"key_id", "stream_seq", "redactions"}}
	SessionsAgg = Table{Name: "sessions_agg", Owner: Ingest, Readers: []string{API}, Columns: []string{
		"tenant_id", "session_id", "agent_id", "first_ms", "last_ms", "event_ids"}}
	SessionsMV = Table{Name: "sessions_mv", Owner: Ingest, Columns: []string{
		"tenant_id", "session_id", "agent_id", "first_ms", "last_ms", "event_ids"}}
	Agents = Table{Name: "agents", Owner: API, Columns: []string{
		"tenant_id", "agent_id", "name", "description", "model", "tools", "framework", "version", "owner", "environment",
		"status", "source", "manifest_hash", "registered_ms", "updated_ms", "revision", "doc"}}
	AuditLog = Table{Name: "audit_log", Owner: API, Columns: []string{
		"tenant_id", "at_ms", "stream", "seq", "subject", "entity_type", "entity_id", "action", "actor", "after"}}
	Decisions = Table{Name: "decisions", Owner: Policy, Readers: []string{API, Ledger, CLI}, Writers: []string{Risk}, ViewedBy: []string{Risk}, Columns: []string{
		"tenant_id", "decision_id", "agent_id", "session_id", "source", "event_id", "outcome", "reason_codes",
		"pack_hash", "action_kind", "tool", "target", "publisher", "signature", "at_time", "at_ms", "record", "observed_source"}}
	RiskAnomalies = Table{Name: "risk_anomalies", Owner: Risk, Columns: []string{
		"tenant_id", "anomaly_id", "agent_id", "session_id", "type", "value", "severity", "signature", "decision_id",
		"at_time", "at_ms", "record"}}
	RiskSessionScores = Table{Name: "risk_session_scores", Owner: Risk, Readers: []string{API}, Columns: []string{
		"tenant_id", "session_id", "agent_id", "score", "severity", "version", "score_id", "at_ms", "record"}}
	RiskReviews = Table{Name: "risk_reviews", Owner: Risk, Columns: []string{
		"tenant_id", "review_id", "decision_id", "status", "at_time", "at_ms"}}
	RiskMetrics         = Table{Name: "risk_metrics", Owner: Risk, Columns: metricColumns}
	RiskMVActionsDay    = Table{Name: "risk_mv_actions_day", Owner: Risk, Columns: metricColumns}
	RiskMVActionsHour   = Table{Name: "risk_mv_actions_hour", Owner: Risk, Columns: metricColumns}
	RiskMVAnomaliesDay  = Table{Name: "risk_mv_anomalies_day", Owner: Risk, Columns: metricColumns}
	RiskMVAnomaliesHour = Table{Name: "risk_mv_anomalies_hour", Owner: Risk, Columns: metricColumns}
	RiskMVReviewsDay    = Table{Name: "risk_mv_reviews_day", Owner: Risk, Columns: metricColumns}
	RiskMVReviewsHour   = Table{Name: "risk_mv_reviews_hour", Owner: Risk, Columns: metricColumns}
	LedgerLeaves        = Table{Name: "ledger_leaves", Owner: Ledger, Readers: []string{CLI}, Columns: []string{
		"tenant_id", "idx", "record_key", "kind", "record_id", "session_id", "leaf_hash", "canonical", "stream",
		"stream_seq", "integrated_ms", "version"}}
	LedgerLookup      = Table{Name: "ledger_lookup", Owner: Ledger, Columns: []string{"tenant_id", "lookup_key", "idx", "version"}}
	LedgerTiles       = Table{Name: "ledger_tiles", Owner: Ledger, Columns: []string{"tenant_id", "level", "idx", "hashes", "version"}}
	LedgerCheckpoints = Table{Name: "ledger_checkpoints", Owner: Ledger, Columns: []string{
		"tenant_id", "tree_size", "root_hash", "note", "range_hashes", "at_ms", "version"}}
	Deliveries = Table{Name: "deliveries", Owner: Notifier, Columns: []string{
		"tenant_id", "channel_id", "delivery_id", "attempt_id", "attempt", "replay", "channel_type", "signal_id",
		"signal_type", "webhook_id", "status", "outcome", "status_code", "latency_ms", "error", "next_attempt_ms",
		"at_time", "at_ms"}}
)

// metricColumns are risk_metrics' columns, which the views feeding it
// share.
var metricColumns = []string{"tenant_id", "grain", "bucket", "metric", "ids"}

// Tables is every declared table, grouped by owner.
var Tables = []Table{
	Events, SessionsAgg, SessionsMV,
	Agents, AuditLog,
	Decisions,
	RiskAnomalies, RiskSessionScores, RiskReviews, RiskMetrics,
	RiskMVActionsDay, RiskMVActionsHour, RiskMVAnomaliesDay, RiskMVAnomaliesHour, RiskMVReviewsDay, RiskMVReviewsHour,
	LedgerLeaves, LedgerLookup, LedgerTiles, LedgerCheckpoints,
	Deliveries,
}

// Insert is the statement a writer prepares its batches with: every
// declared column, in order (clickhouse-go against 18.16 needs the
// explicit list). Rows follow Columns.
func (t Table) Insert() string {
	return "INSERT INTO " + t.Name + " (" + strings.Join(t.Columns, ", ") + ")"
}

// WrittenBy reports whether service may insert into t: its owner or one
// of its declared Writers.
func (t Table) WrittenBy(service string) bool {
	return t.Owner == service || slices.Contains(t.Writers, service)
}

// CheckRow reports a row that does not hold one value per declared
// column: a writer whose projection drifted from the declaration.
func (t Table) CheckRow(row []any) error {
	if len(row) != len(t.Columns) {
		return fmt.Errorf("readmodel: a row of %s has %d values, the table declares %d columns (%v)", t.Name, len(row), len(t.Columns), t.Columns)
	}
	return nil
}

// Lookup returns the declared table called name.
func Lookup(name string) (Table, bool) {
	i := slices.IndexFunc(Tables, func(t Table) bool { return t.Name == name })
	if i < 0 {
		return Table{}, false
	}
	return Tables[i], true
}

// ViewDependencies are the tables of other owners that service's
// migrations build views on: they must exist before it migrates.
func ViewDependencies(service string) []Table {
	var out []Table
	for _, t := range Tables {
		if t.Owner != service && slices.Contains(t.ViewedBy, service) {
			out = append(out, t)
		}
	}
	return out
}

// MigrationOrder orders services so that every owner migrates before the
// services whose migrations read its tables, keeping the given order
// otherwise. Services that own no table keep their place among the rest.
func MigrationOrder(services []string) []string {
	out := make([]string, 0, len(services))
	done := map[string]bool{}
	var visit func(s string, path []string)
	visit = func(s string, path []string) {
		if done[s] || slices.Contains(path, s) {
			return // a cycle cannot be declared without a test failing (see TestNoCycles)
		}
		for _, t := range ViewDependencies(s) {
			if slices.Contains(services, t.Owner) {
				visit(t.Owner, append(path, s))
			}
		}
		done[s] = true
		out = append(out, s)
	}
	for _, s := range services {
		visit(s, nil)
	}
	return out
}

// AwaitViewDependencies waits, polling with backoff up to 5 s, until the
// tables service's migrations read exist: in a deployment of separate
// processes their owners migrate them, perhaps later than service starts.
func AwaitViewDependencies(ctx context.Context, ch driver.Conn, service string, log *slog.Logger) error {
	delay := 100 * time.Millisecond
	for _, t := range ViewDependencies(service) {
		for {
			var n uint64
			err := ch.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", t.Name).Scan(&n)
			if err != nil {
				return fmt.Errorf("readmodel: look for %s: %w", t.Name, err)
			}
			if n > 0 {
				break
			}
			log.Info("waiting for a table another service migrates", slog.String("table", t.Name), slog.String("owner", t.Owner))
			select {
			case <-ctx.Done():
				return fmt.Errorf("readmodel: table %s (migrated by %s): %w", t.Name, t.Owner, ctx.Err())
			case <-time.After(delay):
				delay = min(2*delay, 5*time.Second)
			}
		}
	}
	return nil
}

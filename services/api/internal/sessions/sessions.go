// Package sessions answers session queries from the ClickHouse projections
// written by ingest (events, sessions_agg). Every query carries a tenant
// predicate, a row limit and (through its context) a time limit.
package sessions

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Session summarises one session.
type Session struct {
	SessionID    string `json:"sessionId"`
	AgentID      string `json:"agentId"`
	FirstEventAt string `json:"firstEventAt"`
	LastEventAt  string `json:"lastEventAt"`
	DurationMS   int64  `json:"durationMs"`
	EventCount   uint64 `json:"eventCount"`

	lastMS int64
}

// Event is a stored event as the API returns it.
type Event struct {
	EventID         string          `json:"eventId"`
	AgentID         string          `json:"agentId"`
	SessionID       string          `json:"sessionId"`
	SourceTimestamp string          `json:"sourceTimestamp"`
	Category        string          `json:"category"`
	SchemaVersion   string          `json:"schemaVersion"`
	Payload         json.RawMessage `json:"payload"`
	PreviousHash    *string         `json:"previousHash"`
	ReceivedAt      string          `json:"receivedAt"`
	SDK             string          `json:"sdk,omitempty"`
	Framework       string          `json:"framework,omitempty"`
	AgentVersion    string          `json:"agentVersion,omitempty"`

	sourceMS int64
}

// Filter narrows a session list.
type Filter struct {
	AgentID string
	// FromMS and ToMS select sessions active in [from, to]; 0 is open.
	FromMS, ToMS int64
	// Search matches a substring of the session or agent id.
	Search string
}

// SessionCursor is the position after the last session of a page.
type SessionCursor struct {
	LastMS    int64  `json:"l"`
	SessionID string `json:"s"`
}

// EventCursor is the position after the last event of a page.
type EventCursor struct {
	SourceMS int64  `json:"t"`
	EventID  string `json:"e"`
}

// Store queries sessions.
type Store struct{ conn driver.Conn }

// NewStore returns a store on conn.
func NewStore(conn driver.Conn) *Store { return &Store{conn: conn} }

// Timestamp formats Unix milliseconds as RFC 3339 in UTC.
func Timestamp(ms int64) string {
	return time.UnixMilli(ms).UTC().Format("2006-01-02T15:04:05.000Z07:00")
}

const sessionSelect = `SELECT session_id, anyMerge(agent_id) AS agent, minMerge(first_ms) AS first, maxMerge(last_ms) AS last, uniqExactMerge(event_ids) AS n
FROM sessions_agg WHERE tenant_id = ?`

// List returns up to limit sessions, most recently active first, after
// the cursor, and whether more follow.
func (s *Store) List(ctx context.Context, tenant string, f Filter, after *SessionCursor, limit int) ([]Session, bool, error) {
	var (
		q      strings.Builder
		args   = []any{tenant}
		having []string
	)
	q.WriteString(sessionSelect + " GROUP BY session_id")
	if f.AgentID != "" {
		having = append(having, "agent = ?")
		args = append(args, f.AgentID)
	}
	if f.Search != "" {
		having = append(having, "(positionCaseInsensitive(session_id, ?) > 0 OR positionCaseInsensitive(agent, ?) > 0)")
		args = append(args, f.Search, f.Search)
	}
	if f.FromMS > 0 {
		having = append(having, "last >= ?")
		args = append(args, f.FromMS)
	}
	if f.ToMS > 0 {
		having = append(having, "first <= ?")
		args = append(args, f.ToMS)
	}
	if after != nil {
		having = append(having, "(last < ? OR (last = ? AND session_id < ?))")
		args = append(args, after.LastMS, after.LastMS, after.SessionID)
	}
	if len(having) > 0 {
		q.WriteString(" HAVING " + strings.Join(having, " AND "))
	}
	fmt.Fprintf(&q, " ORDER BY last DESC, session_id DESC LIMIT %d", limit+1)

	rows, err := s.conn.Query(ctx, q.String(), args...)
	if err != nil {
		return nil, false, fmt.Errorf("query sessions: %w", err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var (
			ss          Session
			first, last int64
		)
		if err := rows.Scan(&ss.SessionID, &ss.AgentID, &first, &last, &ss.EventCount); err != nil {
			return nil, false, fmt.Errorf("scan session: %w", err)
		}
		ss.FirstEventAt, ss.LastEventAt, ss.DurationMS, ss.lastMS = Timestamp(first), Timestamp(last), last-first, last
		out = append(out, ss)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read sessions: %w", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// NextCursor is the cursor after the last session of a page.
func NextCursor(page []Session) SessionCursor {
	last := page[len(page)-1]
	return SessionCursor{LastMS: last.lastMS, SessionID: last.SessionID}
}

// Get returns one session's summary, or found=false.
func (s *Store) Get(ctx context.Context, tenant, id string) (Session, bool, error) {
	rows, err := s.conn.Query(ctx, sessionSelect+" AND session_id = ? GROUP BY session_id LIMIT 1", tenant, id)
	if err != nil {
		return Session{}, false, fmt.Errorf("query session: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		return Session{}, false, rows.Err()
	}
	var (
		ss          Session
		first, last int64
	)
	if err := rows.Scan(&ss.SessionID, &ss.AgentID, &first, &last, &ss.EventCount); err != nil {
		return Session{}, false, fmt.Errorf("scan session: %w", err)
	}
	ss.FirstEventAt, ss.LastEventAt, ss.DurationMS, ss.lastMS = Timestamp(first), Timestamp(last), last-first, last
	return ss, true, nil
}

// Events returns up to limit events of a session in source-time order,
// after the cursor, each event once however often it was delivered.
func (s *Store) Events(ctx context.Context, tenant, session string, after *EventCursor, limit int) ([]Event, bool, error) {
	q := `SELECT event_id, agent_id, session_id, source_ms, category, schema_version, payload, previous_hash,
	received_ms, sdk, framework, agent_version
FROM events WHERE tenant_id = ? AND session_id = ?`
	args := []any{tenant, session}
	if after != nil {
		q += " AND (source_ms > ? OR (source_ms = ? AND event_id > ?))"
		args = append(args, after.SourceMS, after.SourceMS, after.EventID)
	}
	q += fmt.Sprintf(" ORDER BY source_ms, event_id LIMIT 1 BY event_id LIMIT %d", limit+1)
	rows, err := s.conn.Query(ctx, q, args...)
	if err != nil {
		return nil, false, fmt.Errorf("query events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var (
			e                  Event
			payload, prev      string
			sourceMS, received int64
		)
		if err := rows.Scan(&e.EventID, &e.AgentID, &e.SessionID, &sourceMS, &e.Category, &e.SchemaVersion,
			&payload, &prev, &received, &e.SDK, &e.Framework, &e.AgentVersion); err != nil {
			return nil, false, fmt.Errorf("scan event: %w", err)
		}
		e.Payload = json.RawMessage(payload)
		if prev != "" {
			e.PreviousHash = &prev
		}
		e.SourceTimestamp, e.ReceivedAt, e.sourceMS = Timestamp(sourceMS), Timestamp(received), sourceMS
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read events: %w", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// NextEventCursor is the cursor after the last event of a page.
func NextEventCursor(page []Event) EventCursor {
	last := page[len(page)-1]
	return EventCursor{SourceMS: last.sourceMS, EventID: last.EventID}
}

package notifier

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
)

func projectAttempt(m jetstream.Msg) (chx.Rows, error) {
	var a Attempt
	if err := json.Unmarshal(m.Data(), &a); err != nil {
		return nil, fmt.Errorf("%w: decode attempt: %v", chx.ErrPoison, err)
	}
	var next int64
	if a.NextAttemptAt != nil {
		next = a.NextAttemptAt.UnixMilli()
	}
	return chx.Rows{{
		a.Tenant, a.ChannelID, a.DeliveryID, a.ID, uint32(a.Attempt), uint32(a.Replay), a.ChannelType, a.SignalID,
		a.SignalType, a.WebhookID, a.Status, a.Outcome, int32(a.StatusCode), a.LatencyMs, a.Error, next,
		a.At.Truncate(time.Second), a.At.UnixMilli(),
	}}, nil
}

// deliveryCursor is the position after the last row of a page.
type deliveryCursor struct {
	AtMs int64  `json:"t"`
	ID   string `json:"i"`
}

// queryWindow bounds every deliveries query in time.
const queryWindow = 31 * 24 * time.Hour

// attempts lists a channel's attempts, newest first.
func (s *Service) attempts(ctx context.Context, tenant, channelID, deliveryFilter, statusFilter string, cur deliveryCursor, limit int) ([]Attempt, bool, error) {
	q := `SELECT delivery_id, attempt_id, attempt, replay, channel_type, signal_id, signal_type, webhook_id, status, outcome,
	        status_code, latency_ms, error, next_attempt_ms, at_ms
	      FROM deliveries FINAL
	      WHERE tenant_id = ? AND channel_id = ? AND at_time >= ?`
	args := []any{tenant, channelID, time.Now().Add(-queryWindow).Truncate(time.Second)}
	if deliveryFilter != "" {
		q += ` AND delivery_id = ?`
		args = append(args, deliveryFilter)
	}
	if statusFilter != "" {
		q += ` AND (status = ? OR outcome = ?)`
		args = append(args, statusFilter, statusFilter)
	}
	if cur.ID != "" {
		q += ` AND (at_ms < ? OR (at_ms = ? AND attempt_id < ?))`
		args = append(args, cur.AtMs, cur.AtMs, cur.ID)
	}
	q += fmt.Sprintf(` ORDER BY at_ms DESC, attempt_id DESC LIMIT %d`, limit+1)
	qctx, cancel := chx.QueryContext(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.deps.CH.Query(qctx, q, args...)
	if err != nil {
		return nil, false, chx.ReadError("deliveries", err)
	}
	defer rows.Close()
	var out []Attempt
	for rows.Next() {
		var (
			a               Attempt
			attempt, replay uint32
			code            int32
			nextMs, atMs    int64
		)
		if err := rows.Scan(&a.DeliveryID, &a.ID, &attempt, &replay, &a.ChannelType, &a.SignalID, &a.SignalType, &a.WebhookID,
			&a.Status, &a.Outcome, &code, &a.LatencyMs, &a.Error, &nextMs, &atMs); err != nil {
			return nil, false, chx.ReadError("deliveries", err)
		}
		a.Tenant, a.ChannelID, a.Attempt, a.Replay, a.StatusCode = tenant, channelID, int(attempt), int(replay), int(code)
		a.At = time.UnixMilli(atMs).UTC()
		if nextMs > 0 {
			t := time.UnixMilli(nextMs).UTC()
			a.NextAttemptAt = &t
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, false, chx.ReadError("deliveries", err)
	}
	more := len(out) > limit
	if more {
		out = out[:limit]
	}
	return out, more, nil
}

// DeadLetter is a delivery whose latest attempt dead-lettered it.
type DeadLetter struct {
	DeliveryID string    `json:"deliveryId"`
	SignalID   string    `json:"signalId"`
	SignalType string    `json:"signalType"`
	Attempts   int       `json:"attempts"`
	LastError  string    `json:"lastError"`
	LastStatus int       `json:"lastStatusCode"`
	At         time.Time `json:"deadLetteredAt"`
}

func (s *Service) deadLetters(ctx context.Context, tenant, channelID string, limit int) ([]DeadLetter, error) {
	q := fmt.Sprintf(`SELECT delivery_id, any(signal_id), any(signal_type), toInt64(count()),
	        argMax(outcome, at_ms) AS last, argMax(error, at_ms), argMax(status_code, at_ms), max(at_ms) AS t
	      FROM deliveries FINAL
	      WHERE tenant_id = ? AND channel_id = ? AND at_time >= ?
	      GROUP BY delivery_id HAVING last = 'dead_lettered'
	      ORDER BY t DESC LIMIT %d`, limit)
	qctx, cancel := chx.QueryContext(ctx, 10*time.Second)
	defer cancel()
	rows, err := s.deps.CH.Query(qctx, q, tenant, channelID, time.Now().Add(-queryWindow).Truncate(time.Second))
	if err != nil {
		return nil, chx.ReadError("dead letters", err)
	}
	defer rows.Close()
	out := []DeadLetter{}
	for rows.Next() {
		var (
			d       DeadLetter
			n, atMs int64
			last    string
			code    int32
		)
		if err := rows.Scan(&d.DeliveryID, &d.SignalID, &d.SignalType, &n, &last, &d.LastError, &code, &atMs); err != nil {
			return nil, chx.ReadError("dead letters", err)
		}
		d.Attempts, d.LastStatus, d.At = int(n), int(code), time.UnixMilli(atMs).UTC()
		out = append(out, d)
	}
	return out, rows.Err()
}

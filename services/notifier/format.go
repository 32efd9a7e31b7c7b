package notifier

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/vigilhq/vigil/pkg/webhook"
)

// render builds the HTTP request that delivers job to ch in the channel
// type's native format. The body depends only on the signal, so every
// retry sends the same bytes (and, for webhooks, the same webhook-id).
func render(ctx context.Context, ch Channel, sec secrets, job Job, now time.Time) (*http.Request, error) {
	s := job.Signal
	var (
		body   any
		header = http.Header{}
	)
	switch ch.Type {
	case TypeWebhook:
		body = s
	case TypeSlack:
		body = slackMessage(s)
	case TypeDatadog:
		body = datadogEvent(s)
		header.Set("DD-API-KEY", sec.Credential)
	case TypeSplunk:
		body = map[string]any{
			"time": float64(s.OccurredAt.UnixMilli()) / 1000, "host": "vigil", "source": "vigil",
			"sourcetype": "vigil:signal", "event": s,
		}
		header.Set("Authorization", "Splunk "+sec.Credential)
	case TypePagerDuty:
		body = pagerDutyEvent(s, sec.Credential)
	default:
		return nil, fmt.Errorf("unknown channel type %q", ch.Type)
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode %s payload: %w", ch.Type, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, sec.URL, bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "Vigil-Notifier/1")
	if ch.Type == TypeWebhook {
		keys := []string{sec.Signing}
		if sec.Previous != "" && now.Before(sec.PreviousUntil) {
			keys = append(keys, sec.Previous)
		}
		if err := webhook.SetHeaders(req.Header, keys, job.DeliveryID, now, data); err != nil {
			return nil, err
		}
	}
	return req, nil
}

func slackMessage(s Signal) map[string]any {
	fields := []map[string]any{
		{"type": "mrkdwn", "text": "*Signal*\n`" + s.Type + "`"},
		{"type": "mrkdwn", "text": "*Severity*\n" + s.Severity},
	}
	if s.AgentID != "" {
		fields = append(fields, map[string]any{"type": "mrkdwn", "text": "*Agent*\n" + s.AgentID})
	}
	if s.SessionID != "" {
		fields = append(fields, map[string]any{"type": "mrkdwn", "text": "*Session*\n" + s.SessionID})
	}
	return map[string]any{
		"text": fmt.Sprintf("[%s] %s", s.Severity, s.Summary),
		"blocks": []map[string]any{
			{"type": "header", "text": map[string]any{"type": "plain_text", "text": truncate(s.Type+": "+s.Severity, 150)}},
			{"type": "section", "text": map[string]any{"type": "mrkdwn", "text": truncate(s.Summary, 3000)}},
			{"type": "section", "fields": fields},
			{"type": "context", "elements": []map[string]any{
				{"type": "mrkdwn", "text": "Vigil · tenant " + s.Tenant + " · " + s.OccurredAt.UTC().Format(time.RFC3339) + " · " + s.ID},
			}},
		},
	}
}

func datadogEvent(s Signal) map[string]any {
	alert := "info"
	switch {
	case s.Resolves:
		alert = "success"
	case severityRank(s.Severity) >= severityRank("high"):
		alert = "error"
	case s.Severity == "medium":
		alert = "warning"
	}
	tags := []string{"source:vigil", "signal:" + s.Type, "severity:" + s.Severity, "tenant:" + s.Tenant}
	if s.AgentID != "" {
		tags = append(tags, "agent:"+s.AgentID)
	}
	return map[string]any{
		"title": truncate("Vigil "+s.Type+": "+s.Summary, 100), "text": s.Summary,
		"alert_type": alert, "priority": "normal", "tags": tags,
		"aggregation_key": truncate(s.Group, 100), "source_type_name": "vigil",
		"date_happened": s.OccurredAt.Unix(),
	}
}

func pagerDutyEvent(s Signal, routingKey string) map[string]any {
	ev := map[string]any{"routing_key": routingKey, "dedup_key": "vigil-" + s.Group}
	if s.Resolves {
		ev["event_action"] = "resolve"
		return ev
	}
	sev := "info"
	switch s.Severity {
	case "critical":
		sev = "critical"
	case "high":
		sev = "error"
	case "medium":
		sev = "warning"
	}
	ev["event_action"] = "trigger"
	ev["payload"] = map[string]any{
		"summary": truncate(s.Summary, 1024), "source": "vigil", "severity": sev,
		"timestamp": s.OccurredAt.UTC().Format(time.RFC3339), "component": s.AgentID,
		"group": s.Tenant, "class": s.Type,
		"custom_details": map[string]any{"signalId": s.ID, "sessionId": s.SessionID, "data": s.Data},
	}
	return ev
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	r := []rune(s)
	for len(string(r)) > n-1 {
		r = r[:len(r)-1]
	}
	return string(r) + "…"
}

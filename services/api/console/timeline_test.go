package console

import (
	"slices"
	"testing"
)

// TestMergeTimeline checks the merged order (time, then event, decision,
// approval for the same instant), the links between a decision and its
// approval, and that a decided approval appears again when decided.
func TestMergeTimeline(t *testing.T) {
	events := []map[string]any{
		{"eventId": "e2", "sourceTimestamp": "2026-12-05T10:00:03Z", "category": "tool_api"},
		{"eventId": "e1", "sourceTimestamp": "2026-12-05T10:00:01Z", "category": "llm"},
	}
	decisions := []map[string]any{
		{"decisionId": "d2", "createdAt": "2026-12-05T10:00:03Z", "outcome": "allow", "action": map[string]any{"tool": "lookup"}},
		{"decisionId": "d1", "createdAt": "2026-12-05T10:00:02Z", "outcome": "require_approval", "action": map[string]any{"tool": "refund"}},
	}
	approvals := []map[string]any{
		{"id": "a1", "decisionId": "d1", "createdAt": "2026-12-05T10:00:02Z", "status": "approved", "decidedBy": "key:k", "decidedAt": "2026-12-05T10:00:04Z", "action": map[string]any{"tool": "refund"}},
		{"id": "a2", "decisionId": "d9", "createdAt": "2026-12-05T10:00:05Z", "status": "pending", "action": map[string]any{"tool": "wire"}},
	}
	got := mergeTimeline(events, decisions, approvals)
	var ids []string
	for _, e := range got {
		ids = append(ids, e.ID)
	}
	if want := []string{"e1", "d1", "a1", "e2", "d2", "a1/decided", "a2"}; !slices.Equal(ids, want) {
		t.Fatalf("order %q, want %q", ids, want)
	}
	links := map[string]string{}
	for _, e := range got {
		links[e.ID] = e.Link
	}
	for id, want := range map[string]string{"d1": "#approval-a1", "a1": "#decision-d1", "a2": "/console/desk#card-a2", "d2": "", "a1/decided": "#approval-a1"} {
		if links[id] != want {
			t.Errorf("%s links %q, want %q", id, links[id], want)
		}
	}
	if empty := mergeTimeline(nil, nil, nil); len(empty) != 0 {
		t.Fatalf("empty timeline %v", empty)
	}
}

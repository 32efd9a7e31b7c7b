package console

import (
	"fmt"
	"net/url"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// Kinds of timeline entries, in the order entries of the same instant
// are shown (what happened, what was decided about it, who approved).
const (
	kindEvent    = "event"
	kindDecision = "decision"
	kindApproval = "approval"
)

var kindOrder = map[string]int{kindEvent: 0, kindDecision: 1, kindApproval: 2}

// timelineEntry is one line of a session's merged timeline.
type timelineEntry struct {
	At   time.Time
	Kind string
	// ID is the entry's own id; Anchor its element id on the page, which
	// the other entries about the same decision link to.
	ID, Anchor string
	What       string
	Outcome    string
	// Link points at the related entry or page (a decision's approval,
	// an approval's decision, a pending approval's card on the Desk).
	Link, LinkText string
	// Details are shown when the entry is expanded.
	Details any
}

// Time is the entry's time as the page shows it (UTC, to the
// millisecond).
func (e timelineEntry) Time() string {
	if e.At.IsZero() {
		return "—"
	}
	return e.At.UTC().Format("2006-01-02 15:04:05.000")
}

// ISO is the entry's time for a <time datetime>.
func (e timelineEntry) ISO() string { return e.At.UTC().Format(time.RFC3339Nano) }

func parseTime(v any) time.Time {
	s, _ := v.(string)
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}
	}
	return t
}

func anchor(kind, id string) string { return kind + "-" + safeFileName(id) }

// mergeTimeline merges a session's events, decisions and approvals into
// one list, oldest first; entries of the same instant keep kind order
// (event, decision, approval), then id.
func mergeTimeline(events, decisions, approvals []map[string]any) []timelineEntry {
	var out []timelineEntry
	approvalOf := map[string]string{}
	for _, a := range approvals {
		approvalOf[text(a["decisionId"])] = text(a["id"])
	}
	for _, e := range events {
		id := text(e["eventId"])
		what := text(e["category"])
		out = append(out, timelineEntry{At: parseTime(e["sourceTimestamp"]), Kind: kindEvent, ID: id, Anchor: anchor(kindEvent, id),
			What: what, Details: e["payload"]})
	}
	for _, d := range decisions {
		id := text(d["decisionId"])
		act, _ := d["action"].(map[string]any)
		what := strings.TrimSpace(text(act["tool"]) + " " + text(act["target"]))
		if what == "" {
			what = text(act["kind"])
		}
		en := timelineEntry{At: parseTime(d["createdAt"]), Kind: kindDecision, ID: id, Anchor: anchor(kindDecision, id),
			What: what + " (" + text(d["source"]) + ")", Outcome: text(d["outcome"]) + " " + text(d["reasonCodes"]),
			Details: map[string]any{"decisionId": id, "reasonCodes": d["reasonCodes"], "matched": d["evidence"], "action": act, "packHash": d["packHash"], "status": d["status"]}}
		if a, ok := approvalOf[id]; ok {
			en.Link, en.LinkText = "#"+anchor(kindApproval, a), "approval "+a
		}
		out = append(out, en)
	}
	for _, a := range approvals {
		id := text(a["id"])
		act, _ := a["action"].(map[string]any)
		status := text(a["status"])
		outcome := status
		if by := text(a["decidedBy"]); by != "" {
			outcome += " by " + by
		}
		en := timelineEntry{At: parseTime(a["createdAt"]), Kind: kindApproval, ID: id, Anchor: anchor(kindApproval, id),
			What: strings.TrimSpace("approval of " + text(act["tool"])), Outcome: outcome,
			Details: map[string]any{"id": id, "decisionId": a["decisionId"], "status": status, "decidedBy": a["decidedBy"], "decidedAt": a["decidedAt"],
				"comment": a["comment"], "approvals": a["approvals"], "required": a["required"], "expiresAt": a["expiresAt"], "reasonCodes": a["reasonCodes"]}}
		switch {
		case status == "pending":
			en.Link, en.LinkText = "/console/desk#card-"+url.PathEscape(id), "on the Desk"
		case text(a["decisionId"]) != "":
			en.Link, en.LinkText = "#"+anchor(kindDecision, text(a["decisionId"])), "decision "+text(a["decisionId"])
		}
		out = append(out, en)
		if t := parseTime(a["decidedAt"]); !t.IsZero() {
			// The decision on the approval is a moment of its own.
			out = append(out, timelineEntry{At: t, Kind: kindApproval, ID: id + "/decided", Anchor: anchor(kindApproval, id+"-decided"),
				What: "approval " + status + fmt.Sprintf(" (%s)", text(act["tool"])), Outcome: outcome,
				Link: "#" + anchor(kindApproval, id), LinkText: "approval " + id, Details: map[string]any{"comment": a["comment"], "decidedBy": a["decidedBy"]}})
		}
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.At.Equal(b.At) {
			return a.At.Before(b.At)
		}
		if kindOrder[a.Kind] != kindOrder[b.Kind] {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		return a.ID < b.ID
	})
	return out
}

// sessionDecisions reads the session's decisions (newest 100) through the
// verdicts list.
func (c *Console) sessionDecisions(ec echo.Context, id string) ([]map[string]any, apiResult) {
	q := url.Values{"session": {id}, "limit": {"100"}}
	return c.list(ec, "/v1/verdicts?"+q.Encode())
}

package console

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/approval"
)

// card is a pending action as the Desk shows it.
type card struct {
	approval.Action
	Label   string
	Risk    string
	Urgency int
	CSRF    string
}

// priorityRank orders priorities, most urgent first.
var priorityRank = map[string]int{"critical": 4, "urgent": 3, "high": 2, "normal": 1, "low": 0}

// sortCards puts the most urgent priority first and, within one, the
// newest request first (the board's own order).
func sortCards(cs []card) {
	slices.SortStableFunc(cs, func(a, b card) int {
		if d := priorityRank[b.Priority] - priorityRank[a.Priority]; d != 0 {
			return d
		}
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(b.ID, a.ID)
	})
}

func label(a approval.Action) string {
	var parts []string
	for _, p := range []string{a.Action.Tool, a.Action.Operation, a.Action.Kind} {
		if p != "" {
			parts = append(parts, p)
			break
		}
	}
	if a.Action.Target != "" {
		parts = append(parts, "→ "+a.Action.Target)
	} else if a.Action.TargetSystem != "" {
		parts = append(parts, "→ "+a.Action.TargetSystem)
	}
	if len(parts) == 0 {
		return a.ID
	}
	return strings.Join(parts, " ")
}

// pendingCards reads the caller's pending actions through the API (so
// approvals:read is checked there) with each agent's risk.
func (c *Console) pendingCards(ec echo.Context) ([]card, apiResult) {
	r := c.call(ec, http.MethodGet, "/v1/guardian/pending-actions?status=pending&limit=100", nil)
	if !r.OK() {
		return nil, r
	}
	var page struct {
		Data []approval.Action `json:"data"`
	}
	if err := r.Decode(&page); err != nil {
		return nil, apiResult{Status: http.StatusBadGateway, Body: []byte(`{"error":{"message":"console: unreadable pending actions"}}`)}
	}
	risk := c.agentRisk(ec, page.Data)
	cs := make([]card, 0, len(page.Data))
	for _, a := range page.Data {
		cs = append(cs, card{Action: a, Label: label(a), Risk: risk[a.AgentID+"\x00"+a.SessionID], Urgency: priorityRank[a.Priority], CSRF: current(ec).csrf})
	}
	sortCards(cs)
	return cs, r
}

// agentRisk describes, per agent and session, the session's risk score
// and the agent's observation depth, each as far as the caller's role
// may read it (risk:read).
func (c *Console) agentRisk(ec echo.Context, as []approval.Action) map[string]string {
	out := map[string]string{}
	profiles := map[string]string{}
	for _, a := range as {
		k := a.AgentID + "\x00" + a.SessionID
		if _, done := out[k]; done {
			continue
		}
		var parts []string
		if a.SessionID != "" {
			r := c.call(ec, http.MethodGet, "/v1/sessions/"+url.PathEscape(a.SessionID)+"/risk", nil)
			var s struct {
				Score    float64 `json:"score"`
				Severity string  `json:"severity"`
				Summary  string  `json:"summary"`
			}
			if r.OK() && r.Decode(&s) == nil {
				parts = append(parts, fmt.Sprintf("session %s (%g/100): %s", s.Severity, s.Score, s.Summary))
			}
		}
		p, ok := profiles[a.AgentID]
		if !ok {
			items, r := c.list(ec, "/v1/agents/profiles?agentId="+url.QueryEscape(a.AgentID))
			if r.OK() && len(items) > 0 {
				it := items[0]
				p = fmt.Sprintf("baseline %s (%s observations), %s blocks, %s errors", text(it["observationDepth"]), text(it["observations"]),
					text(field(it, "activity.blocks")), text(field(it, "activity.errors")))
				if it["paused"] == true {
					p += ", paused"
				}
			}
			profiles[a.AgentID] = p
		}
		if p != "" {
			parts = append(parts, p)
		}
		if len(parts) == 0 {
			parts = append(parts, "not scored yet")
		}
		out[k] = strings.Join(parts, "; ")
	}
	return out
}

type deskView struct {
	Cards   []card
	Problem string
}

func (c *Console) home(ec echo.Context) error {
	return ec.Redirect(http.StatusSeeOther, Prefix+"/desk")
}

func (c *Console) desk(ec echo.Context) error {
	cs, r := c.pendingCards(ec)
	v := deskView{Cards: cs}
	if !r.OK() {
		if r.Status == http.StatusUnauthorized {
			return c.apiFail(ec, r)
		}
		v.Problem = r.Problem()
	}
	return c.render(ec, http.StatusOK, "desk", "Decision Desk", v)
}

// streamTTL bounds one Desk event stream.
const streamTTL = 10 * time.Minute

// deskCard is one card of a Desk event: its id and its HTML.
type deskCard struct {
	ID   string `json:"id"`
	HTML string `json:"html"`
}

// deskEvents streams the caller's pending actions as server-sent events:
// an event "cards" with every card, in order, each time the board changes
// (and once at the start). The page keeps the cards it already shows (and
// what is typed in them), adds new ones and removes decided ones.
func (c *Console) deskEvents(ec echo.Context) error {
	w := ec.Response()
	w.Header().Set(echo.HeaderContentType, "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	ctx := ec.Request().Context()
	// A stream lasts at most StreamTTL; the browser reconnects, and the
	// session is checked again.
	ctx, cancel := context.WithTimeout(ctx, streamTTL)
	defer cancel()
	heartbeat := time.NewTicker(c.cfg.Heartbeat)
	defer heartbeat.Stop()
	var last [32]byte
	first := true
	for {
		changed := c.deps.Board.Changed()
		cs, r := c.pendingCards(ec)
		if !r.OK() {
			fmt.Fprintf(w, "event: problem\ndata: %s\n\n", mustJSON(map[string]any{"status": r.Status, "message": r.Problem()}))
			w.Flush()
			return nil
		}
		out := make([]deskCard, 0, len(cs))
		for _, cd := range cs {
			var b bytes.Buffer
			if err := c.pages["desk"].ExecuteTemplate(&b, "card", cd); err != nil {
				c.log.Error("console: render a card", "id", cd.ID, "error", err)
				fmt.Fprintf(w, "event: problem\ndata: %s\n\n", mustJSON(map[string]any{"status": 500, "message": "a card could not be rendered"}))
				w.Flush()
				return nil
			}
			out = append(out, deskCard{ID: cd.ID, HTML: b.String()})
		}
		data := mustJSON(map[string]any{"cards": out})
		if sum := sha256.Sum256(data); first || sum != last {
			first, last = false, sum
			fmt.Fprintf(w, "event: cards\ndata: %s\n\n", data)
			w.Flush()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.stopping:
			return nil
		case <-heartbeat.C:
			// A sign-out on another instance, a revoked key or a changed
			// role ends the stream at the next heartbeat.
			if _, err := c.liveSession(ec); errors.Is(err, errNoSession) {
				fmt.Fprintf(w, "event: problem\ndata: %s\n\n", mustJSON(map[string]any{"status": http.StatusUnauthorized, "message": "Your session has ended: sign in again."}))
				w.Flush()
				return nil
			}
			fmt.Fprint(w, ": keep-alive\n\n")
			w.Flush()
			// Expiry is a change too, but re-reading on the heartbeat
			// also catches a revoked key.
		case <-changed:
		}
	}
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		return []byte(`{}`)
	}
	return b
}

// decide approves, rejects or reroutes through the API's decide route
// (approvals:decide, the self-approval and quorum rules are checked
// there).
func (c *Console) decide(ec echo.Context) error {
	id := ec.Param("id")
	body := map[string]any{"decision": ec.FormValue("decision"), "comment": ec.FormValue("comment")}
	if g := strings.TrimSpace(ec.FormValue("reviewerGroup")); g != "" {
		body["reviewerGroup"] = g
	}
	r := c.call(ec, http.MethodPost, "/v1/guardian/pending-actions/"+url.PathEscape(id)+"/decide", body)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	var a approval.Action
	_ = r.Decode(&a)
	return ec.Redirect(http.StatusSeeOther, Prefix+"/desk?flash="+url.QueryEscape(fmt.Sprintf("%s: %s", id, a.Status)))
}

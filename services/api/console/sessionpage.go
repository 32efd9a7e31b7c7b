package console

import (
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"
)

// sessionView is one session: its events, approvals, risk and the
// evidence verifier.
type sessionView struct {
	ID        string
	Session   map[string]any
	Events    []map[string]any
	Risk      map[string]any
	RiskNote  string
	Approvals []map[string]any
	// Timeline merges the events, decisions and approvals, oldest first.
	Timeline []timelineEntry
	// TimelineNote says what part of the timeline could not be read.
	TimelineNote string
	Problem      string
	// LedgerKey is the deployment's ledger verifier key (GET
	// /v1/ledger/key), which the page compares with the bundle's own.
	LedgerKey string
}

func (sessionView) nav() string { return "sessions" }

func (c *Console) sessionPage(ec echo.Context) error {
	id := ec.Param("id")
	esc := url.PathEscape(id)
	v := sessionView{ID: id}
	r := c.call(ec, http.MethodGet, "/v1/sessions/"+esc+"?limit=1000", nil)
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if !r.OK() {
		// A session known only from its decisions has no events: the
		// page still shows its risk, approvals and evidence.
		v.Problem = r.Problem()
	} else {
		var s map[string]any
		if r.Decode(&s) == nil {
			v.Session = s
			if evs, ok := s["events"].([]any); ok {
				for _, e := range evs {
					if m, ok := e.(map[string]any); ok {
						v.Events = append(v.Events, m)
					}
				}
			}
		}
	}
	if rr := c.call(ec, http.MethodGet, "/v1/sessions/"+esc+"/risk", nil); rr.OK() {
		_ = rr.Decode(&v.Risk)
	} else {
		v.RiskNote = rr.Problem()
	}
	if kr := c.call(ec, http.MethodGet, "/v1/ledger/key", nil); kr.OK() {
		var k struct {
			PublicKey string `json:"publicKey"`
		}
		if kr.Decode(&k) == nil {
			v.LedgerKey = k.PublicKey
		}
	}
	// Approvals of the session: the board's list, narrowed here (the API
	// filters by agent, not session).
	if items, ar := c.list(ec, "/v1/guardian/pending-actions?limit=100"); ar.OK() {
		for _, it := range items {
			if it["sessionId"] == id {
				v.Approvals = append(v.Approvals, it)
			}
		}
	}
	decisions, dr := c.sessionDecisions(ec, id)
	if !dr.OK() {
		v.TimelineNote = "decisions: " + dr.Problem()
	}
	v.Timeline = mergeTimeline(v.Events, decisions, v.Approvals)
	return c.render(ec, http.StatusOK, "session", "Session "+id, v)
}

// evidence passes the session's evidence bundle through unchanged (the
// page verifies it, and the download keeps its exact bytes).
func (c *Console) evidence(ec echo.Context) error {
	id := ec.Param("id")
	r := c.call(ec, http.MethodGet, "/v1/sessions/"+url.PathEscape(id)+"/evidence", nil)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	ec.Response().Header().Set("Content-Disposition", `attachment; filename="evidence-`+safeFileName(id)+`.json"`)
	return ec.Blob(http.StatusOK, "application/json", r.Body)
}

func safeFileName(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			b[i] = '_'
		}
	}
	return string(b)
}

package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
)

// cell is one table cell: text, optionally a link, and row actions.
type cell struct {
	Text  string
	Href  string
	Mono  bool
	Forms []rowForm
}

// rowForm is a small POST form (a button, hidden fields and a few inputs).
type rowForm struct {
	Action, Label string
	Fields        [][2]string
	Inputs        []formInput
	Danger        bool
	// Get makes it a GET form (a step to a confirmation page: no state
	// changes, no CSRF token).
	Get bool
	// ID names the form; Stacked lays it out as a panel form with visible
	// labels (a row form's labels are for screen readers only).
	ID      string
	Stacked bool
	// Problem is the API's refusal of the last submission, shown in the
	// form (aria-describedby from the inputs it names).
	Problem string
}

// formInput is a text input, or a select when Options are set.
type formInput struct {
	ID, Name, Label string
	Required        bool
	// Type is the input's type ("text" when empty).
	Type    string
	Value   string
	Options []option
	// Hint is shown under a stacked input; Invalid marks the input the
	// API's refusal names (aria-invalid).
	Hint    string
	Invalid bool
	List    string
}

type option struct {
	Value, Label string
	Selected     bool
}

type filter struct{ Name, Label, Value, Placeholder string }

type panel struct {
	Heading string
	Pre     string
	Forms   []rowForm
}

// tableView is a list page.
type tableView struct {
	NavKey, Heading, Intro string
	Filters                []filter
	Columns                []string
	Rows                   [][]cell
	Extra                  []panel
	// Status is the page's HTTP status (200 when zero): a form refused by
	// the API is shown again with the API's status.
	Status int
	// Stack shows each row as a block of labelled fields on a phone
	// (lists with row forms, whose actions would be off screen).
	Stack bool
	// Datalists offer values for inputs (list="<id>").
	Datalists map[string][]string
	// Links are buttons to related pages (e.g. a new policy).
	Links         []link
	Problem, Next string
}

type link struct{ Href, Label string }

func (t tableView) nav() string { return t.NavKey }

func init() {
	funcs["formctx"] = func(f rowForm, csrf string) any {
		return struct {
			F    rowForm
			CSRF string
		}{f, csrf}
	}
}

// column maps a field of an API item to a cell.
type column struct {
	Header, Path string
	// Link, if set, makes the cell a link to Link with the value escaped.
	Link string
	Mono bool
	// Time shows an RFC 3339 value to the second, in UTC (the API's
	// nanoseconds push a table's actions out of a 1280 px screen).
	Time bool
}

func rows(items []map[string]any, cols []column) [][]cell {
	out := make([][]cell, 0, len(items))
	for _, it := range items {
		row := make([]cell, 0, len(cols))
		for _, col := range cols {
			v := text(field(it, col.Path))
			if t, err := time.Parse(time.RFC3339Nano, v); col.Time && err == nil {
				v = t.UTC().Format("2006-01-02 15:04:05Z")
			}
			cl := cell{Text: v, Mono: col.Mono}
			if col.Link != "" && v != "" {
				cl.Href = fmt.Sprintf(col.Link, url.PathEscape(v))
			}
			row = append(row, cl)
		}
		out = append(out, row)
	}
	return out
}

func headers(cols []column) []string {
	h := make([]string, len(cols))
	for i, c := range cols {
		h[i] = c.Header
	}
	return h
}

// query copies the named query parameters that are set.
func query(ec echo.Context, names ...string) url.Values {
	q := url.Values{}
	for _, n := range names {
		if v := strings.TrimSpace(ec.QueryParam(n)); v != "" {
			q.Set(n, v)
		}
	}
	return q
}

func filters(ec echo.Context, fs ...filter) []filter {
	for i := range fs {
		fs[i].Value = ec.QueryParam(fs[i].Name)
	}
	return fs
}

// listPage renders an API list as a table; next pages follow the API's
// cursor.
func (c *Console) listPage(ec echo.Context, v tableView, apiPath string, q url.Values, cols []column, actions func(map[string]any) []rowForm) error {
	for _, k := range []string{"cursor", "offset"} {
		if v := ec.QueryParam(k); v != "" {
			q.Set(k, v)
		}
	}
	path := apiPath
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	r := c.call(ec, http.MethodGet, path, nil)
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	v.Columns = headers(cols)
	status := http.StatusOK
	if v.Status != 0 {
		status = v.Status
	}
	if !r.OK() {
		v.Problem = r.Problem()
		v.Columns = nil
		return c.render(ec, status, "table", v.Heading, v)
	}
	var page struct {
		Data       []map[string]any `json:"data"`
		NextCursor *string          `json:"nextCursor"`
		HasMore    bool             `json:"hasMore"`
		Offset     *int             `json:"offset"`
	}
	if err := r.Decode(&page); err != nil {
		v.Problem = "the API answered something the console cannot read"
		return c.render(ec, status, "table", v.Heading, v)
	}
	v.Rows = rows(page.Data, cols)
	if actions != nil {
		v.Columns = append(v.Columns, "Actions")
		for i, it := range page.Data {
			v.Rows[i] = append(v.Rows[i], cell{Forms: actions(it)})
		}
	}
	nq := ec.QueryParams()
	switch {
	case page.NextCursor != nil && *page.NextCursor != "":
		nq.Set("cursor", *page.NextCursor)
		v.Next = ec.Request().URL.Path + "?" + nq.Encode()
	case page.HasMore && page.Offset != nil:
		// Kaizen-style lists page by offset.
		nq.Set("offset", strconv.Itoa(*page.Offset+len(page.Data)))
		v.Next = ec.Request().URL.Path + "?" + nq.Encode()
	}
	return c.render(ec, status, "table", v.Heading, v)
}

func (c *Console) sessionsPage(ec echo.Context) error {
	v := tableView{NavKey: "sessions", Heading: "Sessions", Intro: "Most recently active first. Open one for its timeline, risk and evidence.",
		Filters: filters(ec, filter{Name: "search", Label: "Search", Placeholder: "session or agent id"}, filter{Name: "agentId", Label: "Agent"},
			filter{Name: "from", Label: "From", Placeholder: "RFC 3339"}, filter{Name: "to", Label: "To", Placeholder: "RFC 3339"})}
	return c.listPage(ec, v, "/v1/sessions", query(ec, "search", "agentId", "from", "to"), []column{
		{Header: "Session", Path: "sessionId", Link: Prefix + "/sessions/%s", Mono: true}, {Header: "Agent", Path: "agentId"},
		{Header: "Events", Path: "eventCount"}, {Header: "First event", Path: "firstEventAt"}, {Header: "Last event", Path: "lastEventAt"},
	}, nil)
}

func (c *Console) agentsPage(ec echo.Context) error {
	v := tableView{NavKey: "agents", Heading: "Agents", Intro: "Registered and discovered agents with their baseline. Pausing blocks every action of the agent (AGENT_PAUSED); a halt stops it at once and rejects what it has pending.",
		Filters: filters(ec, filter{Name: "agentId", Label: "Agent"})}
	return c.listPage(ec, v, "/v1/agents/profiles", query(ec, "agentId"), []column{
		{Header: "Agent", Path: "agentId", Link: Prefix + "/agents/%s", Mono: true}, {Header: "Status", Path: "status"}, {Header: "Paused", Path: "paused"},
		{Header: "Baseline", Path: "observationDepth"}, {Header: "Observations", Path: "observations"},
		{Header: "Declared tools", Path: "declaration.tools"}, {Header: "Blocks", Path: "activity.blocks"}, {Header: "Errors", Path: "activity.errors"},
		{Header: "Last seen", Path: "activity.lastSeenAt"},
	}, func(it map[string]any) []rowForm {
		id := text(it["agentId"])
		pause := rowForm{Action: Prefix + "/agents/" + url.PathEscape(id) + "/settings", Label: "Pause", Fields: [][2]string{{"paused", "true"}}}
		if it["paused"] == true {
			pause = rowForm{Action: pause.Action, Label: "Resume", Fields: [][2]string{{"paused", "false"}}}
		}
		halt := rowForm{Action: Prefix + "/halts", Label: "Halt", Danger: true, Fields: [][2]string{{"scope", "agent"}, {"agentId", id}},
			Inputs: []formInput{{ID: "halt-reason-" + id, Name: "reason", Label: "Reason for halting " + id, Required: true}}}
		return []rowForm{pause, halt}
	})
}

func (c *Console) agentSettings(ec echo.Context) error {
	id := ec.Param("id")
	r := c.call(ec, http.MethodPost, "/v1/agents/"+url.PathEscape(id)+"/settings", map[string]any{"paused": ec.FormValue("paused") == "true"})
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	state := "resumed"
	if ec.FormValue("paused") == "true" {
		state = "paused"
	}
	return ec.Redirect(http.StatusSeeOther, backTo(ec, id, id+" "+state))
}

func (c *Console) halt(ec echo.Context) error {
	body := map[string]any{"scope": ec.FormValue("scope"), "reason": ec.FormValue("reason")}
	for _, k := range []string{"agentId", "sessionId"} {
		if v := ec.FormValue(k); v != "" {
			body[k] = v
		}
	}
	r := c.call(ec, http.MethodPost, "/v1/halts", body)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	var h struct {
		ID              string `json:"id"`
		PendingRejected int    `json:"pendingRejected"`
	}
	_ = r.Decode(&h)
	return ec.Redirect(http.StatusSeeOther, backTo(ec, ec.FormValue("agentId"), fmt.Sprintf("halt %s in force; %d pending approvals rejected", h.ID, h.PendingRejected)))
}

func (c *Console) verdictsPage(ec echo.Context) error {
	v := tableView{NavKey: "verdicts", Heading: "Verdicts", Intro: "Findings to triage, newest first. Triage tunes findings; it never lifts a policy outcome.",
		Filters: filters(ec, filter{Name: "q", Label: "Search", Placeholder: "tool, target, agent, reason"}, filter{Name: "status", Label: "Status", Placeholder: "open"},
			filter{Name: "decision", Label: "Outcome", Placeholder: "block"}, filter{Name: "since", Label: "Since", Placeholder: "24h"},
			filter{Name: "agent", Label: "Agent"}, filter{Name: "source", Label: "Source", Placeholder: "baseline"})}
	return c.listPage(ec, v, "/v1/verdicts", query(ec, "q", "status", "decision", "since", "agent", "source"), []column{
		{Header: "Id", Path: "id", Mono: true}, {Header: "Agent", Path: "agent"}, {Header: "Outcome", Path: "outcome"},
		{Header: "Tool", Path: "action.tool"}, {Header: "Target", Path: "action.target"}, {Header: "Reasons", Path: "reasonCodes"},
		{Header: "Source", Path: "source"}, {Header: "Status", Path: "status"}, {Header: "At", Path: "createdAt"},
	}, func(it map[string]any) []rowForm {
		id := text(it["id"])
		var fs []rowForm
		for _, s := range []string{"acknowledged", "resolved", "false_positive"} {
			fs = append(fs, rowForm{Action: Prefix + "/verdicts/" + url.PathEscape(id) + "/status", Label: strings.ReplaceAll(s, "_", " "), Fields: [][2]string{{"status", s}}})
		}
		return fs
	})
}

func (c *Console) triage(ec echo.Context) error {
	id := ec.Param("id")
	r := c.call(ec, http.MethodPost, "/v1/verdicts/"+url.PathEscape(id)+"/status", map[string]any{"status": ec.FormValue("status")})
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	return ec.Redirect(http.StatusSeeOther, Prefix+"/verdicts?flash="+url.QueryEscape(id+": "+ec.FormValue("status")))
}

func (c *Console) auditPage(ec echo.Context) error {
	v := tableView{NavKey: "audit", Heading: "Audit log", Intro: "Every change to agents, policies, keys, members, settings and channels, and every approval decision, newest first.",
		Filters: filters(ec, filter{Name: "actor", Label: "Actor"}, filter{Name: "entityType", Label: "Entity type"}, filter{Name: "action", Label: "Action"})}
	return c.listPage(ec, v, "/v1/audit", query(ec, "actor", "entityType", "action", "from", "to"), []column{
		{Header: "At", Path: "at"}, {Header: "Actor", Path: "actor"}, {Header: "Action", Path: "action"},
		{Header: "Entity", Path: "entityType"}, {Header: "Id", Path: "entityId", Mono: true},
	}, nil)
}

func (c *Console) channelsPage(ec echo.Context) error {
	v := tableView{NavKey: "channels", Heading: "Notification channels", Intro: "Where signals are delivered. Open a channel for its delivery log and dead letters."}
	return c.listPage(ec, v, "/v1/notification-channels", url.Values{}, []column{
		{Header: "Id", Path: "id", Link: Prefix + "/channels/%s", Mono: true}, {Header: "Name", Path: "name"}, {Header: "Type", Path: "type"},
		{Header: "Destination", Path: "displayUrl"}, {Header: "Signals", Path: "signals"}, {Header: "Min severity", Path: "minSeverity"}, {Header: "Enabled", Path: "enabled"},
	}, nil)
}

// channelPage shows a channel's delivery log with its dead letters above.
func (c *Console) channelPage(ec echo.Context) error {
	id := url.PathEscape(ec.Param("id"))
	v := tableView{NavKey: "channels", Heading: "Channel " + ec.Param("id"), Intro: "Deliveries, newest first."}
	dead, r := c.list(ec, "/v1/notification-channels/"+id+"/dead-letters")
	if r.Status == http.StatusUnauthorized {
		return c.apiFail(ec, r)
	}
	if r.OK() {
		var b strings.Builder
		for _, d := range dead {
			fmt.Fprintf(&b, "%s  attempt %s  %s  %s  %s\n", text(d["deliveryId"]), text(d["attempt"]), text(d["statusCode"]), text(d["error"]), text(d["at"]))
		}
		if b.Len() == 0 {
			b.WriteString("none")
		}
		v.Extra = []panel{{Heading: fmt.Sprintf("Dead letters (%d)", len(dead)), Pre: b.String()}}
	} else {
		v.Extra = []panel{{Heading: "Dead letters", Pre: r.Problem()}}
	}
	return c.listPage(ec, v, "/v1/notification-channels/"+id+"/deliveries", url.Values{}, []column{
		{Header: "Delivery", Path: "deliveryId", Mono: true}, {Header: "Attempt", Path: "attempt"}, {Header: "Status", Path: "status"},
		{Header: "Outcome", Path: "outcome"}, {Header: "HTTP", Path: "statusCode"}, {Header: "Latency ms", Path: "latencyMs"}, {Header: "Error", Path: "error"},
		{Header: "Next attempt", Path: "nextAttemptAt"}, {Header: "At", Path: "at"},
	}, nil)
}

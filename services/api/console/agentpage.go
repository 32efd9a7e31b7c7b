package console

import (
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
)

// An agent's own page: its registration and declaration (GET
// /v1/agents/:id), its baseline (the risk service's profile), its recent
// anomalies (verdicts with source baseline), its recent sessions and the
// pause / resume and halt forms. Every part is read through the API as the
// signed-in person, so roles and tenant isolation are the API's: another
// tenant's agent is the API's 404, and so the page's.

// agentPageAnomalies and agentPageSessions are how many of each the page
// lists (the newest); the lists they link to have the rest.
const (
	agentPageAnomalies = 20
	agentPageSessions  = 10
)

// agentView is one agent's page.
type agentView struct {
	ID string
	// NotFound is the API's 404 message: the page says the agent was not
	// found and nothing else.
	NotFound string
	Agent    map[string]any
	// Registration are the agent's record's facts, in order.
	Registration [][2]string
	Declared     bool
	Declaration  map[string]any
	// Sources are the declaration's data-flow labels (tool or destination
	// → labels), sorted.
	Sources [][2]string
	Paused  bool
	// Profile is the risk service's baseline of the agent (nil when it
	// could not be read: ProfileNote says why).
	Profile     map[string]any
	ProfileNote string
	Baseline    []baselineDim
	Anomalies   []map[string]any
	// AnomaliesNote says why the anomalies could not be read.
	AnomaliesNote string
	AnomaliesAll  string
	AnomaliesMax  int
	Sessions      []map[string]any
	SessionsNote  string
	SessionsAll   string
	// Forms are the controls the person's role may use; FormsNote says
	// which the role lacks.
	Forms     []rowForm
	FormsNote string
}

func (agentView) nav() string { return "agents" }

// baselineDim is one dimension of the baseline (kinds, tools,
// destinations, publishers): the values seen, most frequent first.
type baselineDim struct {
	Heading string
	// Declared marks, for tools and destinations of an agent with a
	// declaration, whether each value is in it ("" when not applicable).
	DeclaredColumn bool
	Rows           []seenRow
}

type seenRow struct {
	Value, Count, First, Last, Declared string
}

// when shows an RFC 3339 value to the second, in UTC ("" stays "").
func when(v any) string {
	s := text(v)
	if t := parseTime(v); !t.IsZero() {
		return t.UTC().Format("2006-01-02 15:04:05Z")
	}
	return s
}

func init() {
	funcs["when"] = when
	// path escapes an id for a link's path segment.
	funcs["path"] = url.PathEscape
}

func (c *Console) agentPage(ec echo.Context) error {
	id := ec.Param("id")
	esc := url.PathEscape(id)
	v := agentView{ID: id, AnomaliesMax: agentPageAnomalies}
	r := c.call(ec, http.MethodGet, "/v1/agents/"+esc, nil)
	switch {
	case r.Status == http.StatusNotFound:
		v.NotFound = r.Problem()
		return c.render(ec, http.StatusNotFound, "agent", "Agent not found", v)
	case !r.OK():
		return c.apiFail(ec, r)
	}
	if err := r.Decode(&v.Agent); err != nil {
		return c.fail(ec, http.StatusBadGateway, "the API answered something the console cannot read")
	}
	v.registration()
	decl, _ := v.Agent["declaration"].(map[string]any)
	v.Declared, v.Declaration = decl != nil, decl
	if src, ok := decl["sources"].(map[string]any); ok {
		for _, k := range sortedKeys(src) {
			v.Sources = append(v.Sources, [2]string{k, text(src[k])})
		}
	}
	settings, _ := v.Agent["settings"].(map[string]any)
	v.Paused = settings["paused"] == true

	// The baseline: the risk service's profile of this one agent.
	items, pr := c.list(ec, "/v1/agents/profiles?"+url.Values{"agentId": {id}}.Encode())
	switch {
	case pr.Status == http.StatusUnauthorized:
		return c.apiFail(ec, pr)
	case !pr.OK():
		v.ProfileNote = pr.Problem()
	default:
		for _, it := range items {
			if text(it["agentId"]) == id {
				v.Profile = it
			}
		}
		if v.Profile == nil {
			v.ProfileNote = "the risk service has no baseline for this agent"
		}
	}
	if v.Profile != nil {
		v.Baseline = baselineDims(v.Profile, decl)
	}

	// Recent anomalies: the risk service's departures from the baseline,
	// listed as verdicts with source baseline, newest first.
	aq := url.Values{"agent": {id}, "source": {"baseline"}}
	v.AnomaliesAll = Prefix + "/verdicts?" + aq.Encode()
	aq.Set("limit", strconv.Itoa(agentPageAnomalies))
	items, ar := c.list(ec, "/v1/verdicts?"+aq.Encode())
	if ar.Status == http.StatusUnauthorized {
		return c.apiFail(ec, ar)
	}
	if ar.OK() {
		v.Anomalies = items
	} else {
		v.AnomaliesNote = ar.Problem()
	}

	sq := url.Values{"limit": {strconv.Itoa(agentPageSessions)}}
	v.SessionsAll = Prefix + "/sessions?" + url.Values{"agentId": {id}}.Encode()
	items, sr := c.list(ec, "/v1/agents/"+esc+"/sessions?"+sq.Encode())
	if sr.Status == http.StatusUnauthorized {
		return c.apiFail(ec, sr)
	}
	if sr.OK() {
		v.Sessions = items
	} else {
		v.SessionsNote = sr.Problem()
	}

	v.Forms, v.FormsNote = agentForms(principal(ec), id, v.Paused)
	name := text(v.Agent["name"])
	if name == "" {
		name = id
	}
	return c.render(ec, http.StatusOK, "agent", "Agent "+name, v)
}

// registration lists the agent record's facts the page shows, in the
// API's words, leaving out what is empty.
func (v *agentView) registration() {
	a := v.Agent
	sig := text(a["manifestSignature"])
	if sig == "" {
		sig = "none (an agent only discovered, or a manifest not yet signed)"
	}
	settings, _ := a["settings"].(map[string]any)
	for _, f := range [][2]string{
		{"Id", text(a["agentId"])}, {"Name", text(a["name"])}, {"Purpose", text(a["description"])},
		{"Status", text(a["status"])}, {"Source", text(a["source"])}, {"Owner", text(a["owner"])},
		{"Environment", text(a["environment"])}, {"Model", text(a["model"])}, {"Framework", text(a["framework"])},
		{"Version", text(a["version"])}, {"Registered tools", text(a["tools"])}, {"Tags", text(a["tags"])},
		{"Judge", text(settings["judge_enabled"])},
		{"Manifest hash", text(a["manifestHash"])}, {"Manifest signature", sig},
		{"Registered", when(a["registeredAt"])}, {"Updated", when(a["updatedAt"])}, {"Revision", text(a["revision"])},
	} {
		if f[1] != "" {
			v.Registration = append(v.Registration, f)
		}
	}
}

// baselineDims lists the profile's baseline dimensions; tools and
// destinations are checked against the declaration when there is one.
func baselineDims(p, decl map[string]any) []baselineDim {
	base, _ := p["baseline"].(map[string]any)
	var out []baselineDim
	for _, d := range []struct{ key, heading, declKey string }{
		{"tools", "Tools", "tools"}, {"destinations", "Destinations", "destinations"}, {"kinds", "Action kinds", ""}, {"publishers", "Publishers", ""},
	} {
		dim := baselineDim{Heading: d.heading}
		var declared []string
		if d.declKey != "" && decl != nil {
			dim.DeclaredColumn = true
			for _, x := range asList(decl[d.declKey]) {
				declared = append(declared, text(x))
			}
		}
		for _, x := range asList(base[d.key]) {
			s, _ := x.(map[string]any)
			row := seenRow{Value: text(s["value"]), Count: text(s["count"]), First: when(s["firstSeenAt"]), Last: when(s["lastSeenAt"])}
			if dim.DeclaredColumn {
				row.Declared = text(slices.Contains(declared, row.Value))
			}
			dim.Rows = append(dim.Rows, row)
		}
		out = append(out, dim)
	}
	return out
}

func asList(v any) []any { l, _ := v.([]any); return l }

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// agentForms are the pause / resume and halt forms for the roles that may
// use them (presentation only: the API routes they post to decide, and a
// forged post is refused there in the API's words). They post to the same
// handlers as the list's row forms, and come back to this page.
func agentForms(p auth.Principal, id string, paused bool) ([]rowForm, string) {
	var forms []rowForm
	var lacks []string
	back := [2]string{"return", "agent"}
	if p.Allows(auth.AgentsWrite) {
		f := rowForm{ID: "agent-pause", Action: Prefix + "/agents/" + url.PathEscape(id) + "/settings", Label: "Pause", Fields: [][2]string{{"paused", "true"}, back}}
		if paused {
			f.Label, f.Fields = "Resume", [][2]string{{"paused", "false"}, back}
		}
		// Resetting forgets what was learned, so it goes through a
		// confirmation page first (a GET form: no state changes there).
		forms = append(forms, f, rowForm{ID: "agent-reset", Action: Prefix + "/agents/" + url.PathEscape(id) + "/reset", Label: "Reset baseline…", Get: true})
	} else {
		lacks = append(lacks, "pause, resume or reset its baseline ("+string(auth.AgentsWrite)+")")
	}
	if p.Allows(auth.HaltsManage) {
		forms = append(forms, rowForm{ID: "agent-halt", Action: Prefix + "/halts", Label: "Halt", Danger: true, Stacked: true,
			Fields: [][2]string{{"scope", "agent"}, {"agentId", id}, back},
			Inputs: []formInput{{ID: "halt-reason", Name: "reason", Label: "Reason for halting", Required: true,
				Hint: "A halt stops the agent at once and rejects what it has pending; it stays in force until lifted."}}})
	} else {
		lacks = append(lacks, "halt it ("+string(auth.HaltsManage)+")")
	}
	note := ""
	if len(lacks) > 0 {
		note = "Your role (" + string(p.Role) + ") may not " + strings.Join(lacks, " or ") + "."
	}
	return forms, note
}

// backTo is where a pause / resume or halt form returns: the agent's page
// when it was posted from there, the list otherwise.
func backTo(ec echo.Context, agentID, flash string) string {
	if ec.FormValue("return") == "agent" && agentID != "" {
		return Prefix + "/agents/" + url.PathEscape(agentID) + "?flash=" + url.QueryEscape(flash)
	}
	return Prefix + "/agents?flash=" + url.QueryEscape(flash)
}

// resetBaselinePage is the confirmation step before a baseline reset: the
// agent's profile as the risk service has it, read as the person (another
// tenant's agent is not found).
func (c *Console) resetBaselinePage(ec echo.Context) error {
	id := ec.Param("id")
	page := Prefix + "/agents/" + url.PathEscape(id)
	return c.confirmStep(ec, "/v1/agents/profiles?"+url.Values{"agentId": {id}}.Encode(), "agentId", id, "agent "+id, func(a map[string]any) confirmView {
		activity, _ := a["activity"].(map[string]any)
		return confirmView{NavKey: "agents", Cancel: page, Heading: "Reset the baseline of " + id,
			Intro: "Resetting forgets everything learned about this agent, as if it were new: no baseline anomalies are raised until it has warmed up again. Its recorded events, decisions and anomalies stay.",
			Facts: [][2]string{{"Agent", id}, {"Depth", text(a["observationDepth"])}, {"Observations", text(a["observations"])},
				{"Last seen", when(activity["lastSeenAt"])}, {"Earlier resets", text(a["resets"])}},
			Form: rowForm{ID: "reset-baseline", Action: page + "/reset", Label: "Reset baseline", Danger: true, Fields: [][2]string{{"return", "agent"}}}}
	})
}

// resetBaseline resets through POST /v1/agents/:id/reset (the risk
// service's route; it decides the role) and returns to the agent's page
// (the confirmation form says return=agent).
func (c *Console) resetBaseline(ec echo.Context) error {
	id := ec.Param("id")
	r := c.call(ec, http.MethodPost, "/v1/agents/"+url.PathEscape(id)+"/reset", nil)
	if !r.OK() {
		return c.apiFail(ec, r)
	}
	var out struct {
		ResetID string `json:"resetId"`
	}
	_ = r.Decode(&out)
	return ec.Redirect(http.StatusSeeOther, backTo(ec, id, "baseline of "+id+" reset ("+out.ResetID+")"))
}

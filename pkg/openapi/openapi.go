// Package openapi builds the OpenAPI 3.1 document of Vigil's HTTP API from
// the route table (pkg/routes): every route of the table is an operation,
// so the document cannot miss a route or describe one that does not exist.
// Each operation answers the error envelope on every error; the main
// resources (agents, events, sessions, policies, decisions, verdicts,
// pending actions, keys) have schemas for their bodies, which the contract
// test in cmd/vigil checks real responses against (kin-openapi). The api
// and `vigil gateway` serve it at /openapi.json.
package openapi

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"sync"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/routes"
)

// Path is the route the document is served at.
const Path = "/openapi.json"

// BrowserRoute reports whether path is one of the web console's pages
// (docs/console.md): browser routes with cookie sessions, in the route
// table (the api serves them) but not operations of the API document.
func BrowserRoute(path string) bool {
	return path == "/console" || strings.HasPrefix(path, "/console/")
}

// op is what the document says about one route beyond the table.
type op struct {
	summary string
	// status is the success status and resp the schema of its body (a
	// component name, "list:<Name>" for the list envelope of Name, "" for
	// a body not described here); status 0 documents any 2XX.
	status int
	resp   string
	// req is the schema of the request body (a component name), if any.
	req string
	// public operations need no key.
	public bool
	// otlp operations speak OTLP/HTTP: errors are a google.rpc.Status
	// (OTLPStatus), in JSON or protobuf as the request was, not the
	// envelope; OTLP exporters read that shape.
	otlp bool
}

// operations describe routes beyond their place in the table; a route
// not listed gets a generic operation (any 2XX, the error envelope).
var operations = map[string]op{
	"GET " + Path:                          {summary: "This document", status: 200, public: true},
	"POST /v1/events":                      {summary: "Report one event (Kaplaix)", status: 202, resp: "EventAccepted", req: "Event"},
	"POST /v1/events/batch":                {summary: "Report events in a batch", req: "EventBatch"},
	"POST /v1/traces":                      {summary: "OTLP/HTTP traces export (JSON or protobuf); span events become events", otlp: true},
	"GET /v1/sessions":                     {summary: "List sessions", status: 200, resp: "list:Session"},
	"GET /v1/sessions/:id":                 {summary: "A session and its events", status: 200, resp: "Session"},
	"POST /v1/agents":                      {summary: "Register an agent", status: 201, resp: "Agent", req: "AgentRegistration"},
	"GET /v1/agents":                       {summary: "List agents", status: 200, resp: "list:Agent"},
	"GET /v1/agents/:id":                   {summary: "An agent", status: 200, resp: "Agent"},
	"PATCH /v1/agents/:id":                 {summary: "Update an agent", status: 200, resp: "Agent"},
	"POST /v1/policies":                    {summary: "Create a policy (YAML or JSON)", status: 201, resp: "Policy"},
	"GET /v1/policies":                     {summary: "List policies", status: 200, resp: "list:Policy"},
	"GET /v1/policies/:id":                 {summary: "A policy", status: 200, resp: "Policy"},
	"POST /v1/policies/test":               {summary: "Compile a draft policy and run its test cases", status: 200, resp: "Object"},
	"POST /v1/policies/replay":             {summary: "Re-decide the last ?days of recorded decisions with a draft policy", status: 200, resp: "Object"},
	"POST /v1/decisions.evaluate":          {summary: "Ask before acting (KLA)", status: 200, resp: "Decision", req: "DecisionRequest"},
	"GET /v1/decisions/:id":                {summary: "A decision; ?wait= long-polls until it is final", status: 200, resp: "Decision"},
	"GET /v1/verdicts":                     {summary: "List verdicts", status: 200, resp: "list:Verdict"},
	"GET /v1/verdicts/:id":                 {summary: "A verdict", status: 200, resp: "Verdict"},
	"GET /v1/guardian/pending-actions":     {summary: "The Decision Desk", status: 200, resp: "list:PendingAction"},
	"GET /v1/guardian/pending-actions/:id": {summary: "A pending action", status: 200, resp: "PendingAction"},
	"GET /v1/keys":                         {summary: "List API keys", status: 200, resp: "list:Key"},
	"GET /v1/halts":                        {summary: "Active halts", status: 200, resp: "list:Object"},
	"GET /v1/budgets":                      {summary: "Budgets and their use", status: 200, resp: "list:Object"},
}

// Document is the OpenAPI 3.1 document of every route of t.
func Document(t routes.Table) ([]byte, error) {
	paths := map[string]map[string]any{}
	for _, r := range t {
		if BrowserRoute(r.Path) {
			continue
		}
		p := oasPath(r.Path)
		if paths[p] == nil {
			paths[p] = map[string]any{}
			if params := pathParams(r.Path); len(params) > 0 {
				paths[p]["parameters"] = params
			}
		}
		paths[p][strings.ToLower(r.Method)] = operation(r)
	}
	doc := map[string]any{
		"openapi":           "3.1.0",
		"jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
		"info": map[string]any{
			"title":       "Vigil API",
			"version":     "v1",
			"description": "Vigil's HTTP API: every route of every service, under one base URL (docs/api.md, docs/gateway.md). Every error answers the envelope ErrorEnvelope.",
		},
		"servers":    []any{map[string]any{"url": "/"}},
		"security":   []any{map[string]any{"bearer": []any{}}},
		"tags":       tags(t),
		"paths":      paths,
		"components": components(),
	}
	return json.MarshalIndent(doc, "", "  ")
}

var (
	once     sync.Once
	builtin  []byte
	buildErr error
)

// Builtin is Document of the built-in route table, built once.
func Builtin() ([]byte, error) {
	once.Do(func() { builtin, buildErr = Document(routes.Default()) })
	return builtin, buildErr
}

// Handler serves Builtin.
func Handler(c echo.Context) error {
	b, err := Builtin()
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
}

var param = regexp.MustCompile(`:([A-Za-z][A-Za-z0-9]*)`)

// oasPath is an echo path in OpenAPI's template syntax.
func oasPath(p string) string { return param.ReplaceAllString(p, "{$1}") }

func pathParams(p string) []any {
	var out []any
	for _, m := range param.FindAllStringSubmatch(p, -1) {
		out = append(out, map[string]any{"name": m[1], "in": "path", "required": true, "schema": map[string]any{"type": "string"}})
	}
	return out
}

func ref(name string) map[string]any {
	return map[string]any{"$ref": "#/components/schemas/" + name}
}

func jsonContent(schema map[string]any) map[string]any {
	return map[string]any{"application/json": map[string]any{"schema": schema}}
}

func operation(r routes.Route) map[string]any {
	o, known := operations[r.String()]
	if !known {
		o.summary = r.String()
	}
	id := strings.ToLower(r.Method) + strings.NewReplacer("/", "_", ":", "", ".", "_", "-", "_").Replace(r.Path)
	resp := map[string]any{"default": map[string]any{"description": "Any error, in the envelope", "content": jsonContent(ref("ErrorEnvelope"))}}
	if o.otlp {
		resp["default"] = map[string]any{"description": "Any error, as OTLP/HTTP answers it (google.rpc.Status)", "content": map[string]any{
			"application/json":       map[string]any{"schema": ref("OTLPStatus")},
			"application/x-protobuf": map[string]any{},
		}}
	}
	ok := map[string]any{"description": "Success (docs/api.md)"}
	switch {
	case strings.HasPrefix(o.resp, "list:"):
		ok["content"] = jsonContent(listOf(strings.TrimPrefix(o.resp, "list:")))
	case o.resp != "":
		ok["content"] = jsonContent(ref(o.resp))
	case o.status == http.StatusOK && r.Path == Path:
		ok["content"] = jsonContent(map[string]any{"type": "object", "required": []any{"openapi", "paths"}})
	}
	if o.status == 0 {
		resp["2XX"] = ok
	} else {
		resp[fmt.Sprint(o.status)] = ok
	}
	out := map[string]any{
		"operationId": id,
		"summary":     o.summary,
		"tags":        []any{r.Service},
		"responses":   resp,
	}
	if o.public {
		out["security"] = []any{}
	}
	if o.req != "" {
		out["requestBody"] = map[string]any{"required": true, "content": jsonContent(ref(o.req))}
	}
	return out
}

func tags(t routes.Table) []any {
	var out []any
	for _, s := range t.Services() {
		out = append(out, map[string]any{"name": s, "description": "Routes served by the " + s + " service"})
	}
	return out
}

func listOf(name string) map[string]any {
	return map[string]any{
		"type":     "object",
		"required": []any{"data"},
		"properties": map[string]any{
			"data":       map[string]any{"type": "array", "items": ref(name)},
			"nextCursor": map[string]any{"type": []any{"string", "null"}},
			"hasMore":    map[string]any{"type": "boolean"},
		},
	}
}

// Operations lists the routes the document describes beyond the table,
// sorted (for the test that none is stale).
func Operations() []string {
	out := make([]string, 0, len(operations))
	for k := range operations {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

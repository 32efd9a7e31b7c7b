// Package routes is Vigil's route table: every HTTP route the services
// serve, and which service serves it. It is what puts all of them behind one
// base URL: `vigil dev` mounts every service on one echo instance, and a
// deployment of separate services puts `vigil gateway` (pkg/gateway), or
// any proxy configured from table.json, in front of them.
//
// The table is derived from the services' own registrations: table.json is
// written by a test in cmd/vigil that mounts each service's routes on an
// echo instance of its own and fails when the file differs (run it with
// -update-routes to rewrite the file). Matching uses echo's router, so a
// front door resolves a path exactly as the services do: static segments
// before parameters (`/v1/agents/profiles` is risk's, not the api's
// `/v1/agents/:id`), and a known path with another method is 405.
package routes

import (
	"bytes"
	_ "embed"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"

	"github.com/labstack/echo/v4"
)

// Route is one HTTP route and the service that serves it. Path uses echo's
// syntax: `:name` is one path segment.
type Route struct {
	Method  string `json:"method"`
	Path    string `json:"path"`
	Service string `json:"service"`
}

// String is "METHOD /path".
func (r Route) String() string { return r.Method + " " + r.Path }

// Table is every route of a deployment, sorted by path then method.
type Table []Route

//go:embed table.json
var builtin []byte

// Default is the table of this build (table.json).
func Default() Table {
	t, err := Parse(builtin)
	if err != nil {
		panic("routes: the built-in table.json is invalid: " + err.Error())
	}
	return t
}

var (
	methods     = []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodOptions}
	pathSyntax  = regexp.MustCompile(`^(/([A-Za-z0-9._~-]+|:[A-Za-z][A-Za-z0-9]*))+$`)
	serviceName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,30}$`)
)

// Parse reads a table in table.json's format (a JSON array of
// {method, path, service}) and checks it: known methods, paths in echo's
// syntax without wildcards, service names, and no route listed twice.
func Parse(b []byte) (Table, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var t Table
	if err := dec.Decode(&t); err != nil {
		return nil, fmt.Errorf("route table: %w", err)
	}
	if dec.More() {
		return nil, fmt.Errorf("route table: data after the array")
	}
	if len(t) == 0 {
		return nil, fmt.Errorf("route table: no routes")
	}
	seen := map[string]string{}
	for i, r := range t {
		switch {
		case !slices.Contains(methods, r.Method):
			return nil, fmt.Errorf("route table: [%d] %s: unknown method", i, r)
		case !pathSyntax.MatchString(r.Path):
			return nil, fmt.Errorf("route table: [%d] %s: a path is /segment or /:param, repeated", i, r)
		case !serviceName.MatchString(r.Service):
			return nil, fmt.Errorf("route table: [%d] %s: service %q is not a service name", i, r, r.Service)
		}
		if s, dup := seen[r.String()]; dup {
			return nil, fmt.Errorf("route table: %s is listed twice (%s and %s)", r, s, r.Service)
		}
		seen[r.String()] = r.Service
	}
	t.sort()
	return t, nil
}

// JSON is the table in table.json's format, one route per line.
func (t Table) JSON() []byte {
	var b bytes.Buffer
	b.WriteString("[\n")
	for i, r := range t {
		line, _ := json.Marshal(r)
		b.WriteString("  ")
		b.Write(line)
		if i < len(t)-1 {
			b.WriteByte(',')
		}
		b.WriteByte('\n')
	}
	b.WriteString("]\n")
	return b.Bytes()
}

func (t Table) sort() {
	slices.SortFunc(t, func(a, b Route) int {
		if c := strings.Compare(a.Path, b.Path); c != 0 {
			return c
		}
		return strings.Compare(a.Method, b.Method)
	})
}

// Services are the services the table names, sorted.
func (t Table) Services() []string {
	var s []string
	for _, r := range t {
		if !slices.Contains(s, r.Service) {
			s = append(s, r.Service)
		}
	}
	slices.Sort(s)
	return s
}

// Of is the routes service serves.
func (t Table) Of(service string) Table {
	var out Table
	for _, r := range t {
		if r.Service == service {
			out = append(out, r)
		}
	}
	return out
}

// Registered is the table of what mount registers on an echo instance of
// its own, every route attributed to service: how the table is derived
// from a service's Routes. echo's internal not-found routes and the
// process routes every binary serves (Process) are left out.
func Registered(service string, mount func(*echo.Echo)) Table {
	e := echo.New()
	mount(e)
	return FromEcho(e, service)
}

// FromEcho is the table of the routes registered on e, every one
// attributed to service, leaving out what Registered leaves out.
func FromEcho(e *echo.Echo, service string) Table {
	var t Table
	for _, r := range e.Routes() {
		route := Route{Method: r.Method, Path: r.Path, Service: service}
		if r.Method == echo.RouteNotFound || strings.HasSuffix(r.Path, "/*") || IsProcess(route) || slices.Contains(t, route) {
			continue
		}
		t = append(t, route)
	}
	t.sort()
	return t
}

// process are the routes every Vigil process serves for itself (health,
// readiness, metrics): never proxied, never in the table.
var process = []string{"/healthz", "/readyz", "/livez", "/metrics"}

// IsProcess says whether r is one of the routes each process serves for
// itself.
func IsProcess(r Route) bool { return slices.Contains(process, r.Path) }

// Mount registers every route of t on e, each with the handler handler
// returns for it, so that e routes requests exactly as the services do.
func (t Table) Mount(e *echo.Echo, handler func(Route) echo.HandlerFunc) {
	for _, r := range t {
		e.Add(r.Method, r.Path, handler(r))
	}
}

// Router resolves requests against a table with echo's router.
type Router struct{ e *echo.Echo }

// NewRouter is a Router over t.
func NewRouter(t Table) *Router {
	e := echo.New()
	t.Mount(e, func(r Route) echo.HandlerFunc {
		return func(c echo.Context) error { c.Set(routeKey, r); return nil }
	})
	return &Router{e: e}
}

const routeKey = "vigil.route"

// Find is the route req resolves to and whether there is one: false for
// an unknown path and for a known path asked with a method it does not
// serve.
func (rt *Router) Find(req *http.Request) (Route, bool) {
	// A 405 sets Allow on the response: give it one that goes nowhere.
	c := rt.e.NewContext(req, nowhere{})
	rt.e.Router().Find(req.Method, echo.GetPath(req), c)
	if err := c.Handler()(c); err != nil {
		return Route{}, false
	}
	r, ok := c.Get(routeKey).(Route)
	return r, ok
}

// nowhere is a ResponseWriter that keeps nothing.
type nowhere struct{}

func (nowhere) Header() http.Header         { return http.Header{} }
func (nowhere) Write(b []byte) (int, error) { return len(b), nil }
func (nowhere) WriteHeader(int)             {}

// StaticChildren are the static segments right under prefix in t
// ("profiles" under /v1/agents): an id of the resource at prefix/:id equal
// to one could never be read at prefix/<id>, since the static route wins,
// so such ids are refused where they are chosen.
func (t Table) StaticChildren(prefix string) []string {
	var out []string
	for _, r := range t {
		rest, ok := strings.CutPrefix(r.Path, prefix+"/")
		if !ok {
			continue
		}
		seg, _, _ := strings.Cut(rest, "/")
		if !strings.HasPrefix(seg, ":") && !slices.Contains(out, seg) {
			out = append(out, seg)
		}
	}
	slices.Sort(out)
	return out
}

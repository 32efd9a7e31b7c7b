package routes_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/routes"
)

// TestRouterResolvesLikeTheServices: static segments win over parameters,
// whichever service registered them; unknown paths and other methods
// resolve to nothing.
func TestRouterResolvesLikeTheServices(t *testing.T) {
	rt := routes.NewRouter(routes.Default())
	tests := []struct {
		method, path string
		want         string // "service METHOD /route", "" for none
	}{
		{"GET", "/v1/agents/profiles", "risk GET /v1/agents/profiles"},
		{"GET", "/v1/agents/a-1", "api GET /v1/agents/:id"},
		{"POST", "/v1/agents/a-1/reset", "risk POST /v1/agents/:id/reset"},
		{"GET", "/v1/sessions/s-1", "api GET /v1/sessions/:id"},
		{"GET", "/v1/sessions/s-1/risk", "risk GET /v1/sessions/:id/risk"},
		{"GET", "/v1/sessions/s-1/evidence", "ledger GET /v1/sessions/:id/evidence"},
		{"GET", "/v1/sessions/s-1/export.json", "api GET /v1/sessions/:id/export.json"},
		{"POST", "/v1/events", "ingest POST /v1/events"},
		{"POST", "/v1/events/batch", "ingest POST /v1/events/batch"},
		{"POST", "/v1/decisions.evaluate", "api POST /v1/decisions.evaluate"},
		{"GET", "/v1/agents/a%2F1", "api GET /v1/agents/:id"},
		{"PUT", "/v1/events", ""},
		{"GET", "/v1/nowhere", ""},
		{"GET", "/healthz", ""},
	}
	for _, tt := range tests {
		req := httptest.NewRequest(tt.method, tt.path, nil)
		r, ok := rt.Find(req)
		got := ""
		if ok {
			got = r.Service + " " + r.String()
		}
		if got != tt.want {
			t.Errorf("%s %s resolves to %q, want %q", tt.method, tt.path, got, tt.want)
		}
	}
}

// TestParseRefuses: a table that could route a request nowhere or twice
// is refused.
func TestParseRefuses(t *testing.T) {
	for name, in := range map[string]string{
		"empty":          `[]`,
		"not json":       `{`,
		"unknown field":  `[{"method":"GET","path":"/v1/a","service":"api","x":1}]`,
		"bad method":     `[{"method":"FETCH","path":"/v1/a","service":"api"}]`,
		"wildcard":       `[{"method":"GET","path":"/v1/*","service":"api"}]`,
		"relative":       `[{"method":"GET","path":"v1/a","service":"api"}]`,
		"empty segment":  `[{"method":"GET","path":"/v1//a","service":"api"}]`,
		"no service":     `[{"method":"GET","path":"/v1/a","service":""}]`,
		"twice":          `[{"method":"GET","path":"/v1/a","service":"api"},{"method":"GET","path":"/v1/a","service":"risk"}]`,
		"trailing data":  `[{"method":"GET","path":"/v1/a","service":"api"}] []`,
		"service syntax": `[{"method":"GET","path":"/v1/a","service":"Api Server"}]`,
	} {
		if _, err := routes.Parse([]byte(in)); err == nil {
			t.Errorf("%s: Parse accepted %s", name, in)
		}
	}
	tbl, err := routes.Parse(routes.Default().JSON())
	if err != nil || len(tbl) != len(routes.Default()) {
		t.Fatalf("the table does not survive JSON: %v", err)
	}
}

// TestMisdirected: a service serving alone refuses, in the envelope, a
// route the table gives to another service — even one its own router
// would match — and serves its own.
func TestMisdirected(t *testing.T) {
	e := echo.New()
	e.HTTPErrorHandler = httpkit.ErrorHandler(discard())
	e.Pre(routes.Misdirected("api", routes.Default()))
	e.GET("/v1/agents/:id", func(c echo.Context) error { return c.String(http.StatusOK, "agent "+c.Param("id")) })
	for _, tt := range []struct {
		path   string
		status int
		want   string
	}{
		{"/v1/agents/a-1", 200, "agent a-1"},
		{"/v1/agents/profiles", 404, "served by the risk service"},
	} {
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tt.path, nil))
		if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
			t.Errorf("GET %s = %d %s, want %d with %q", tt.path, rec.Code, rec.Body, tt.status, tt.want)
		}
		if tt.status == 404 {
			var env struct {
				Code  string `json:"code"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &env); err != nil || env.Code != "not_found" || env.Error.Code != "NOT_FOUND" {
				t.Errorf("GET %s: not the envelope: %s", tt.path, rec.Body)
			}
		}
	}
}

// TestStaticChildren: the ids that would be shadowed by a static route.
func TestStaticChildren(t *testing.T) {
	if got := routes.Default().StaticChildren("/v1/agents"); len(got) != 1 || got[0] != "profiles" {
		t.Fatalf("static children of /v1/agents: %v, want [profiles]", got)
	}
}

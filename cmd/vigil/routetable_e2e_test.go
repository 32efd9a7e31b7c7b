package main

import (
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/vigilhq/vigil/pkg/routes"
)

var updateRoutes = flag.Bool("update-routes", false, "rewrite pkg/routes/table.json from the services' route registrations")

// TestRouteTableIsTheRegistrations: pkg/routes/table.json, which drives
// the front door (`vigil gateway`, or any proxy configured from it), lists
// exactly the routes each service registers on an echo instance of its
// own, attributed to that service; no two services register the same
// route; and the one echo instance of `vigil dev` serves exactly the
// table. Run with -update-routes after adding a route. An agent id that
// a static route shadows ("profiles") is refused at registration.
func TestRouteTableIsTheRegistrations(t *testing.T) {
	e := newEnv(t)
	var derived routes.Table
	for _, c := range e.st.Components() {
		if c.Routes != nil {
			derived = append(derived, routes.Registered(c.Name, c.Routes)...)
		}
	}
	got, err := routes.Parse(derived.JSON()) // refuses a route registered by two services
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join("..", "..", "pkg", "routes", "table.json")
	if *updateRoutes {
		if err := os.WriteFile(file, got.JSON(), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s (%d routes)", file, len(got))
		return
	}
	want := routes.Default()
	for _, r := range got {
		if !slices.Contains(want, r) {
			t.Errorf("%s (registered by %s) is not in pkg/routes/table.json: go test ./cmd/vigil -run TestRouteTableIsTheRegistrations -update-routes", r, r.Service)
		}
	}
	for _, r := range want {
		if !slices.Contains(got, r) {
			t.Errorf("table.json lists %s for %s, which %s does not register", r, r.Service, r.Service)
		}
	}
	dev := routes.FromEcho(e.st.Echo, "")
	for _, r := range want {
		if !slices.ContainsFunc(dev, func(d routes.Route) bool { return d.String() == r.String() }) {
			t.Errorf("vigil dev does not serve %s", r)
		}
	}
	if len(dev) != len(want) {
		t.Errorf("vigil dev serves %d routes, the table lists %d", len(dev), len(want))
	}
	// An agent named after a static route could never be read: refused.
	checkEnvelope(t, e.post(e.owner, "/v1/agents", map[string]any{"agentId": "profiles"}), 400, "VALIDATION_ERROR", "invalid_request", []pair{{"agentId", "invalid_format"}})
}

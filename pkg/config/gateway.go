package config

import (
	"fmt"
	"net/url"
	"os"

	"github.com/vigilhq/vigil/pkg/routes"
)

// Gateway are the settings of `vigil gateway`: where it listens, the route
// table it serves and the base URL of every service the table names.
type Gateway struct {
	HTTPAddr, LogLevel, LogFormat *string
	// Telemetry traces the gateway's requests (--otel-endpoint).
	Telemetry  Telemetry
	routeTable *string
	upstreams  map[string]*string
}

// AddGateway declares the gateway's settings: --route-table and one
// --<service>-url ($VIGIL_<SERVICE>_URL) per service of the built-in
// table.
func AddGateway(fs *FlagSet) Gateway {
	g := Gateway{HTTPAddr: fs.HTTPAddr(), LogLevel: fs.LogLevel(), LogFormat: fs.LogFormat(), Telemetry: fs.Telemetry(), upstreams: map[string]*string{}}
	g.routeTable = fs.String("route-table", "VIGIL_ROUTE_TABLE", "", "JSON route table to serve (empty: the one built in, `vigil gateway --print-routes` prints it)")
	for _, s := range routes.Default().Services() {
		env, ok := upstreamEnv[s]
		if !ok {
			panic("config: no upstream setting for service " + s + " of the route table")
		}
		g.upstreams[s] = fs.String(s+"-url", env, "", fmt.Sprintf("base URL of the %s service, e.g. http://%s:8080 (required)", s, s))
	}
	return g
}

// upstreamEnv names the environment variable of each service's base URL,
// spelled out so that a search for a variable finds where it is read.
var upstreamEnv = map[string]string{
	"api":      "VIGIL_API_URL",
	"ingest":   "VIGIL_INGEST_URL",
	"risk":     "VIGIL_RISK_URL",
	"ledger":   "VIGIL_LEDGER_URL",
	"notifier": "VIGIL_NOTIFIER_URL",
}

// Table is the route table to serve: --route-table's file, or the built-in
// one.
func (g Gateway) Table() (routes.Table, error) {
	if *g.routeTable == "" {
		return routes.Default(), nil
	}
	b, err := os.ReadFile(*g.routeTable)
	if err != nil {
		return nil, fmt.Errorf("--route-table: %w", err)
	}
	t, err := routes.Parse(b)
	if err != nil {
		return nil, fmt.Errorf("--route-table %s: %w", *g.routeTable, err)
	}
	return t, nil
}

// Upstreams are the services' base URLs given (services left empty are
// missing: the gateway refuses a table that names them).
func (g Gateway) Upstreams() (map[string]*url.URL, error) {
	out := map[string]*url.URL{}
	for s, v := range g.upstreams {
		if *v == "" {
			continue
		}
		u, err := url.Parse(*v)
		if err != nil {
			return nil, fmt.Errorf("--%s-url: %w", s, err)
		}
		out[s] = u
	}
	return out, nil
}

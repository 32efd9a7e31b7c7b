package httpkit

import (
	"log/slog"
	"sync"
	"sync/atomic"
)

// outages reports expected unavailability (a dependency such as
// ClickHouse or the broker down: apperr.Unavailable, answered 503) once
// per change of state instead of once per request: the first 503 for a
// dependency logs a warning, later ones log nothing, and the first request
// that succeeds again on a route that had failed logs the recovery. An
// outage is an operational state, not a bug: it belongs at WARN, and a
// flood of identical lines would bury what else happens meanwhile.
type outages struct {
	log *slog.Logger
	// anyDown lets the success path skip the lock while all is well.
	anyDown atomic.Bool
	mu      sync.Mutex
	// down maps what is unavailable (the error's message) to the routes
	// that reported it.
	down map[string]map[string]bool
}

func newOutages(log *slog.Logger) *outages {
	return &outages{log: log, down: map[string]map[string]bool{}}
}

// failed records that route answered 503 because what is unavailable.
func (o *outages) failed(route, what string, cause error) {
	o.mu.Lock()
	routes, known := o.down[what]
	if !known {
		routes = map[string]bool{}
		o.down[what] = routes
		o.anyDown.Store(true)
	}
	routes[route] = true
	o.mu.Unlock()
	if !known {
		attrs := []any{slog.String("unavailable", what), slog.String("route", route)}
		if cause != nil {
			attrs = append(attrs, slog.String("error", cause.Error()))
		}
		o.log.Warn("dependency unavailable: answering 503 until it returns", attrs...)
	}
}

// succeeded records that route answered without a server error: whatever
// it had reported unavailable is back.
func (o *outages) succeeded(route string) {
	if !o.anyDown.Load() {
		return
	}
	var back []string
	o.mu.Lock()
	for what, routes := range o.down {
		if routes[route] {
			back = append(back, what)
			delete(o.down, what)
		}
	}
	o.anyDown.Store(len(o.down) > 0)
	o.mu.Unlock()
	for _, what := range back {
		o.log.Warn("dependency available again", slog.String("recovered", what), slog.String("route", route))
	}
}

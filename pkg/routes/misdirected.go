package routes

import (
	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Misdirected is the guard a service binary serving alone puts before its
// router (echo's Pre): a request for a route the table gives to another
// service answers 404 in the envelope, naming that service, instead of
// reaching whatever route of this service happens to match it. Without
// it, `GET /v1/agents/profiles` sent to the api's own port fell into the
// api's `/v1/agents/:id` (an agent named "profiles"). `vigil dev` serves
// every route on one router and needs no guard.
func Misdirected(service string, t Table) echo.MiddlewareFunc {
	rt := NewRouter(t)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if r, ok := rt.Find(c.Request()); ok && r.Service != service {
				return apperr.NotFound("%s is served by the %s service, not by %s: send requests to the front door (`vigil gateway`), which routes every path to its service", r, r.Service, service)
			}
			return next(c)
		}
	}
}

package httpkit

import (
	"context"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
)

// Authenticator resolves a bearer token (control.Catalog implements it).
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (auth.Principal, error)
}

// TenantAuthenticator is implemented by authenticators whose credentials
// may span tenants (a person who is a member of several): the tenant the
// request names in x-tenant-id ("" if none) picks one.
type TenantAuthenticator interface {
	AuthenticateTenant(ctx context.Context, token, tenant string) (auth.Principal, error)
}

const principalKey = "vigil.principal"

// TenantHeader, when sent, must name the key's own tenant.
const TenantHeader = "X-Tenant-Id"

// Authenticate requires "Authorization: Bearer <key>" on every request it
// wraps and checks x-tenant-id against the principal's tenant (after
// letting a TenantAuthenticator use it to pick one).
func Authenticate(a Authenticator) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			h := c.Request().Header.Get(echo.HeaderAuthorization)
			scheme, token, ok := strings.Cut(h, " ")
			if h == "" {
				return apperr.Unauthenticated("missing Authorization header (want: Bearer <api key>)")
			}
			if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
				return apperr.Unauthenticated("Authorization header must be: Bearer <api key>")
			}
			t := c.Request().Header.Get(TenantHeader)
			var p auth.Principal
			var err error
			if ta, ok := a.(TenantAuthenticator); ok {
				p, err = ta.AuthenticateTenant(c.Request().Context(), strings.TrimSpace(token), t)
			} else {
				p, err = a.Authenticate(c.Request().Context(), strings.TrimSpace(token))
			}
			if err != nil {
				return err
			}
			if t != "" && t != p.Tenant {
				return apperr.Forbidden("x-tenant-id does not match the API key's tenant")
			}
			c.Set(principalKey, p)
			return next(c)
		}
	}
}

// Require rejects callers who lack permission p (their role's grants; an
// unbound agent key holds fewer, see auth.Principal.Allows). It must run
// after Authenticate.
func Require(p auth.Permission) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			pr := Principal(c)
			if !pr.Allows(p) {
				if pr.Role.Allows(p) {
					return apperr.Forbidden(auth.NotBound)
				}
				return apperr.Forbidden("role " + string(pr.Role) + " may not " + string(p))
			}
			return next(c)
		}
	}
}

// Principal returns the caller set by Authenticate.
func Principal(c echo.Context) auth.Principal {
	p, _ := c.Get(principalKey).(auth.Principal)
	return p
}

// RequireAny rejects callers whose role has none of ps.
func RequireAny(ps ...auth.Permission) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			pr := Principal(c)
			for _, p := range ps {
				if pr.Allows(p) {
					return next(c)
				}
			}
			return apperr.Forbidden("role " + string(pr.Role) + " may not do this")
		}
	}
}

// Compose wraps h in middleware m once, in the order echo applies a
// route's middleware (m[0] outermost). echo builds a route's chain anew on
// every request (a closure per middleware); a hot route registered with
// its chain composed here pays none of that.
func Compose(h echo.HandlerFunc, m ...echo.MiddlewareFunc) echo.HandlerFunc {
	for i := len(m) - 1; i >= 0; i-- {
		h = m[i](h)
	}
	return h
}

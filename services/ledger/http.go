package ledger

import (
	"errors"
	"net/http"
	"strconv"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
)

// Routes registers the ledger's HTTP API under /v1. Every route needs
// ledger:read, and every answer is about the caller's own tenant's log.
func (s *Service) Routes(e *echo.Echo, a httpkit.Authenticator) {
	g := e.Group("/v1", httpkit.Authenticate(a), httpkit.Require(auth.LedgerRead))
	g.GET("/ledger/checkpoint", s.getCheckpoint)
	g.GET("/ledger/key", s.getKey)
	g.GET("/ledger/consistency", s.getConsistency)
	g.GET("/lineage/:id/verify", s.getLineage)
	g.GET("/sessions/:id/evidence", s.getEvidence)
}

func (s *Service) getCheckpoint(c echo.Context) error {
	cp, err := s.LatestCheckpoint(c.Request().Context(), httpkit.Principal(c).Tenant)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, cp)
}

func (s *Service) getKey(c echo.Context) error {
	t := httpkit.Principal(c).Tenant
	return c.JSON(http.StatusOK, map[string]string{"publicKey": s.keys.VerifierKey, "origin": s.Origin(t), "algorithm": "ed25519", "format": "c2sp-signed-note"})
}

func (s *Service) getConsistency(c echo.Context) error {
	var errs []apperr.FieldError
	parse := func(name string, required bool) uint64 {
		v := c.QueryParam(name)
		if v == "" {
			if required {
				errs = append(errs, apperr.FieldError{Path: name, Code: "required", Message: name + " is required"})
			}
			return 0
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			errs = append(errs, apperr.FieldError{Path: name, Code: "invalid_type", Message: name + " must be a non-negative integer"})
		}
		return n
	}
	from, to := parse("from", true), parse("to", false)
	if len(errs) > 0 {
		return apperr.Validation("bad consistency request", errs...)
	}
	out, err := s.ConsistencyProof(c.Request().Context(), httpkit.Principal(c).Tenant, from, to)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Service) getLineage(c echo.Context) error {
	id := c.Param("id")
	if id == "" || len(id) > 256 {
		return apperr.Validation("bad lineage id", apperr.FieldError{Path: "id", Code: "invalid_format", Message: "id must be 1–256 bytes"})
	}
	out, err := s.Lineage(c.Request().Context(), httpkit.Principal(c).Tenant, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Service) getEvidence(c echo.Context) error {
	id := c.Param("id")
	if id == "" || len(id) > 256 {
		return apperr.Validation("bad session id", apperr.FieldError{Path: "id", Code: "invalid_format", Message: "id must be 1–256 bytes"})
	}
	b, err := s.Evidence(c.Request().Context(), httpkit.Principal(c).Tenant, id)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, b)
}

// isMissingTable reports ClickHouse's UNKNOWN_TABLE (a projection that
// was never migrated in this deployment).
func isMissingTable(err error) bool {
	var ex *clickhouse.Exception
	return errors.As(err, &ex) && ex.Code == 60
}

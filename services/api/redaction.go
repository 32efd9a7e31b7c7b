package api

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/redact"
)

// RedactionView is the response of GET/POST /v1/settings/redaction.
type RedactionView struct {
	DisabledClasses []string         `json:"disabledClasses"`
	Patterns        []redact.Pattern `json:"patterns"`
	// EnabledClasses are the built-in classes in force.
	EnabledClasses []string   `json:"enabledClasses"`
	UpdatedAt      *time.Time `json:"updatedAt,omitempty"`
	UpdatedBy      string     `json:"updatedBy,omitempty"`
	Revision       uint64     `json:"revision"`
}

func redactionView(r redact.Record) RedactionView {
	v := RedactionView{DisabledClasses: r.Settings.Disabled, Patterns: r.Settings.Patterns, EnabledClasses: []string{}, UpdatedBy: r.By, Revision: r.Revision}
	if v.DisabledClasses == nil {
		v.DisabledClasses = []string{}
	}
	if v.Patterns == nil {
		v.Patterns = []redact.Pattern{}
	}
	for _, c := range redact.Classes {
		if name := strings.ToLower(string(c)); !slices.Contains(v.DisabledClasses, name) {
			v.EnabledClasses = append(v.EnabledClasses, name)
		}
	}
	if !r.UpdatedAt.IsZero() {
		v.UpdatedAt = &r.UpdatedAt
	}
	return v
}

// safetyRoutes mounts the redaction settings and the LLM judge's
// configuration and usage on the authenticated /v1 group, and starts the
// index of judgements that verdicts are amended from (it lives as long
// as the NATS connection).
func (s *Service) safetyRoutes(g *echo.Group) {
	s.safety.view, s.safety.ledger = judge.NewView(s.deps.JS, s.log), judge.NewLedger(s.deps.JS)
	s.safety.view.Run(context.Background())
	read, manage := httpkit.Require(auth.SettingsRead), httpkit.Require(auth.SettingsManage)
	g.GET("/settings/redaction", s.getRedaction, read)
	g.POST("/settings/redaction", s.setRedaction, manage)
	g.GET("/llm-config", s.getLLMConfig, read)
	g.POST("/llm-config", s.setLLMConfig, manage)
	g.GET("/judge/usage", s.getJudgeUsage, read)
}

// getRedaction answers GET /v1/settings/redaction: the tenant's settings,
// or the defaults (every class on, no pattern) when never set.
func (s *Service) getRedaction(c echo.Context) error {
	tenant := httpkit.Principal(c).Tenant
	r, err := s.deps.Store.Redaction(c.Request().Context(), tenant)
	if errors.Is(err, control.ErrNotFound) {
		return c.JSON(http.StatusOK, redactionView(redact.Record{Tenant: tenant}))
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, redactionView(r))
}

// setRedaction answers POST /v1/settings/redaction: it replaces the
// tenant's settings (the body is the whole new state).
func (s *Service) setRedaction(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	set, err := redact.ParseSettings(body)
	if err != nil {
		return err
	}
	p := httpkit.Principal(c)
	by := p.KeyID
	if by == "" {
		by = p.Member
	}
	r := redact.Record{Tenant: p.Tenant, Settings: set, UpdatedAt: time.Now().UTC(), By: by}
	seq, err := s.deps.Store.PutRedaction(c.Request().Context(), r)
	if err != nil {
		return err
	}
	r.Revision = seq
	return c.JSON(http.StatusOK, redactionView(r))
}

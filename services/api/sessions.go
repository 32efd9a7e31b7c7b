package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/services/api/internal/sessions"
)

func timeParam(c echo.Context, name string) (int64, error) {
	s := c.QueryParam(name)
	if s == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return 0, apperr.Validation(name+" is not a timestamp", apperr.FieldError{Path: name, Code: "invalid_format", Message: name + " must be an RFC 3339 timestamp"})
	}
	return t.UnixMilli(), nil
}

func (s *Service) sessionFilter(c echo.Context) (sessions.Filter, error) {
	var f sessions.Filter
	var err error
	if f.FromMS, err = timeParam(c, "from"); err != nil {
		return f, err
	}
	if f.ToMS, err = timeParam(c, "to"); err != nil {
		return f, err
	}
	if f.FromMS > 0 && f.ToMS > 0 && f.FromMS > f.ToMS {
		return f, apperr.Validation("from is after to", apperr.FieldError{Path: "from", Code: "out_of_range", Message: "from must not be after to"})
	}
	f.AgentID = c.QueryParam("agentId")
	f.Search = c.QueryParam("search")
	if len(f.Search) > 200 {
		return f, apperr.Validation("search is too long", apperr.FieldError{Path: "search", Code: "too_long", Message: "search must be at most 200 bytes"})
	}
	return f, nil
}

func (s *Service) listSessions(c echo.Context) error {
	f, err := s.sessionFilter(c)
	if err != nil {
		return err
	}
	return s.pageSessions(c, f)
}

func (s *Service) agentSessions(c echo.Context) error {
	p := httpkit.Principal(c)
	id := pathID(c)
	if _, err := s.deps.Store.Agent(c.Request().Context(), p.Tenant, id); errors.Is(err, control.ErrNotFound) {
		return apperr.NotFound("agent %q not found", id)
	} else if err != nil {
		return err
	}
	f, err := s.sessionFilter(c)
	if err != nil {
		return err
	}
	f.AgentID = id
	return s.pageSessions(c, f)
}

func (s *Service) pageSessions(c echo.Context, f sessions.Filter) error {
	limit, err := httpkit.Limit(c, 20, 100)
	if err != nil {
		return err
	}
	withRisk, withPolicy, err := includes(c)
	if err != nil {
		return err
	}
	var cur *sessions.SessionCursor
	if c.QueryParam("cursor") != "" {
		cur = &sessions.SessionCursor{}
		if err := httpkit.DecodeCursor(c, cur); err != nil {
			return err
		}
	}
	ctx, cancel := chx.QueryContext(c.Request().Context(), s.cfg.QueryTimeout)
	defer cancel()
	page, more, err := s.sessions.List(ctx, httpkit.Principal(c).Tenant, f, cur, limit)
	if err != nil {
		return chx.ReadError("session store", err)
	}
	var next any
	if more {
		next = sessions.NextCursor(page)
	}
	if withRisk || withPolicy {
		return s.includePage(c, page, more, next, withRisk, withPolicy)
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(page, more, next))
}

// SessionDetail is a session with a page of its events.
type SessionDetail struct {
	sessions.Session
	Events     []sessions.Event `json:"events"`
	NextCursor *string          `json:"nextCursor"`
	HasMore    bool             `json:"hasMore"`
}

func (s *Service) getSession(c echo.Context) error {
	limit, err := httpkit.Limit(c, 100, 1000)
	if err != nil {
		return err
	}
	var cur *sessions.EventCursor
	if c.QueryParam("cursor") != "" {
		cur = &sessions.EventCursor{}
		if err := httpkit.DecodeCursor(c, cur); err != nil {
			return err
		}
	}
	ctx, cancel := chx.QueryContext(c.Request().Context(), s.cfg.QueryTimeout)
	defer cancel()
	tenant, id := httpkit.Principal(c).Tenant, pathID(c)
	sess, found, err := s.sessions.Get(ctx, tenant, id)
	if err != nil {
		return chx.ReadError("session store", err)
	}
	if !found {
		return apperr.NotFound("session %q not found", id)
	}
	events, more, err := s.sessions.Events(ctx, tenant, id, cur, limit)
	if err != nil {
		return chx.ReadError("session store", err)
	}
	d := SessionDetail{Session: sess, Events: events, HasMore: more}
	if d.Events == nil {
		d.Events = []sessions.Event{}
	}
	if more {
		next := httpkit.EncodeCursor(sessions.NextEventCursor(events))
		d.NextCursor = &next
	}
	return c.JSON(http.StatusOK, d)
}

// Export is the downloadable form of a whole session. Integrity.SHA256 is
// the hex SHA-256 of the JSON encoding of Events exactly as it appears in
// the file, so a recipient can check the events were not altered.
type Export struct {
	Format     string           `json:"format"`
	ExportedAt string           `json:"exportedAt"`
	Session    sessions.Session `json:"session"`
	Events     json.RawMessage  `json:"events"`
	Integrity  Integrity        `json:"integrity"`
}

// Integrity describes the export's content hash.
type Integrity struct {
	Algorithm string `json:"algorithm"`
	Covers    string `json:"covers"`
	SHA256    string `json:"sha256"`
}

func (s *Service) exportSession(c echo.Context) error {
	ctx, cancel := chx.QueryContext(c.Request().Context(), 4*s.cfg.QueryTimeout)
	defer cancel()
	tenant, id := httpkit.Principal(c).Tenant, pathID(c)
	sess, found, err := s.sessions.Get(ctx, tenant, id)
	if err != nil {
		return chx.ReadError("session store", err)
	}
	if !found {
		return apperr.NotFound("session %q not found", id)
	}
	var (
		all []sessions.Event
		cur *sessions.EventCursor
	)
	for {
		page, more, err := s.sessions.Events(ctx, tenant, id, cur, 5000)
		if err != nil {
			return chx.ReadError("session store", err)
		}
		all = append(all, page...)
		if len(all) > s.cfg.MaxExportEvents {
			return apperr.TooLarge(fmt.Sprintf("session has more than %d events; page through GET /v1/sessions/%s instead", s.cfg.MaxExportEvents, id))
		}
		if !more {
			break
		}
		next := sessions.NextEventCursor(page)
		cur = &next
	}
	if all == nil {
		all = []sessions.Event{}
	}
	events, err := json.Marshal(all)
	if err != nil {
		return fmt.Errorf("encode export: %w", err)
	}
	sum := sha256.Sum256(events)
	body, err := json.Marshal(Export{
		Format: "vigil.session-export.v1", ExportedAt: time.Now().UTC().Format(time.RFC3339),
		Session: sess, Events: events,
		Integrity: Integrity{Algorithm: "sha256", Covers: "events", SHA256: hex.EncodeToString(sum[:])},
	})
	if err != nil {
		return fmt.Errorf("encode export: %w", err)
	}
	whole := sha256.Sum256(body)
	h := c.Response().Header()
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="session-%s.json"`, safeFilename(id)))
	h.Set("Content-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(whole[:])+":")
	h.Set("X-Vigil-Events-SHA256", hex.EncodeToString(sum[:]))
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, body)
}

func safeFilename(s string) string {
	b := []byte(s)
	for i, ch := range b {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '-' || ch == '_' || ch == '.') {
			b[i] = '_'
		}
	}
	return string(bytes.TrimLeft(b, "."))
}

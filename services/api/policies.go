package api

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"regexp"
	"slices"

	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// PolicyView is a policy as the API returns it.
type PolicyView struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Enabled     bool         `json:"enabled"`
	Priority    int          `json:"priority"`
	Rules       []rules.Rule `json:"rules"`
	// Inputs are the declared context fields (docs/policies.md).
	Inputs          map[string]rules.InputSpec `json:"inputs,omitempty"`
	Conditions      map[string]string          `json:"conditions,omitempty"`
	DefaultDecision string                     `json:"defaultDecision,omitempty"`
	Status          string                     `json:"status"`
	Version         uint64                     `json:"version"`
	CreatedAt       time.Time                  `json:"createdAt"`
	UpdatedAt       time.Time                  `json:"updatedAt"`
	// InForce is true only for an active, enabled policy.
	InForce bool `json:"inForce"`
	// Proposal is set on drafts: the policy they would change.
	Proposal *rules.Proposal `json:"proposal,omitempty"`
	// Tests are the policy's test cases (POST /v1/policies/test runs them).
	Tests []rules.TestCase `json:"tests,omitempty"`
}

func viewPolicy(r rules.Record) PolicyView {
	return PolicyView{
		ID: r.ID, Name: r.Doc.Name, Description: r.Doc.Description, Enabled: r.Doc.IsEnabled(), Priority: r.Doc.Priority,
		Rules: r.Doc.Rules, Inputs: r.Doc.Inputs, Conditions: r.Doc.Conditions, DefaultDecision: r.Doc.DefaultDecision,
		Status: r.Status, Version: r.Version, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		InForce: r.Status == rules.StatusActive && r.Doc.IsEnabled(), Proposal: r.Proposal, Tests: r.Doc.Tests,
	}
}

var policyIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

// newID returns prefix followed by 12 random hex digits (a policy id).
func newID(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// compile parses nothing: it checks a normalized document compiles, so
// that only policies that will evaluate are ever stored.
func (s *Service) compile(d rules.Document) error {
	_, err := s.compiler.Compile(d)
	return err
}

// readPolicy reads a policy document from the request as createPolicy
// stores it: parsed (JSON or YAML, the seeds' shapes), unknown fields
// warned about, the id checked or, when the document names none,
// generated (named says which).
func (s *Service) readPolicy(c echo.Context) (doc rules.Document, ignored []string, named bool, err error) {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return doc, nil, false, err
	}
	doc, ignored, err = rules.ParseCompat(body)
	if err != nil {
		return doc, nil, false, err
	}
	httpkit.WarnIgnored(c, ignored)
	if doc.ID != "" {
		if !policyIDRe.MatchString(doc.ID) {
			return doc, nil, true, apperr.Validation("policy id is not valid", apperr.FieldError{Path: "id", Code: "invalid_format", Message: "id must be letters, digits and _.- (at most 128), starting with a letter or digit"})
		}
		return doc, ignored, true, nil
	}
	doc.ID = newID("pol_")
	if !doc.RuleList() && (len(doc.Conditions) > 0 || doc.DefaultDecision != "") {
		// The Kaplaix form's rule is named after the policy; Parse
		// named it "default" because the id did not exist yet.
		doc.Rules = nil
		if err := doc.Normalize(); err != nil {
			return doc, nil, false, err
		}
	}
	return doc, ignored, false, nil
}

// validatePolicy parses and compiles a policy document exactly as
// createPolicy would, and stores nothing: the console's editor calls it
// as the author types. An invalid document is the usual 400 envelope.
func (s *Service) validatePolicy(c echo.Context) error {
	doc, ignored, named, err := s.readPolicy(c)
	if err != nil {
		return err
	}
	if err := s.compile(doc); err != nil {
		return err
	}
	if !named {
		doc.ID = ""
	}
	if ignored == nil {
		ignored = []string{}
	}
	return c.JSON(http.StatusOK, map[string]any{"valid": true, "id": doc.ID, "rules": len(doc.Rules), "ignored": ignored})
}

func (s *Service) createPolicy(c echo.Context) error {
	doc, _, _, err := s.readPolicy(c)
	if err != nil {
		return err
	}
	if err := s.compile(doc); err != nil {
		return err
	}
	p := httpkit.Principal(c)
	now := time.Now().UTC()
	rec := rules.Record{ID: doc.ID, Tenant: p.Tenant, Doc: doc, Status: rules.StatusActive, CreatedAt: now, UpdatedAt: now, By: p.Actor()}
	rev, err := s.deps.Store.PutPolicy(c.Request().Context(), rec, 0)
	if errors.Is(err, control.ErrConflict) {
		return apperr.Conflict("policy %q already exists", doc.ID)
	}
	if err != nil {
		return err
	}
	if err := s.applied(c, rev); err != nil {
		return err
	}
	rec.Version = rev
	c.Response().Header().Set(echo.HeaderLocation, "/v1/policies/"+rec.ID)
	return c.JSON(http.StatusCreated, viewPolicy(rec))
}

func (s *Service) policyOr404(c echo.Context) (rules.Record, error) {
	p := httpkit.Principal(c)
	r, err := s.deps.Store.Policy(c.Request().Context(), p.Tenant, pathID(c))
	if errors.Is(err, control.ErrNotFound) {
		return r, apperr.NotFound("policy %q not found", pathID(c))
	}
	return r, err
}

func (s *Service) getPolicy(c echo.Context) error {
	r, err := s.policyOr404(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, viewPolicy(r))
}

var patchableDocFields = map[string]bool{
	"name": true, "description": true, "enabled": true, "priority": true, "rules": true, "inputs": true, "conditions": true, "defaultDecision": true, "tests": true,
}

func (s *Service) patchPolicy(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	var patch map[string]json.RawMessage
	if err := json.Unmarshal(body, &patch); err != nil || patch == nil {
		return apperr.Validation("body must be a JSON object", apperr.FieldError{Path: "", Code: "malformed_json", Message: "expected a JSON object"})
	}
	var ignored []string
	for k := range patch {
		if k == "id" || k == "status" || k == "version" {
			delete(patch, k)
			continue
		}
		if !patchableDocFields[k] {
			// As in ParseCompat: foreign metadata is ignored, a near miss
			// of a field that decides is refused.
			if rules.LooksLikeDocumentKey(k) {
				return apperr.Validation("unknown field", apperr.FieldError{Path: k, Code: "unknown_field", Message: "unknown field " + k + " (a misspelling?)"})
			}
			ignored = append(ignored, k)
			delete(patch, k)
		}
	}
	slices.Sort(ignored)
	httpkit.WarnIgnored(c, ignored)
	return s.updatePolicy(c, func(r *rules.Record) error {
		cur, _ := json.Marshal(r.Doc)
		var merged map[string]json.RawMessage
		_ = json.Unmarshal(cur, &merged)
		for k, v := range patch {
			if string(v) == "null" {
				delete(merged, k)
			} else {
				merged[k] = v
			}
		}
		_, patchRules := patch["rules"]
		_, kaplaix := merged["conditions"]
		var list []rules.Rule
		_ = json.Unmarshal(merged["rules"], &list) // Parse reports a bad one
		ruleList := rules.Document{Rules: list}.RuleList()
		if _, ok := merged["defaultDecision"]; ok && !ruleList {
			kaplaix = true
		}
		_, patchConditions := patch["conditions"]
		switch {
		case ruleList:
			// The Kaplaix rule list keeps its defaultDecision with new rules.
		case patchRules && !patchConditions:
			// Replacing the rules leaves the Kaplaix form.
			delete(merged, "conditions")
			delete(merged, "defaultDecision")
		case !patchRules && kaplaix:
			// The Kaplaix form's rule is derived from the conditions,
			// never carried over.
			delete(merged, "rules")
		}
		b, _ := json.Marshal(merged)
		doc, err := rules.Parse(b)
		if err != nil {
			return err
		}
		doc.ID = r.ID
		if err := s.compile(doc); err != nil {
			return err
		}
		r.Doc = doc
		return nil
	})
}

// updatePolicy applies change to the current version and stores the
// result as a new version, retrying if another writer got in between.
func (s *Service) updatePolicy(c echo.Context, change func(*rules.Record) error) error {
	ctx := c.Request().Context()
	for range 5 {
		r, err := s.policyOr404(c)
		if err != nil {
			return err
		}
		expect := r.Version
		if err := change(&r); err != nil {
			return err
		}
		r.UpdatedAt, r.By = time.Now().UTC(), httpkit.Principal(c).KeyID
		rev, err := s.deps.Store.PutPolicy(ctx, r, expect)
		if errors.Is(err, control.ErrConflict) {
			continue
		}
		if err != nil {
			return err
		}
		if err := s.applied(c, rev); err != nil {
			return err
		}
		r.Version = rev
		return c.JSON(http.StatusOK, viewPolicy(r))
	}
	return apperr.Conflict("policy %q is being changed concurrently; retry", pathID(c))
}

func (s *Service) archivePolicy(c echo.Context) error {
	return s.updatePolicy(c, func(r *rules.Record) error {
		r.Status = rules.StatusArchived
		return nil
	})
}

func (s *Service) listPolicies(c echo.Context) error {
	limit, err := httpkit.Limit(c, 20, 100)
	if err != nil {
		return err
	}
	var after string
	if err := httpkit.DecodeCursor(c, &after); err != nil {
		return err
	}
	status := c.QueryParam("status")
	if status != "" && status != rules.StatusActive && status != rules.StatusArchived && status != rules.StatusDraft {
		return apperr.Validation("status is not valid", apperr.FieldError{Path: "status", Code: "invalid_format", Message: "status must be active, archived or draft"})
	}
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	all, _ := s.deps.Catalog.Policies(httpkit.Principal(c).Tenant)
	var page []PolicyView
	more := false
	for _, r := range all {
		if r.ID <= after || (status != "" && r.Status != status) {
			continue
		}
		if len(page) == limit {
			more = true
			break
		}
		page = append(page, viewPolicy(r))
	}
	var next string
	if more {
		next = page[len(page)-1].ID
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(page, more, next))
}

// OrgPolicyView is the org policy as the API returns it.
type OrgPolicyView struct {
	rules.OrgPolicy
	UpdatedAt *time.Time `json:"updatedAt"`
}

func (s *Service) getOrgPolicy(c echo.Context) error {
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	r := s.deps.Catalog.Org(httpkit.Principal(c).Tenant)
	v := OrgPolicyView{OrgPolicy: r.Org}
	if !r.UpdatedAt.IsZero() {
		v.UpdatedAt = &r.UpdatedAt
	}
	return c.JSON(http.StatusOK, v)
}

// setOrgPolicy accepts {mode, tools, destinations, publishers} and the
// nested form {mode, blocklist: {tools, …}} / {mode, allowlist: {…}}.
func (s *Service) setOrgPolicy(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	type lists struct {
		Tools        []string `json:"tools"`
		Destinations []string `json:"destinations"`
		Publishers   []string `json:"publishers"`
	}
	var in struct {
		Mode string `json:"mode"`
		lists
		Blocklist *lists `json:"blocklist"`
		Allowlist *lists `json:"allowlist"`
	}
	// Kaizen's document names no fields: unknown ones are ignored (with a
	// Warning), as on every compatibility door.
	dec := json.NewDecoder(bytes.NewReader(httpkit.IgnoreUnknown(c, body, httpkit.JSONFields(&in)...)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil {
		return apperr.Validation("org policy body is not valid", apperr.FieldError{Path: "", Code: "invalid_format", Message: err.Error()})
	}
	l := in.lists
	switch {
	case in.Blocklist != nil && (in.Mode == "" || in.Mode == rules.OrgBlocklist):
		in.Mode, l = rules.OrgBlocklist, *in.Blocklist
	case in.Allowlist != nil && (in.Mode == "" || in.Mode == rules.OrgAllowlist):
		in.Mode, l = rules.OrgAllowlist, *in.Allowlist
	}
	if in.Mode != rules.OrgOff && in.Mode != rules.OrgBlocklist && in.Mode != rules.OrgAllowlist {
		return apperr.Validation("mode is not valid", apperr.FieldError{Path: "mode", Code: "invalid_format", Message: "mode must be off, blocklist or allowlist"})
	}
	org := rules.OrgPolicy{Mode: in.Mode, Tools: nonNil(l.Tools), Destinations: nonNil(l.Destinations), Publishers: nonNil(l.Publishers)}
	for name, list := range map[string][]string{"tools": org.Tools, "destinations": org.Destinations, "publishers": org.Publishers} {
		if len(list) > 10000 {
			return apperr.Validation(name+" is too long", apperr.FieldError{Path: name, Code: "too_long", Message: "at most 10000 entries"})
		}
		for _, e := range list {
			if e == "" || len(e) > 256 {
				return apperr.Validation(name+" has an invalid entry", apperr.FieldError{Path: name, Code: "invalid_format", Message: "entries must be 1-256 bytes"})
			}
		}
	}
	p := httpkit.Principal(c)
	now := time.Now().UTC()
	seq, err := s.deps.Store.PutOrgPolicy(c.Request().Context(), rules.OrgRecord{Tenant: p.Tenant, Org: org, UpdatedAt: now, By: p.Actor()})
	if err != nil {
		return err
	}
	if err := s.applied(c, seq); err != nil {
		return err
	}
	return c.JSON(http.StatusOK, OrgPolicyView{OrgPolicy: org, UpdatedAt: &now})
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// applied waits until the catalog reflects a CONTROL write at seq before
// the write is acknowledged, so that the caller's next decision (made
// from the catalog the policy service shares in one process) sees it.
func (s *Service) applied(c echo.Context, seq uint64) error {
	return s.deps.Catalog.WaitFor(c.Request().Context(), seq)
}

package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/services/api/internal/sessions"
)

// SessionWith is a listed session with what ?include=risk,policy adds
// (Kaplaix): the risk service's current score and the strictest policy
// decision taken in the session.
type SessionWith struct {
	sessions.Session
	RiskSummary    *RiskSummary    `json:"riskSummary,omitempty"`
	PolicyDecision *PolicyDecision `json:"policyDecision,omitempty"`
}

// RiskSummary is the session's score as the risk service last published
// it (GET /v1/sessions/:id/risk has the full explanation); null when the
// session has not been scored.
type RiskSummary struct {
	Score      int      `json:"score"`
	RiskLevel  string   `json:"riskLevel"`
	Severity   string   `json:"severity"`
	TopFactors []string `json:"topFactors"`
}

// PolicyDecision is the strictest outcome of the session's decisions.
type PolicyDecision struct {
	Decision  string `json:"decision"`
	Decisions uint64 `json:"decisions"`
	Blocked   uint64 `json:"blocked"`
}

// includes parses ?include=risk,policy.
func includes(c echo.Context) (risk, policy bool, err error) {
	v := c.QueryParam("include")
	if v == "" {
		return false, false, nil
	}
	for _, part := range strings.Split(v, ",") {
		switch strings.TrimSpace(part) {
		case "risk":
			risk = true
		case "policy":
			policy = true
		default:
			return false, false, apperr.Validation("include is not valid", apperr.FieldError{Path: "include", Code: "invalid_format", Message: "include must list risk and/or policy"})
		}
	}
	return risk, policy, nil
}

// withIncludes reads the extras for one page of sessions (at most 100)
// from the risk service's and the policy service's ClickHouse tables.
func (s *Service) withIncludes(ctx context.Context, tenant string, page []sessions.Session, risk, policy bool) ([]SessionWith, error) {
	out := make([]SessionWith, len(page))
	ids := make([]string, len(page))
	at := map[string]int{}
	for i, ss := range page {
		out[i].Session, ids[i] = ss, ss.SessionID
		at[ss.SessionID] = i
	}
	if len(ids) == 0 {
		return out, nil
	}
	ctx, cancel := chx.QueryContext(ctx, s.cfg.QueryTimeout)
	defer cancel()
	if risk {
		rows, err := s.deps.CH.Query(ctx, `SELECT session_id, argMax(score, version), argMax(severity, version), argMax(record, version)
			FROM risk_session_scores WHERE tenant_id = ? AND has(?, session_id) GROUP BY session_id LIMIT 1000`, tenant, ids)
		if err != nil {
			return nil, chx.ReadError("risk store", err)
		}
		for rows.Next() {
			var (
				id, sev, rec string
				score        uint8
			)
			if err := rows.Scan(&id, &score, &sev, &rec); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan risk: %w", err)
			}
			var r struct {
				Factors []struct {
					Code string `json:"code"`
				} `json:"factors"`
			}
			_ = json.Unmarshal([]byte(rec), &r)
			rs := &RiskSummary{Score: int(score), RiskLevel: sev, Severity: sev, TopFactors: []string{}}
			for _, f := range r.Factors {
				if len(rs.TopFactors) < 3 {
					rs.TopFactors = append(rs.TopFactors, f.Code)
				}
			}
			out[at[id]].RiskSummary = rs
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, chx.ReadError("risk store", err)
		}
	}
	if policy {
		rows, err := s.deps.CH.Query(ctx, `SELECT session_id,
				max(multiIf(outcome = 'block', 3, outcome = 'require_approval', 2, outcome = 'warn', 1, 0)),
				uniqExact(decision_id), uniqExactIf(decision_id, outcome IN ('block', 'require_approval'))
			FROM decisions WHERE tenant_id = ? AND has(?, session_id) AND source != 'baseline' GROUP BY session_id LIMIT 1000`, tenant, ids)
		if err != nil {
			return nil, chx.ReadError("decision store", err)
		}
		names := []string{"allow", "warn", "require_approval", "block"}
		for rows.Next() {
			var (
				id        string
				strictest uint8
				n, b      uint64
			)
			if err := rows.Scan(&id, &strictest, &n, &b); err != nil {
				rows.Close()
				return nil, fmt.Errorf("scan policy: %w", err)
			}
			out[at[id]].PolicyDecision = &PolicyDecision{Decision: names[min(int(strictest), 3)], Decisions: n, Blocked: b}
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return nil, chx.ReadError("decision store", err)
		}
	}
	return out, nil
}

// includePage answers a session list with ?include=.
func (s *Service) includePage(c echo.Context, page []sessions.Session, more bool, next any, risk, policy bool) error {
	with, err := s.withIncludes(c.Request().Context(), httpkit.Principal(c).Tenant, page, risk, policy)
	if err != nil {
		return err
	}
	return c.JSON(200, httpkit.NewPage(with, more, next))
}

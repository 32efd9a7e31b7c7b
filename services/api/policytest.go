package api

// A draft policy's test cases and its replay against recorded decisions
// (docs/policies.md#test-cases, #replay-in-the-api): both compile the
// draft exactly as POST /v1/policies would and evaluate with pkg/policy's
// Pack, the engine the policy service decides with. Nothing is stored.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// Replay bounds (docs/api.md): how far back, how many recorded decisions
// one request re-evaluates (newest first) and how many changed ones it
// lists.
const (
	MaxReplayDays      = 30
	DefaultReplayDays  = 7
	MaxReplayDecisions = 10000
	MaxReplayChanges   = 500
	DefaultReplayLimit = 100
)

// TestReport is the answer of POST /v1/policies/test.
type TestReport struct {
	Valid    bool   `json:"valid"`
	ID       string `json:"id"`
	PackHash string `json:"packHash"`
	Passed   int    `json:"passed"`
	Failed   int    `json:"failed"`
	// Cases are in the document's order.
	Cases []rules.CaseResult `json:"cases"`
}

// testPolicy compiles the draft and runs its tests: section, the draft
// alone in the pack (a policy's tests are its unit tests: other policies
// of the tenant do not change their answer).
func (s *Service) testPolicy(c echo.Context) error {
	doc, _, _, err := s.readPolicy(c)
	if err != nil {
		return err
	}
	comp, err := s.compiler.Compile(doc)
	if err != nil {
		return err
	}
	ten := httpkit.Principal(c).Tenant
	pack, err := rules.NewPack(ten, []rules.Versioned{{Version: 1, Compiled: comp}}, nil)
	if err != nil {
		return err
	}
	rep := TestReport{Valid: true, ID: doc.ID, PackHash: pack.Hash, Cases: []rules.CaseResult{}}
	for _, tc := range doc.Tests {
		pc, err := tc.Prepare(ten)
		if err != nil { // Normalize checked every case; fail closed anyway
			return apperr.Validation("test case is invalid", apperr.FieldError{Path: "tests", Code: "invalid_test", Message: err.Error()})
		}
		res := pc.Run(pack)
		if res.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Cases = append(rep.Cases, res)
	}
	return c.JSON(http.StatusOK, rep)
}

// ReplayOutcome is one side of a changed decision.
type ReplayOutcome struct {
	Decision    string   `json:"decision"`
	ReasonCodes []string `json:"reasonCodes"`
	Rules       []string `json:"rules"`
	// Refused lists the draft's declared-input violations when it would
	// refuse the request before deciding (decision invalid_request).
	Refused []string `json:"refused,omitempty"`
}

// ReplayChange is a recorded decision the draft decides differently.
type ReplayChange struct {
	DecisionID string        `json:"decisionId"`
	At         time.Time     `json:"at"`
	AgentID    string        `json:"agentId"`
	SessionID  string        `json:"sessionId,omitempty"`
	Tool       string        `json:"tool"`
	Source     string        `json:"source"`
	Old        ReplayOutcome `json:"old"`
	New        ReplayOutcome `json:"new"`
}

// ReplayCount counts changes from one outcome to another.
type ReplayCount struct {
	From  string `json:"from"`
	To    string `json:"to"`
	Count int    `json:"count"`
}

// ReplayReport is the answer of POST /v1/policies/replay.
type ReplayReport struct {
	ID       string    `json:"id"`
	PackHash string    `json:"packHash"`
	Days     int       `json:"days"`
	Since    time.Time `json:"since"`
	Examined int       `json:"examined"`
	// Unchanged counts decisions with the same outcome, ReasonsChanged
	// those of them whose reason codes differ.
	Unchanged      int `json:"unchanged"`
	ReasonsChanged int `json:"reasonsChanged"`
	Changed        int `json:"changed"`
	// RuleErrors counts decisions on which a draft rule failed to
	// evaluate (it failed closed, or was skipped by onError: skip).
	RuleErrors  int           `json:"ruleErrors"`
	Undecodable int           `json:"undecodable"`
	ByChange    []ReplayCount `json:"byChange"`
	// Changes lists changed decisions, newest first, at most limit.
	Changes []ReplayChange `json:"changes"`
	// ChangesTruncated: more decisions changed than are listed.
	ChangesTruncated bool `json:"changesTruncated"`
	// Truncated: the window held more decisions than one replay
	// examines (MaxReplayDecisions, newest first); those older than
	// OldestExamined were not replayed.
	Truncated      bool       `json:"truncated"`
	OldestExamined *time.Time `json:"oldestExamined,omitempty"`
}

// boundedInt reads an integer query parameter in [lo, hi].
func boundedInt(c echo.Context, name string, def, lo, hi int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, apperr.Validation(name+" is out of range", apperr.FieldError{Path: name, Code: "out_of_range", Message: fmt.Sprintf("%s must be an integer from %d to %d", name, lo, hi)})
	}
	return n, nil
}

// draftPack is the tenant's pack as it would be with the draft applied:
// its active policies, the draft replacing the one with its id (or
// added).
func (s *Service) draftPack(ctx context.Context, ten string, doc rules.Document) (*rules.Pack, error) {
	draft, err := s.compiler.Compile(doc)
	if err != nil {
		return nil, err
	}
	if err := s.deps.Catalog.Sync(ctx); err != nil {
		return nil, err
	}
	recs, _ := s.deps.Catalog.Policies(ten)
	vs := []rules.Versioned{{Version: 0, Compiled: draft}}
	for _, r := range recs {
		if r.Status != rules.StatusActive || r.ID == doc.ID {
			continue
		}
		d := r.Doc
		d.ID = r.ID
		comp, err := s.compiler.Compile(d)
		if err != nil {
			// Stored policies compiled when written; the policy service
			// skips one that no longer does, and so does the replay.
			s.log.Warn("stored policy no longer compiles; left out of the replay", "tenant", ten, "policy", r.ID, "error", err.Error())
			continue
		}
		vs = append(vs, rules.Versioned{Version: r.Version, Compiled: comp})
	}
	return rules.NewPack(ten, vs, nil)
}

// replayPolicy re-evaluates the caller's tenant's recorded decisions of
// the last ?days with the tenant's pack as it would be with the draft,
// and reports which would change.
func (s *Service) replayPolicy(c echo.Context) error {
	days, err := boundedInt(c, "days", DefaultReplayDays, 1, MaxReplayDays)
	if err != nil {
		return err
	}
	limit, err := boundedInt(c, "limit", DefaultReplayLimit, 1, MaxReplayChanges)
	if err != nil {
		return err
	}
	max, err := boundedInt(c, "max", MaxReplayDecisions, 1, MaxReplayDecisions)
	if err != nil {
		return err
	}
	doc, _, _, err := s.readPolicy(c)
	if err != nil {
		return err
	}
	ten := httpkit.Principal(c).Tenant
	pack, err := s.draftPack(c.Request().Context(), ten, doc)
	if err != nil {
		return err
	}
	org := s.deps.Catalog.Org(ten).Org
	if org.Mode == "" {
		org.Mode = rules.OrgOff
	}
	since := time.Now().UTC().Add(-time.Duration(days) * 24 * time.Hour).Truncate(time.Second)
	rep := ReplayReport{ID: doc.ID, PackHash: pack.Hash, Days: days, Since: since, ByChange: []ReplayCount{}, Changes: []ReplayChange{}}
	ctx, cancel := queryContext(c, s.cfg.QueryTimeout)
	defer cancel()
	err = s.replayRecorded(ctx, ten, since, max, func(rec rules.DecisionRecord, ok bool) {
		rep.add(pack, org, rec, ok, limit)
	})
	if err != nil {
		return err
	}
	slices.SortFunc(rep.ByChange, func(a, b ReplayCount) int {
		if a.Count != b.Count {
			return b.Count - a.Count
		}
		if a.From != b.From {
			if a.From < b.From {
				return -1
			}
			return 1
		}
		if a.To < b.To {
			return -1
		}
		return 0
	})
	return c.JSON(http.StatusOK, rep)
}

// replayRecorded streams the tenant's decisions since a time, newest
// first, each once (the projection may hold a redelivered copy until it
// merges), to each; at most max+1 rows are read, and the one past max
// only marks the window as larger than max. ok is false for a row whose
// record cannot be decoded.
func (s *Service) replayRecorded(ctx context.Context, ten string, since time.Time, max int, each func(rules.DecisionRecord, bool)) error {
	q := fmt.Sprintf("SELECT record FROM decisions WHERE tenant_id = ? AND at_time >= ? ORDER BY at_time DESC, at_ms DESC, decision_id DESC LIMIT 1 BY decision_id LIMIT %d", max+1)
	rows, err := s.deps.CH.Query(ctx, q, ten, since)
	if err != nil {
		return chx.ReadError("decision store", err)
	}
	defer rows.Close()
	n := 0
	var raw string
	for rows.Next() {
		if n == max {
			each(rules.DecisionRecord{}, false) // the marker: more than max
			return nil
		}
		n++
		if err := rows.Scan(&raw); err != nil {
			return fmt.Errorf("scan decision: %w", err)
		}
		var rec rules.DecisionRecord
		if err := json.Unmarshal([]byte(raw), &rec); err != nil || rec.Tenant != ten {
			each(rules.DecisionRecord{}, true)
			continue
		}
		each(rec, true)
	}
	if err := rows.Err(); err != nil {
		return chx.ReadError("decision store", err)
	}
	return nil
}

func ruleNames(ms []rules.Match) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, rules.MatchName(m))
	}
	return out
}

// add tallies one recorded decision re-decided with pack. A zero record
// with ok is an undecodable row; with !ok, the marker that the window
// held more decisions than were examined.
func (rep *ReplayReport) add(pack *rules.Pack, org rules.OrgPolicy, rec rules.DecisionRecord, ok bool, limit int) {
	if !ok {
		rep.Truncated = true
		return
	}
	if rec.ID == "" {
		rep.Undecodable++
		return
	}
	rep.Examined++
	at := rec.At
	rep.OldestExamined = &at
	old := ReplayOutcome{Decision: rec.Decision.Outcome.String(), ReasonCodes: rec.Decision.ReasonCodes, Rules: ruleNames(rec.Decision.Matches)}
	var nu ReplayOutcome
	var reasonsDiffer bool
	if bad := pack.CheckInput(rec.Input); len(bad) > 0 && rec.Source != rules.SourceEvent {
		// The draft's declared inputs would refuse this request before
		// deciding (an ingested event is never refused, it is judged).
		nu = ReplayOutcome{Decision: rules.ExpectRejected, ReasonCodes: []string{}, Rules: []string{}}
		for _, fe := range bad {
			nu.Refused = append(nu.Refused, fe.Message)
		}
	} else {
		d := rules.Replay(pack, rec, org)
		if len(d.Errors) > 0 {
			rep.RuleErrors++
		}
		nu = ReplayOutcome{Decision: d.Outcome.String(), ReasonCodes: d.ReasonCodes, Rules: ruleNames(d.Matches)}
		reasonsDiffer = !slices.Equal(d.ReasonCodes, rec.Decision.ReasonCodes)
	}
	if nu.Decision == old.Decision {
		rep.Unchanged++
		if reasonsDiffer {
			rep.ReasonsChanged++
		}
		return
	}
	rep.Changed++
	i := slices.IndexFunc(rep.ByChange, func(x ReplayCount) bool { return x.From == old.Decision && x.To == nu.Decision })
	if i < 0 {
		rep.ByChange = append(rep.ByChange, ReplayCount{From: old.Decision, To: nu.Decision})
		i = len(rep.ByChange) - 1
	}
	rep.ByChange[i].Count++
	if len(rep.Changes) == limit {
		rep.ChangesTruncated = true
		return
	}
	agentID := rec.AgentID
	if agentID == "" {
		agentID = rec.Input.Agent.ID
	}
	rep.Changes = append(rep.Changes, ReplayChange{
		DecisionID: rec.ID, At: rec.At, AgentID: agentID, SessionID: rec.SessionID, Tool: rec.Input.Action.Tool,
		Source: rec.Source, Old: old, New: nu,
	})
}

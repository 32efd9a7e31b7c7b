// Package score computes a session's risk score from the records behind
// it. The score is a sum of capped per-dimension points (docs/risk.md), so
// it depends only on which records the session holds, never on the order
// they arrived in or on the wall clock: the same records give the same
// score.
package score

import (
	"fmt"
	"slices"
	"sort"
)

// Version names the formula; it is part of every published score so that
// a change of formula is visible in the record.
const Version = "risk-v1"

// Dimensions.
const (
	DimPolicy      = "policy"
	DimBehavior    = "behavior"
	DimReliability = "reliability"
)

// Factor codes outside the anomaly types (which are factor codes too).
const (
	FactorBlocked  = "blocked_actions"
	FactorApproval = "approval_required"
	FactorWarned   = "policy_warnings"
	FactorFailed   = "failed_actions"
)

// dimensionCap bounds each dimension's contribution.
var dimensionCap = map[string]int{DimPolicy: 40, DimBehavior: 40, DimReliability: 20}

// dimensionOrder fixes the output order.
var dimensionOrder = []string{DimPolicy, DimBehavior, DimReliability}

// Weights: points per record for each factor; anomaly factors weigh by
// the anomaly's severity.
var (
	policyWeights   = map[string]int{FactorBlocked: 25, FactorApproval: 15, FactorWarned: 5}
	severityWeights = map[string]int{"low": 5, "medium": 10, "high": 20, "critical": 30}
	failedWeight    = 4
)

// MaxRecords caps the record ids kept per factor (the smallest ids, so
// the list too is independent of arrival order).
const MaxRecords = 50

// Record is one thing that happened in a session, as the scorer sees it.
type Record struct {
	ID      string
	AtMS    int64
	Outcome string // allow | warn | require_approval | block
	Error   bool
	// Paused is a block caused by the agent being paused, which says
	// nothing about the session's risk.
	Paused bool
}

// Anomaly is a baseline anomaly raised in the session.
type Anomaly struct {
	ID, Type, Severity string
}

type factor struct {
	dimension, code, description string
	weight                       int
	count                        int64
	records                      []string
}

func (f *factor) add(id string) {
	f.count++
	i, found := slices.BinarySearch(f.records, id)
	if found || i >= MaxRecords {
		return
	}
	f.records = slices.Insert(f.records, i, id)
	if len(f.records) > MaxRecords {
		f.records = f.records[:MaxRecords]
	}
}

// Session accumulates the records of one session.
type Session struct {
	Tenant, AgentID, SessionID string
	Actions                    int64
	FirstMS, LastMS            int64
	factors                    map[string]*factor
	seen                       map[string]bool
}

// NewSession returns an empty session.
func NewSession(tenant, agentID, sessionID string) *Session {
	return &Session{Tenant: tenant, AgentID: agentID, SessionID: sessionID, factors: map[string]*factor{}, seen: map[string]bool{}}
}

func (s *Session) factor(dim, code, desc string, weight int) *factor {
	f := s.factors[code]
	if f == nil {
		f = &factor{dimension: dim, code: code, description: desc, weight: weight}
		s.factors[code] = f
	}
	return f
}

// Add folds one record and the anomalies it raised into the session. A
// record already added (redelivery) changes nothing.
func (s *Session) Add(r Record, anomalies []Anomaly) {
	if s.seen[r.ID] {
		return
	}
	s.seen[r.ID] = true
	s.Actions++
	if s.FirstMS == 0 || r.AtMS < s.FirstMS {
		s.FirstMS = r.AtMS
	}
	s.LastMS = max(s.LastMS, r.AtMS)
	switch {
	case r.Outcome == "block" && !r.Paused:
		s.factor(DimPolicy, FactorBlocked, "actions policy blocked", policyWeights[FactorBlocked]).add(r.ID)
	case r.Outcome == "require_approval":
		s.factor(DimPolicy, FactorApproval, "actions held for human approval", policyWeights[FactorApproval]).add(r.ID)
	case r.Outcome == "warn":
		s.factor(DimPolicy, FactorWarned, "actions policy warned about", policyWeights[FactorWarned]).add(r.ID)
	}
	if r.Error {
		s.factor(DimReliability, FactorFailed, "actions that failed", failedWeight).add(r.ID)
	}
	for _, a := range anomalies {
		w, ok := severityWeights[a.Severity]
		if !ok {
			w = severityWeights["medium"]
		}
		s.factor(DimBehavior, a.Type, "baseline anomaly: "+a.Type, w).add(a.ID)
	}
}

// Factor is one scored signal with the records behind it.
type Factor struct {
	Dimension   string   `json:"dimension"`
	Code        string   `json:"code"`
	Description string   `json:"description"`
	Weight      int      `json:"weight"`
	Count       int64    `json:"count"`
	Points      int64    `json:"points"`
	Records     []string `json:"records"`
}

// Dimension is one capped part of the score.
type Dimension struct {
	Name    string `json:"name"`
	Score   int    `json:"score"`
	Max     int    `json:"max"`
	Factors int    `json:"factors"`
}

// Result is a session's score with its explanation.
type Result struct {
	Score           int         `json:"score"`
	Severity        string      `json:"severity"`
	Version         string      `json:"formula"`
	Actions         int64       `json:"actions"`
	Dimensions      []Dimension `json:"dimensions"`
	Factors         []Factor    `json:"factors"`
	Recommendations []string    `json:"recommendations"`
}

// Compute scores the session as it stands.
func (s *Session) Compute() Result {
	res := Result{Version: Version, Actions: s.Actions, Factors: []Factor{}, Recommendations: []string{}}
	points := map[string]int64{}
	count := map[string]int{}
	codes := make([]string, 0, len(s.factors))
	for c := range s.factors {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		f := s.factors[c]
		p := int64(f.weight) * f.count
		points[f.dimension] += p
		count[f.dimension]++
		res.Factors = append(res.Factors, Factor{Dimension: f.dimension, Code: f.code, Description: f.description,
			Weight: f.weight, Count: f.count, Points: p, Records: slices.Clone(f.records)})
	}
	sort.SliceStable(res.Factors, func(i, j int) bool {
		if res.Factors[i].Points != res.Factors[j].Points {
			return res.Factors[i].Points > res.Factors[j].Points
		}
		return res.Factors[i].Code < res.Factors[j].Code
	})
	for _, d := range dimensionOrder {
		sc := int(min(points[d], int64(dimensionCap[d])))
		res.Score += sc
		res.Dimensions = append(res.Dimensions, Dimension{Name: d, Score: sc, Max: dimensionCap[d], Factors: count[d]})
	}
	res.Score = min(res.Score, 100)
	res.Severity = SeverityOf(res.Score)
	res.Recommendations = recommend(s.factors)
	return res
}

// SeverityOf maps a score to the notifier's severities.
func SeverityOf(score int) string {
	switch {
	case score == 0:
		return "info"
	case score < 25:
		return "low"
	case score < 50:
		return "medium"
	case score < 75:
		return "high"
	default:
		return "critical"
	}
}

func recommend(fs map[string]*factor) []string {
	out := []string{}
	has := func(codes ...string) bool {
		for _, c := range codes {
			if fs[c] != nil {
				return true
			}
		}
		return false
	}
	if has(FactorBlocked) {
		out = append(out, fmt.Sprintf("Review the %d blocked action(s): the agent attempted something a policy forbids.", fs[FactorBlocked].count))
	}
	if has(FactorApproval) {
		out = append(out, "Decide the actions waiting for approval in the Decision Desk.")
	}
	if has("undeclared_tool", "undeclared_destination") {
		out = append(out, "Update the agent's declaration (POST /v1/agents/{agent}/manifest) or learn the verdict if the new tool or destination is expected.")
	}
	if has("new_kind", "new_tool", "new_destination", "new_publisher") {
		out = append(out, "Confirm the new behaviour with the agent's owner; triage it as false_positive to stop it being raised again.")
	}
	if has("rate_spike") {
		out = append(out, "Check for a loop or runaway retries: the agent is acting far faster than its usual rate.")
	}
	if has("error_burst", FactorFailed) {
		out = append(out, "Investigate the failing actions: repeated errors can mean a broken tool or probing.")
	}
	if has("block_burst") {
		out = append(out, "Consider pausing the agent: it keeps attempting blocked actions.")
	}
	if len(out) == 0 {
		out = append(out, "No action needed.")
	}
	return out
}

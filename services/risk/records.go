package risk

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sort"
	"time"

	"github.com/vigilhq/vigil/pkg/anomaly"
	"github.com/vigilhq/vigil/services/risk/internal/baseline"
	"github.com/vigilhq/vigil/services/risk/internal/score"
)

// SourceBaseline is the verdict source of anomalies.
const SourceBaseline = anomaly.SourceBaseline

// Anomaly is what the risk service publishes on streams.AnomalySubject
// (defined in pkg/anomaly, which the ledger reads too).
type Anomaly = anomaly.Anomaly

// SessionScore is what the risk service publishes on
// streams.SessionScoreSubject whenever a session's score changes; the
// last one is the session's current risk (GET /v1/sessions/:id/risk).
type SessionScore struct {
	ID         string    `json:"id"`
	Tenant     string    `json:"tenant"`
	AgentID    string    `json:"agentId"`
	SessionID  string    `json:"sessionId"`
	Severity   string    `json:"severity"`
	Summary    string    `json:"summary"`
	OccurredAt time.Time `json:"occurredAt"`
	Score      int       `json:"score"`

	Formula         string            `json:"formula"`
	Actions         int64             `json:"actions"`
	Dimensions      []score.Dimension `json:"dimensions"`
	Factors         []score.Factor    `json:"factors"`
	Recommendations []string          `json:"recommendations"`
	FirstEventAt    time.Time         `json:"firstEventAt"`
	LastEventAt     time.Time         `json:"lastEventAt"`
	// DecisionID is the record whose arrival changed the score and
	// PolicySeq its POLICY sequence (the version of this score).
	DecisionID string `json:"decisionId"`
	PolicySeq  uint64 `json:"policySeq"`
}

// Reset is the fact, on streams.BaselineResetSubject, that an agent's
// baseline is forgotten: every decision up to POLICY sequence PolicySeq is
// dropped from it, on every instance and on every rebuild.
type Reset struct {
	ID        string    `json:"id"`
	Tenant    string    `json:"tenant"`
	AgentID   string    `json:"agentId"`
	PolicySeq uint64    `json:"policySeq"`
	At        time.Time `json:"at"`
	By        string    `json:"by,omitempty"`
}

// Profile is an agent's baseline as GET /v1/agents/profiles shows it.
type Profile struct {
	AgentID      string     `json:"agentId"`
	Observations int64      `json:"observations"`
	Depth        string     `json:"observationDepth"`
	Warm         bool       `json:"warm"`
	FirstSeenAt  *time.Time `json:"firstSeenAt"`
	LastSeenAt   *time.Time `json:"lastSeenAt"`
	Errors       int64      `json:"errors"`
	Blocks       int64      `json:"blocks"`
	HourlyRate   float64    `json:"hourlyRate"`
	PeakHour     int64      `json:"peakHourCount"`
	Kinds        []Seen     `json:"kinds"`
	Tools        []Seen     `json:"tools"`
	Destinations []Seen     `json:"destinations"`
	Publishers   []Seen     `json:"publishers"`
	Resets       int        `json:"resets"`
}

// Seen is one value of a baseline dimension.
type Seen struct {
	Value       string    `json:"value"`
	Count       int64     `json:"count"`
	FirstSeenAt time.Time `json:"firstSeenAt"`
	LastSeenAt  time.Time `json:"lastSeenAt"`
}

func anomalyID(decisionID, typ, value string) string {
	h := sha256.Sum256([]byte(decisionID + "\x00" + typ + "\x00" + value))
	return "anm_" + hex.EncodeToString(h[:10])
}

func ms(t int64) time.Time { return time.UnixMilli(t).UTC() }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only plain data types are marshalled here
	}
	return b
}

// depth grades how much a baseline has seen.
func depth(n int64, warmup int) string {
	switch {
	case n == 0:
		return "none"
	case n < int64(warmup):
		return "learning"
	case n < int64(10*max(warmup, 1)):
		return "shallow"
	default:
		return "deep"
	}
}

func profileOf(a *baseline.Agent, warmup int) Profile {
	p := Profile{AgentID: a.AgentID, Observations: a.Observations, Depth: depth(a.Observations, warmup),
		Warm: a.Observations >= int64(warmup), Errors: a.Errors, Blocks: a.Blocks,
		HourlyRate: a.HourlyRate(), PeakHour: a.PeakHour(), Resets: a.ResetCount,
		Kinds: seen(a.Kinds), Tools: seen(a.Tools), Destinations: seen(a.Destinations), Publishers: seen(a.Publishers)}
	if a.Observations > 0 {
		f, l := ms(a.FirstMS), ms(a.LastMS)
		p.FirstSeenAt, p.LastSeenAt = &f, &l
	}
	return p
}

func seen(m map[string]*baseline.Seen) []Seen {
	out := make([]Seen, 0, len(m))
	for v, s := range m {
		out = append(out, Seen{Value: v, Count: s.Count, FirstSeenAt: ms(s.FirstMS), LastSeenAt: ms(s.LastMS)})
	}
	sortSeen(out)
	return out
}

func sortSeen(s []Seen) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].Count != s[j].Count {
			return s[i].Count > s[j].Count
		}
		return s[i].Value < s[j].Value
	})
}

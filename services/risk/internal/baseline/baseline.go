// Package baseline learns what one agent normally does and says, for each
// new observation, how it departs from that. It is a pure function of the
// observations fed to it, in order: no clocks, no randomness, no I/O, so
// that replaying a stream rebuilds the same baselines and raises the same
// anomalies (the property the risk service's restart test checks).
package baseline

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
)

// Anomaly types, stable: they are reason codes on verdicts and part of
// every anomaly signature.
const (
	NewKind               = "new_kind"
	NewTool               = "new_tool"
	NewDestination        = "new_destination"
	NewPublisher          = "new_publisher"
	UndeclaredTool        = "undeclared_tool"
	UndeclaredDestination = "undeclared_destination"
	RateSpike             = "rate_spike"
	ErrorBurst            = "error_burst"
	BlockBurst            = "block_burst"
)

// Severities, in the notifier's vocabulary.
const (
	SeverityInfo     = "info"
	SeverityLow      = "low"
	SeverityMedium   = "medium"
	SeverityHigh     = "high"
	SeverityCritical = "critical"
)

// SeverityOf is the fixed severity of each anomaly type.
func SeverityOf(typ string) string {
	switch typ {
	case NewPublisher:
		return SeverityLow
	case NewKind, NewTool, UndeclaredTool, RateSpike:
		return SeverityMedium
	default: // new or undeclared destination, bursts
		return SeverityHigh
	}
}

// Config holds the detection thresholds; docs/risk.md explains each.
type Config struct {
	// Warmup is how many observations an agent needs before novelty and
	// rate spikes are flagged: until then everything is "normal" because
	// nothing is known yet.
	Warmup int
	// SpikeFactor and SpikeMin: an hour is a spike once its count reaches
	// SpikeFactor × the median of the agent's earlier active hours and at
	// least SpikeMin; SpikeHistory earlier active hours are needed.
	SpikeFactor  float64
	SpikeMin     int
	SpikeHistory int
	// BurstCount errors (or blocks) within BurstWindowMS of event time
	// make a burst.
	BurstCount    int
	BurstWindowMS int64
	// HourBuckets bounds the hourly history kept per agent.
	HourBuckets int
}

// DefaultConfig is what a deployment gets unless it says otherwise.
func DefaultConfig() Config {
	return Config{Warmup: 20, SpikeFactor: 3, SpikeMin: 30, SpikeHistory: 3, BurstCount: 5, BurstWindowMS: 60_000, HourBuckets: 168}
}

// Validate reports a threshold that would make detection meaningless.
func (c Config) Validate() error {
	switch {
	case c.Warmup < 0:
		return fmt.Errorf("baseline: Warmup must not be negative")
	case c.SpikeFactor <= 1 || c.SpikeMin < 1 || c.SpikeHistory < 1:
		return fmt.Errorf("baseline: SpikeFactor must exceed 1, SpikeMin and SpikeHistory must be positive")
	case c.BurstCount < 2 || c.BurstWindowMS <= 0:
		return fmt.Errorf("baseline: BurstCount must be at least 2 and BurstWindowMS positive")
	case c.HourBuckets < c.SpikeHistory+1:
		return fmt.Errorf("baseline: HourBuckets must exceed SpikeHistory")
	}
	return nil
}

// Observation is one action of an agent, as the risk service reads it off
// a recorded decision.
type Observation struct {
	// ID is the decision id; anomaly ids derive from it.
	ID        string
	SessionID string
	AtMS      int64
	Kind      string
	Tool      string
	// Destination is the target host.
	Destination string
	Publisher   string
	// Declared is true when the agent had a declaration at the time;
	// DeclaredTools and DeclaredDestinations are then what it allows.
	Declared             bool
	DeclaredTools        []string
	DeclaredDestinations []string
	// Error is a failed action (response status ≥ 400 or an error
	// category); Blocked an action policy blocked or held for approval
	// for a reason other than the agent being paused.
	Error   bool
	Blocked bool
}

// Seen is what a baseline knows about one value.
type Seen struct {
	Count   int64 `json:"count"`
	FirstMS int64 `json:"firstSeenMs"`
	LastMS  int64 `json:"lastSeenMs"`
}

// Anomaly is one departure from the baseline with the evidence for it.
type Anomaly struct {
	Type  string `json:"type"`
	Value string `json:"value,omitempty"`
	// Signature identifies "the same anomaly again" for false-positive
	// suppression: agent, type and value (never a time bucket).
	Signature string         `json:"signature"`
	Severity  string         `json:"severity"`
	Summary   string         `json:"summary"`
	Evidence  map[string]any `json:"evidence"`
}

// Agent is one agent's baseline.
type Agent struct {
	Tenant       string
	AgentID      string
	Observations int64
	FirstMS      int64
	LastMS       int64
	Kinds        map[string]*Seen
	Tools        map[string]*Seen
	Destinations map[string]*Seen
	Publishers   map[string]*Seen
	Errors       int64
	Blocks       int64
	// hours counts observations per epoch hour (AtMS / 3.6e6), bounded.
	hours map[int64]int64
	// recentErrors and recentBlocks hold event times inside the burst
	// window; burstUntil stops one burst from being raised twice.
	recentErrors, recentBlocks []int64
	errorBurstTo, blockBurstTo int64
	flagged                    map[string]bool // once-per-baseline anomalies
	spikeHours                 map[int64]bool
	ResetCount                 int
	LastResetID                string
}

// New returns an empty baseline.
func New(tenant, agentID string) *Agent {
	return &Agent{
		Tenant: tenant, AgentID: agentID,
		Kinds: map[string]*Seen{}, Tools: map[string]*Seen{}, Destinations: map[string]*Seen{}, Publishers: map[string]*Seen{},
		hours: map[int64]int64{}, flagged: map[string]bool{}, spikeHours: map[int64]bool{},
	}
}

// Reset forgets everything learned, as if the agent were new; the reset
// itself is remembered so it is not applied twice.
func (a *Agent) Reset(resetID string) {
	n := a.ResetCount + 1
	*a = *New(a.Tenant, a.AgentID)
	a.ResetCount, a.LastResetID = n, resetID
}

// Signature is the suppression key of an anomaly of typ about value.
func Signature(tenant, agentID, typ, value string) string {
	h := sha256.New()
	for _, s := range []string{tenant, agentID, "baseline", typ, value} {
		h.Write([]byte(s))
		h.Write([]byte{0})
	}
	return "sig_" + hex.EncodeToString(h.Sum(nil)[:12])
}

// Observe folds o into the baseline and returns the anomalies it raises,
// in a fixed order. Anomalies are judged against the baseline as it was
// before o.
func (a *Agent) Observe(o Observation, cfg Config) []Anomaly {
	var out []Anomaly
	raise := func(typ, value, flagKey, summary string, ev map[string]any) {
		if flagKey != "" {
			if a.flagged[flagKey] {
				return
			}
			a.flagged[flagKey] = true
		}
		ev["observations"] = a.Observations
		out = append(out, Anomaly{Type: typ, Value: value, Signature: Signature(a.Tenant, a.AgentID, typ, value),
			Severity: SeverityOf(typ), Summary: summary, Evidence: ev})
	}
	warm := a.Observations >= int64(cfg.Warmup)

	// Novelty: the first time a value is seen after warm-up. A declared
	// value is expected, so it is never novel.
	novel := []struct {
		typ, label, v string
		seen          map[string]*Seen
		declared      []string
	}{
		{NewKind, "action kind", o.Kind, a.Kinds, nil},
		{NewTool, "tool", o.Tool, a.Tools, o.DeclaredTools},
		{NewDestination, "destination", o.Destination, a.Destinations, o.DeclaredDestinations},
		{NewPublisher, "publisher", o.Publisher, a.Publishers, nil},
	}
	if warm {
		for _, n := range novel {
			if n.v == "" || n.seen[n.v] != nil || (o.Declared && slices.Contains(n.declared, n.v)) {
				continue
			}
			raise(n.typ, n.v, "", fmt.Sprintf("new %s %q after %d observations", n.label, n.v, a.Observations),
				map[string]any{"known": keys(n.seen)})
		}
	}
	// Declaration: a tool or destination the agent did not declare,
	// raised once per value per baseline (a reset re-arms it).
	if o.Declared {
		if o.Tool != "" && !slices.Contains(o.DeclaredTools, o.Tool) {
			raise(UndeclaredTool, o.Tool, UndeclaredTool+"\x00"+o.Tool, fmt.Sprintf("tool %q is not in the agent's declaration", o.Tool),
				map[string]any{"declaredTools": sorted(o.DeclaredTools)})
		}
		if o.Destination != "" && !slices.Contains(o.DeclaredDestinations, o.Destination) {
			raise(UndeclaredDestination, o.Destination, UndeclaredDestination+"\x00"+o.Destination,
				fmt.Sprintf("destination %q is not in the agent's declaration", o.Destination),
				map[string]any{"declaredDestinations": sorted(o.DeclaredDestinations)})
		}
	}

	// Fold o in.
	a.Observations++
	if a.FirstMS == 0 || o.AtMS < a.FirstMS {
		a.FirstMS = o.AtMS
	}
	if o.AtMS > a.LastMS {
		a.LastMS = o.AtMS
	}
	for _, n := range novel {
		if n.v == "" {
			continue
		}
		s := n.seen[n.v]
		if s == nil {
			s = &Seen{FirstMS: o.AtMS, LastMS: o.AtMS}
			n.seen[n.v] = s
		}
		s.Count++
		s.FirstMS, s.LastMS = min(s.FirstMS, o.AtMS), max(s.LastMS, o.AtMS)
	}

	// Rate: this hour against the median of earlier active hours.
	hour := o.AtMS / 3_600_000
	a.hours[hour]++
	a.trimHours(cfg.HourBuckets)
	if warm && !a.spikeHours[hour] {
		var hist []int64
		for h, n := range a.hours {
			if h < hour {
				hist = append(hist, n)
			}
		}
		if len(hist) >= cfg.SpikeHistory {
			med := median(hist)
			limit := max(int64(cfg.SpikeMin), int64(cfg.SpikeFactor*float64(med)+0.999999))
			if cur := a.hours[hour]; cur >= limit {
				a.spikeHours[hour] = true
				raise(RateSpike, "", "", fmt.Sprintf("%d actions this hour against a median of %d", cur, med),
					map[string]any{"hourCount": cur, "medianHourCount": med, "threshold": limit, "historyHours": len(hist)})
			}
		}
	}

	// Bursts of errors or blocks within the window of event time.
	if o.Error {
		a.Errors++
		a.recentErrors = window(append(a.recentErrors, o.AtMS), o.AtMS, cfg.BurstWindowMS)
		if len(a.recentErrors) >= cfg.BurstCount && o.AtMS > a.errorBurstTo {
			a.errorBurstTo = o.AtMS + cfg.BurstWindowMS
			raise(ErrorBurst, "", "", fmt.Sprintf("%d failed actions within %ds", len(a.recentErrors), cfg.BurstWindowMS/1000),
				map[string]any{"count": len(a.recentErrors), "windowMs": cfg.BurstWindowMS})
		}
	}
	if o.Blocked {
		a.Blocks++
		a.recentBlocks = window(append(a.recentBlocks, o.AtMS), o.AtMS, cfg.BurstWindowMS)
		if len(a.recentBlocks) >= cfg.BurstCount && o.AtMS > a.blockBurstTo {
			a.blockBurstTo = o.AtMS + cfg.BurstWindowMS
			raise(BlockBurst, "", "", fmt.Sprintf("%d blocked actions within %ds", len(a.recentBlocks), cfg.BurstWindowMS/1000),
				map[string]any{"count": len(a.recentBlocks), "windowMs": cfg.BurstWindowMS})
		}
	}
	return out
}

// HourlyRate is the mean number of observations per active hour kept.
func (a *Agent) HourlyRate() float64 {
	if len(a.hours) == 0 {
		return 0
	}
	var n int64
	for _, c := range a.hours {
		n += c
	}
	return float64(n) / float64(len(a.hours))
}

// PeakHour is the largest hourly count kept.
func (a *Agent) PeakHour() int64 {
	var p int64
	for _, c := range a.hours {
		p = max(p, c)
	}
	return p
}

func (a *Agent) trimHours(keep int) {
	if len(a.hours) <= keep {
		return
	}
	hs := make([]int64, 0, len(a.hours))
	for h := range a.hours {
		hs = append(hs, h)
	}
	slices.Sort(hs)
	for _, h := range hs[:len(hs)-keep] {
		delete(a.hours, h)
		delete(a.spikeHours, h)
	}
}

// window keeps the times within w of now (times arrive in stream order,
// which is nearly but not exactly event-time order, so it filters rather
// than slicing off a prefix).
func window(ts []int64, now, w int64) []int64 {
	out := ts[:0]
	for _, t := range ts {
		if t > now-w && t <= now {
			out = append(out, t)
		}
	}
	return out
}

func median(xs []int64) int64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

func keys(m map[string]*Seen) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	if len(out) > 20 {
		out = out[:20]
	}
	return out
}

func sorted(s []string) []string {
	out := slices.Clone(s)
	sort.Strings(out)
	if out == nil {
		out = []string{}
	}
	return out
}

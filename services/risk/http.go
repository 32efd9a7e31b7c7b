package risk

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Routes mounts the risk endpoints on e. /v1/agents/profiles is a static
// path, so echo prefers it to the api's /v1/agents/:id.
func (s *Service) Routes(e *echo.Echo) {
	g := e.Group("/v1", httpkit.Authenticate(s.deps.Catalog))
	read, write := httpkit.Require(auth.RiskRead), httpkit.Require(auth.AgentsWrite)
	g.GET("/agents/profiles", s.profiles, read)
	g.POST("/agents/:id/reset", s.reset, write)
	g.GET("/sessions/:id/risk", s.sessionRisk, read)
	if s.deps.CH != nil {
		g.GET("/metrics/timeseries", s.timeseries, read)
	}
}

// AgentProfile is one agent in GET /v1/agents/profiles (Kaizen): its
// activity, how deep the baseline's observation is, its declaration and a
// summary of the baseline.
type AgentProfile struct {
	AgentID     string             `json:"agentId"`
	Name        string             `json:"name"`
	Status      string             `json:"status"`
	Paused      bool               `json:"paused"`
	Declaration *agent.Declaration `json:"declaration"`
	Activity    Activity           `json:"activity"`
	// ObservationDepth is none, learning (inside the warm-up), shallow or
	// deep; Observations is the count behind it.
	ObservationDepth string          `json:"observationDepth"`
	Observations     int64           `json:"observations"`
	Warm             bool            `json:"warm"`
	Baseline         BaselineSummary `json:"baseline"`
	Resets           int             `json:"resets"`
}

// Activity is when and how fast an agent acts.
type Activity struct {
	FirstSeenAt *time.Time `json:"firstSeenAt"`
	LastSeenAt  *time.Time `json:"lastSeenAt"`
	HourlyRate  float64    `json:"hourlyRate"`
	PeakHour    int64      `json:"peakHourCount"`
	Errors      int64      `json:"errors"`
	Blocks      int64      `json:"blocks"`
}

// BaselineSummary lists what the baseline has seen.
type BaselineSummary struct {
	Kinds        []Seen `json:"kinds"`
	Tools        []Seen `json:"tools"`
	Destinations []Seen `json:"destinations"`
	Publishers   []Seen `json:"publishers"`
}

// Baselines asks every partition for the tenant's baselines (agentID
// empty: all agents). It fails when a partition has no owner right now.
func (s *Service) Baselines(ctx context.Context, tenant, agentID string) (map[string]Profile, error) {
	var parts []int
	if agentID != "" {
		parts = []int{PartitionOf(tenant, agentID, s.cfg.Partitions)}
	}
	out := map[string]Profile{}
	err := askPartitions(ctx, s, "profiles", profilesRequest{Tenant: tenant, AgentID: agentID}, parts, func(ps []Profile) {
		for _, p := range ps {
			out[p.AgentID] = p
		}
	})
	if err != nil {
		return nil, apperr.Unavailable("baselines are being rebuilt; retry shortly", time.Second, err)
	}
	return out, nil
}

// askPartitions sends req to verb of each partition in parts (every
// partition when parts is nil), concurrently, and hands each decoded
// answer to fold (one call at a time). It returns every partition that
// did not answer.
func askPartitions[Resp any](ctx context.Context, s *Service, verb string, req any, parts []int, fold func(Resp)) error {
	if parts == nil {
		parts = make([]int, s.cfg.Partitions)
		for i := range parts {
			parts[i] = i
		}
	}
	data := mustJSON(req)
	var (
		mu   sync.Mutex
		errs []error
		wg   sync.WaitGroup
	)
	for _, i := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			msg, err := s.deps.NC.RequestWithContext(ctx, rpcSubject(verb, s.cfg.Partitions, i), data)
			var r Resp
			if err == nil {
				err = json.Unmarshal(msg.Data, &r)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, fmt.Errorf("partition %d: %w", i, err))
				return
			}
			fold(r)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (s *Service) rpcContext(c echo.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(c.Request().Context(), min(s.cfg.QueryTimeout, 3*time.Second))
}

func (s *Service) profiles(c echo.Context) error {
	tenant := httpkit.Principal(c).Tenant
	if id := c.QueryParam("agentId"); id != "" && !event.ValidID(id, event.MaxAgentIDLen) {
		return apperr.Validation("agentId is not valid", apperr.FieldError{Path: "agentId", Code: event.CodeInvalid, Message: "agentId is not a valid agent id"})
	}
	ctx, cancel := s.rpcContext(c)
	defer cancel()
	base, err := s.Baselines(ctx, tenant, c.QueryParam("agentId"))
	if err != nil {
		return err
	}
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	known := map[string]agent.Agent{}
	for after := ""; ; {
		batch, more := s.deps.Catalog.Agents(tenant, after, 500)
		for _, a := range batch {
			if q := c.QueryParam("agentId"); q == "" || q == a.AgentID {
				known[a.AgentID] = a
			}
			after = a.AgentID
		}
		if !more || len(batch) == 0 {
			break
		}
	}
	ids := make([]string, 0, len(known)+len(base))
	for id := range known {
		ids = append(ids, id)
	}
	for id := range base {
		if _, ok := known[id]; !ok {
			ids = append(ids, id)
		}
	}
	sort.Strings(ids)
	out := make([]AgentProfile, 0, len(ids))
	for _, id := range ids {
		p, ok := base[id]
		if !ok {
			p = Profile{AgentID: id, Depth: depth(0, s.cfg.Baseline.Warmup), Kinds: []Seen{}, Tools: []Seen{}, Destinations: []Seen{}, Publishers: []Seen{}}
		}
		ap := AgentProfile{AgentID: id, Name: id, Status: agent.StatusActive, ObservationDepth: p.Depth, Observations: p.Observations, Warm: p.Warm,
			Activity: Activity{FirstSeenAt: p.FirstSeenAt, LastSeenAt: p.LastSeenAt, HourlyRate: p.HourlyRate, PeakHour: p.PeakHour, Errors: p.Errors, Blocks: p.Blocks},
			Baseline: BaselineSummary{Kinds: p.Kinds, Tools: p.Tools, Destinations: p.Destinations, Publishers: p.Publishers}, Resets: p.Resets}
		if a, ok := known[id]; ok {
			ap.Name, ap.Status, ap.Paused, ap.Declaration = a.Name, a.Status, a.Settings.Paused, a.Declaration
		}
		out = append(out, ap)
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, false, nil))
}

// ResetResult answers POST /v1/agents/:id/reset.
type ResetResult struct {
	AgentID   string    `json:"agentId"`
	Reset     bool      `json:"reset"`
	ResetID   string    `json:"resetId"`
	PolicySeq uint64    `json:"policySeq"`
	At        time.Time `json:"at"`
}

func (s *Service) reset(c echo.Context) error {
	p := httpkit.Principal(c)
	id := c.Param("id")
	if !event.ValidID(id, event.MaxAgentIDLen) {
		return apperr.NotFound("agent %q not found", id)
	}
	if err := s.deps.Catalog.Sync(c.Request().Context()); err != nil {
		return err
	}
	if _, ok := s.deps.Catalog.Agent(p.Tenant, id); !ok {
		return apperr.NotFound("agent %q not found", id)
	}
	var b [10]byte
	_, _ = rand.Read(b[:])
	r := Reset{ID: "rst_" + hex.EncodeToString(b[:]), Tenant: p.Tenant, AgentID: id, At: time.Now().UTC(), By: p.KeyID}
	out, err := s.Reset(c.Request().Context(), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, ResetResult{AgentID: id, Reset: true, ResetID: out.ID, PolicySeq: out.PolicySeq, At: out.At})
}

// Reset records r. The owning partition records it at the point it has
// reached and applies it before answering; when no instance owns the
// partition right now, it is recorded at POLICY's last sequence and
// applied when the partition is rebuilt. Either way it is on RISK, acked,
// before Reset returns.
func (s *Service) Reset(ctx context.Context, r Reset) (Reset, error) {
	rctx, cancel := context.WithTimeout(ctx, min(s.cfg.QueryTimeout, 3*time.Second))
	msg, err := s.deps.NC.RequestWithContext(rctx, rpcSubject("reset", s.cfg.Partitions, PartitionOf(r.Tenant, r.AgentID, s.cfg.Partitions)), mustJSON(r))
	cancel()
	if err == nil {
		var out struct {
			Reset
			Error string `json:"error"`
		}
		if err := json.Unmarshal(msg.Data, &out); err != nil || out.Error != "" {
			return Reset{}, apperr.Unavailable("the reset was not recorded; retry", time.Second, fmt.Errorf("%v %s", err, out.Error))
		}
		return out.Reset, nil
	}
	if !errors.Is(err, nats.ErrNoResponders) && !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, nats.ErrTimeout) {
		return Reset{}, err
	}
	st, err := s.deps.JS.Stream(ctx, streams.Policy)
	if err == nil {
		r.PolicySeq, err = natsx.LastSequence(ctx, st)
	} else if errors.Is(err, jetstream.ErrStreamNotFound) {
		err = nil
	}
	if err != nil {
		return Reset{}, err
	}
	pctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if _, err := s.deps.JS.Publish(pctx, streams.BaselineResetSubject(r.Tenant, r.AgentID), mustJSON(r), jetstream.WithMsgID(r.ID)); err != nil {
		return Reset{}, apperr.Unavailable("the reset was not recorded; retry", time.Second, err)
	}
	return r, nil
}

// SessionRisk is GET /v1/sessions/:id/risk: the session's last published
// score. RiskLevel repeats Severity under the Kaplaix name.
type SessionRisk struct {
	SessionScore
	RiskLevel string `json:"riskLevel"`
}

// LatestScore returns a session's current score, read as the last message
// on its subject (RISK allows direct gets), or an apperr not-found.
func (s *Service) LatestScore(ctx context.Context, tenant, sessionID string) (SessionScore, error) {
	st, err := s.deps.JS.Stream(ctx, streams.Risk)
	if err != nil {
		return SessionScore{}, err
	}
	m, err := st.GetLastMsgForSubject(ctx, streams.SessionScoreSubject(tenant, sessionID))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return SessionScore{}, apperr.NotFound("session %q has no risk score (unknown session, or no records yet)", sessionID)
	}
	if err != nil {
		return SessionScore{}, err
	}
	var sc SessionScore
	if err := json.Unmarshal(m.Data, &sc); err != nil {
		return SessionScore{}, fmt.Errorf("decode session score: %w", err)
	}
	return sc, nil
}

// ScoreNow returns a session's score computed on request: every
// partition folds in the tenant's decisions recorded so far (after, with
// a consistency token, the policy service has judged the token's events),
// and the one holding the session answers with the score it has
// published or is publishing for it — the risk formula applied by the
// only holder of its inputs (the agent's baseline), so it is the answer
// RISK will carry. A session no partition holds (evicted when idle, or a
// rebuild) falls back to the last published score; none at all is
// not-found.
func (s *Service) ScoreNow(ctx context.Context, tenant, sessionID string, tok consistency.Token) (SessionScore, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.ConsistencyWait)
	defer cancel()
	if seq := tok[streams.Ingest]; seq > 0 {
		if err := consistency.Wait(ctx, consistency.Token{streams.Ingest: seq}, consistency.Waits{streams.Ingest: {s.judged}}, s.cfg.ConsistencyWait); err != nil {
			return SessionScore{}, err
		}
	}
	last, err := s.lastDecision(ctx, tenant)
	if err != nil {
		return SessionScore{}, apperr.Unavailable("decision stream unavailable; retry", time.Second, err)
	}
	wait := time.Until(deadlineOf(ctx))
	var found *SessionScore
	err = askPartitions(ctx, s, "score", scoreRequest{Tenant: tenant, SessionID: sessionID, PolicySeq: last, WaitMS: wait.Milliseconds()}, nil, func(r scoreReply) {
		if r.Score != nil {
			found = r.Score
		}
	})
	if found != nil {
		s.onRequest.Inc()
		return *found, nil
	}
	if err != nil {
		return SessionScore{}, apperr.Unavailable("session risk is being computed; retry", time.Second, err)
	}
	return s.LatestScore(ctx, tenant, sessionID)
}

func deadlineOf(ctx context.Context) time.Time {
	d, _ := ctx.Deadline()
	return d
}

// lastDecision is the POLICY sequence of the tenant's newest decision (0
// when there is none).
func (s *Service) lastDecision(ctx context.Context, tenant string) (uint64, error) {
	st, err := s.deps.JS.Stream(ctx, streams.Policy)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	m, err := st.GetLastMsgForSubject(ctx, streams.TenantDecisions(tenant))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return m.Sequence, nil
}

// sessionRisk answers the last published score; when there is none yet,
// or the read carries a consistency token (whose writes the published
// score may not include), the score is computed on request (ScoreNow).
func (s *Service) sessionRisk(c echo.Context) error {
	id := c.Param("id")
	if !event.ValidID(id, event.MaxSessionIDLen) {
		return apperr.NotFound("session %q not found", id)
	}
	tenant, tok := httpkit.Principal(c).Tenant, consistency.FromContext(c)
	sc, err := s.LatestScore(c.Request().Context(), tenant, id)
	if tok[streams.Ingest] > 0 || tok[streams.Policy] > 0 || apperr.Is(err, apperr.KindNotFound) {
		sc, err = s.ScoreNow(c.Request().Context(), tenant, id, tok)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, SessionRisk{SessionScore: sc, RiskLevel: sc.Severity})
}

// Point is one bucket of GET /v1/metrics/timeseries.
type Point struct {
	Date      string    `json:"date"`
	Timestamp time.Time `json:"timestamp"`
	Actions   uint64    `json:"actions"`
	Anomalies uint64    `json:"anomalies"`
	Reviews   uint64    `json:"reviews"`
}

// Timeseries is the metrics response.
type Timeseries struct {
	Interval string    `json:"interval"`
	From     time.Time `json:"from"`
	To       time.Time `json:"to"`
	Data     []Point   `json:"data"`
}

// span is the bucket range a timeseries request asks for.
type span struct {
	interval    string
	step        time.Duration
	first, last int64 // bucket numbers (epoch days or hours), inclusive
}

// parseSpan validates the timeseries query: interval day (days 1–366,
// default 30) or hour (hours 1–744, default 48), ending at to (default
// now).
func parseSpan(interval, days, hours, to string, now time.Time) (span, error) {
	var sp span
	var def, maxN int
	switch interval {
	case "", "day", "daily":
		sp.interval, sp.step, def, maxN = "day", 24*time.Hour, 30, 366
	case "hour", "hourly":
		sp.interval, sp.step, def, maxN = "hour", time.Hour, 48, 24*31
	default:
		return sp, apperr.Validation("interval is not valid", apperr.FieldError{Path: "interval", Code: event.CodeInvalid, Message: "interval must be day or hour"})
	}
	n := def
	for _, q := range []struct{ name, v, want string }{{"days", days, "day"}, {"hours", hours, "hour"}} {
		if q.v == "" || q.want != sp.interval {
			continue
		}
		d, err := strconv.Atoi(q.v)
		if err != nil || d < 1 || d > maxN {
			return sp, apperr.Validation(q.name+" is out of range", apperr.FieldError{Path: q.name, Code: event.CodeOutOfRange, Message: fmt.Sprintf("%s must be an integer from 1 to %d", q.name, maxN)})
		}
		n = d
	}
	end := now.UTC()
	if to != "" {
		t, err := time.Parse(time.RFC3339Nano, to)
		if err != nil || t.Year() < 2000 || t.Year() > 9999 {
			return sp, apperr.Validation("to is not a timestamp", apperr.FieldError{Path: "to", Code: event.CodeInvalid, Message: "to must be an RFC 3339 timestamp between the years 2000 and 9999"})
		}
		end = t.UTC()
	}
	sp.last = end.UnixMilli() / sp.step.Milliseconds()
	sp.first = sp.last - int64(n) + 1
	return sp, nil
}

func (s *Service) timeseries(c echo.Context) error {
	sp, err := parseSpan(c.QueryParam("interval"), c.QueryParam("days"), c.QueryParam("hours"), c.QueryParam("to"), time.Now())
	if err != nil {
		return err
	}
	interval, step, first, last := sp.interval, sp.step, sp.first, sp.last
	ctx, cancel := chx.QueryContext(c.Request().Context(), s.cfg.QueryTimeout)
	defer cancel()
	rows, err := s.deps.CH.Query(ctx, `SELECT bucket, metric, uniqExactMerge(ids) FROM risk_metrics
		WHERE tenant_id = ? AND grain = ? AND bucket >= ? AND bucket <= ?
		GROUP BY bucket, metric ORDER BY bucket LIMIT 10000`, httpkit.Principal(c).Tenant, interval, uint32(first), uint32(last))
	if err != nil {
		return chx.ReadError("metrics store", err)
	}
	defer rows.Close()
	ts := Timeseries{Interval: interval, From: time.UnixMilli(first * step.Milliseconds()).UTC(), To: time.UnixMilli((last+1)*step.Milliseconds() - 1).UTC()}
	for b := first; b <= last; b++ {
		t := time.UnixMilli(b * step.Milliseconds()).UTC()
		date := t.Format("2006-01-02")
		if interval == "hour" {
			date = t.Format("2006-01-02T15:00Z")
		}
		ts.Data = append(ts.Data, Point{Date: date, Timestamp: t})
	}
	for rows.Next() {
		var (
			bucket uint32
			metric string
			count  uint64
		)
		if err := rows.Scan(&bucket, &metric, &count); err != nil {
			return fmt.Errorf("scan metrics: %w", err)
		}
		i := int64(bucket) - first
		if i < 0 || i >= int64(len(ts.Data)) {
			continue
		}
		switch metric {
		case "actions":
			ts.Data[i].Actions = count
		case "anomalies":
			ts.Data[i].Anomalies = count
		case "reviews":
			ts.Data[i].Reviews = count
		}
	}
	if err := rows.Err(); err != nil {
		return chx.ReadError("metrics store", err)
	}
	return c.JSON(http.StatusOK, ts)
}

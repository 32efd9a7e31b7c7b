package risk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/risk/internal/baseline"
	"github.com/vigilhq/vigil/services/risk/internal/score"
)

// PartitionOf is the partition that owns an agent's state: FNV-1a of
// "tenant/agent" (streams.AgentHash) modulo n. Every decision, baseline
// and session of the agent lives there, so one owner sees all of it in
// stream order. The same hash places the agent's decisions in their
// shard (streams.DecisionShard), which is what lets the server deliver a
// partition only the shards holding its agents (streams.DecisionsOfPartition).
func PartitionOf(tenant, agentID string, n int) int {
	return int(streams.AgentHash(tenant, agentID) % uint32(n))
}

// partition is the state of one partition on the instance that owns it.
// It is rebuilt from POLICY (and RISK resets) every time it is acquired.
type partition struct {
	svc    *Service
	idx, n int
	log    *slog.Logger

	mu         sync.Mutex
	agents     map[string]*baseline.Agent // tenant \x00 agent
	sessions   map[string]*score.Session  // tenant \x00 session
	lastScore  map[string]scored          // session key → the last score published (or being published)
	pending    []Reset                    // resets not applied yet, by PolicySeq
	applied    map[string]bool            // reset ids applied
	processed  uint64                     // last POLICY sequence folded into the state
	folded     natsx.Watermark            // processed, for readers waiting for a sequence
	published  atomic.Uint64              // last POLICY sequence whose outputs are on RISK
	stalled    atomic.Bool                // an output was not published: published stops here
	readyAt    atomic.Uint64              // POLICY's last sequence when the rebuild started
	checkpoint uint64                     // outputs published up to here (from KV)
	saved      uint64                     // checkpoint last written
	ready      chan struct{}
	readyOnce  sync.Once
	// decisions reads POLICY; set before the partition answers requests
	// (waitFolded asks its consumer what is pending).
	decisions *reader
	// own counts this partition's decisions and newestMS is the latest
	// event time among them; they drive session eviction.
	own      int64
	newestMS int64
}

// Session eviction: every sweepEvery own decisions, sessions idle for
// sessionIdleMS of event time are dropped. Both are counted in the
// partition's own decisions and event time, so a replay evicts the same
// sessions at the same points. A session that resumes after eviction is
// scored afresh from then on.
const (
	sweepEvery    = 10000
	sessionIdleMS = 24 * 3_600_000
)

func newPartition(svc *Service, idx, n int) *partition {
	return &partition{svc: svc, idx: idx, n: n, log: svc.log.With(slog.Int("partition", idx)),
		agents: map[string]*baseline.Agent{}, sessions: map[string]*score.Session{}, lastScore: map[string]scored{},
		applied: map[string]bool{}, ready: make(chan struct{})}
}

func key(tenant, id string) string { return tenant + "\x00" + id }

func (p *partition) checkpointKey() string { return fmt.Sprintf("p%d-of-%d", p.idx, p.n) }

// rpcSubject is where the owner of this partition answers verb.
func rpcSubject(verb string, n, idx int) string {
	return streams.RiskRPCPrefix + verb + "." + strconv.Itoa(n) + "." + strconv.Itoa(idx)
}

// run rebuilds the partition from the streams, then follows them until
// ctx ends.
func (p *partition) run(ctx context.Context) error {
	js := p.svc.deps.JS
	if e, err := p.svc.checkpoints.Get(ctx, p.checkpointKey()); err == nil {
		p.checkpoint, _ = strconv.ParseUint(string(e.Value()), 10, 64)
		p.saved = p.checkpoint
	} else if !errors.Is(err, jetstream.ErrKeyNotFound) {
		return fmt.Errorf("risk checkpoint: %w", err)
	}
	// Resets first, so replaying the decisions applies each at the same
	// point as it was applied live.
	lastReset, err := p.loadResets(ctx)
	if err != nil {
		return err
	}
	rc, err := js.OrderedConsumer(ctx, streams.Risk, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{streams.AllBaselineResets}, DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: lastReset + 1,
	})
	if err != nil {
		return fmt.Errorf("risk resets: %w", err)
	}
	rcc, err := rc.Consume(func(m jetstream.Msg) { p.onReset(ctx, m) })
	if err != nil {
		return fmt.Errorf("risk resets: %w", err)
	}
	defer rcc.Stop()

	if err := p.svc.waitStream(ctx, streams.Policy); err != nil {
		return err
	}
	// Every decision from the start, then only the shards that hold this
	// partition's agents once near the tail (reader).
	p.decisions = newReader(ctx, p)
	defer p.decisions.stop()
	info, err := p.decisions.start()
	if err != nil {
		return err
	}
	// Ready once the decisions that were on POLICY at start are folded
	// in (or nothing is pending), even if new ones keep arriving.
	if st, err := js.Stream(ctx, streams.Policy); err == nil {
		if last, err := natsx.LastSequence(ctx, st); err == nil {
			p.readyAt.Store(last)
		}
	}
	if info.NumPending == 0 {
		p.markReady()
	}

	subs := make([]*nats.Subscription, 0, 2)
	defer func() {
		for _, s := range subs {
			_ = s.Unsubscribe()
		}
	}()
	for ready := false; !ready; {
		select {
		case <-p.ready:
			ready = true
		case own := <-p.decisions.switchTo:
			if err := p.decisions.switchMode(own); err != nil {
				return err
			}
		case <-ctx.Done():
			return nil
		}
	}
	p.log.Info("risk partition rebuilt", slog.Uint64("policySeq", p.seq()), slog.Int("agents", p.agentCount()))
	for verb, h := range map[string]nats.MsgHandler{"profiles": p.onProfiles, "reset": p.onResetRequest, "score": p.onScore} {
		s, err := p.svc.deps.NC.Subscribe(rpcSubject(verb, p.n, p.idx), h)
		if err != nil {
			return fmt.Errorf("risk rpc %s: %w", verb, err)
		}
		subs = append(subs, s)
	}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			p.saveCheckpoint(context.WithoutCancel(ctx))
			return nil
		case <-t.C:
			p.saveCheckpoint(ctx)
		case own := <-p.decisions.switchTo:
			if err := p.decisions.switchMode(own); err != nil {
				return err
			}
		}
	}
}

func (p *partition) markReady() { p.readyOnce.Do(func() { close(p.ready) }) }

func (p *partition) seq() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.processed
}

func (p *partition) agentCount() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.agents)
}

// loadResets reads every reset recorded so far and returns the RISK
// sequence of the last one read.
func (p *partition) loadResets(ctx context.Context) (uint64, error) {
	oc, err := p.svc.deps.JS.OrderedConsumer(ctx, streams.Risk, jetstream.OrderedConsumerConfig{FilterSubjects: []string{streams.AllBaselineResets}})
	if err != nil {
		return 0, fmt.Errorf("risk resets: %w", err)
	}
	var last uint64
	for {
		batch, err := oc.FetchNoWait(500)
		if err != nil {
			return 0, fmt.Errorf("risk resets: %w", err)
		}
		n := 0
		for m := range batch.Messages() {
			n++
			if md, err := m.Metadata(); err == nil {
				last = md.Sequence.Stream
			}
			p.addReset(m.Data())
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return 0, fmt.Errorf("risk resets: %w", err)
		}
		if n == 0 {
			return last, nil
		}
	}
}

func (p *partition) onReset(ctx context.Context, m jetstream.Msg) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addResetLocked(m.Data())
	p.applyResetsLocked()
}

func (p *partition) addReset(data []byte) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.addResetLocked(data)
}

func (p *partition) addResetLocked(data []byte) {
	var r Reset
	if json.Unmarshal(data, &r) != nil || r.ID == "" || PartitionOf(r.Tenant, r.AgentID, p.n) != p.idx || p.applied[r.ID] {
		return
	}
	for _, q := range p.pending {
		if q.ID == r.ID {
			return
		}
	}
	p.pending = append(p.pending, r)
	sort.SliceStable(p.pending, func(i, j int) bool { return p.pending[i].PolicySeq < p.pending[j].PolicySeq })
}

// applyResetsLocked applies every reset whose point in the decision
// history has been reached. Applying it any time after that point and
// before the next decision is the same, which is what makes a replay
// forget exactly what the live instance forgot.
func (p *partition) applyResetsLocked() { p.applyResetsUpTo(p.processed) }

// applyResetsUpTo applies every pending reset recorded at or before seq.
func (p *partition) applyResetsUpTo(seq uint64) {
	for len(p.pending) > 0 && p.pending[0].PolicySeq <= seq {
		r := p.pending[0]
		p.pending = p.pending[1:]
		p.applied[r.ID] = true
		if a := p.agents[key(r.Tenant, r.AgentID)]; a != nil {
			a.Reset(r.ID)
		} else {
			a = baseline.New(r.Tenant, r.AgentID)
			a.Reset(r.ID)
			p.agents[key(r.Tenant, r.AgentID)] = a
		}
	}
}

// decisionOwner parses policy.v1.decision_recorded.<tenant>.<agent>[.<outcome>].
func decisionOwner(subject string) (tenant, agentID string, ok bool) {
	tenant, tok, _, ok := streams.ParseDecisionSubject(subject)
	if !ok {
		return "", "", false
	}
	a, err := streams.Untoken(tok)
	return tenant, a, err == nil
}

// onDecision folds in the decision m (or passes over it) and returns its
// POLICY sequence and how many decisions the consumer had pending after
// it; ok is false for a message without metadata.
func (p *partition) onDecision(ctx context.Context, m jetstream.Msg) (seq, pending uint64, ok bool) {
	md, err := m.Metadata()
	if err != nil {
		return 0, 0, false
	}
	seq, pending = md.Sequence.Stream, md.NumPending
	defer func() {
		p.folded.Advance(seq)
		if md.NumPending == 0 || (p.readyAt.Load() > 0 && seq >= p.readyAt.Load()) {
			p.markReady()
		}
	}()
	tenant, agentID, ok := decisionOwner(m.Subject())
	if !ok || PartitionOf(tenant, agentID, p.n) != p.idx {
		if ok {
			p.svc.notOwned.Inc()
		}
		p.skip(seq)
		return seq, pending, true
	}
	var rec rules.DecisionRecord
	p.svc.deps.Gate.Yield()
	err = json.Unmarshal(m.Data(), &rec)
	switch {
	case err != nil || rec.Tenant == "":
		p.log.Error("risk: undecodable decision skipped", slog.String("subject", m.Subject()), slog.Uint64("seq", seq), slog.Any("err", err))
		p.skip(seq)
		return seq, pending, true
	case rec.AgentID == "":
		// A decision about no agent (a policy check that names none):
		// baselines and session scores are per agent, so there is
		// nothing to learn from it. Expected, hence not logged.
		p.skip(seq)
		return seq, pending, true
	}
	start := time.Now()
	p.mu.Lock()
	// At the tail the server delivers this partition its own decisions
	// only, so a reset recorded at a point between two of them (another
	// partition's decision: a reset recorded by a version whose
	// partitions read every decision, or while this partition had no
	// owner) is due now, before this decision, as it was when that point
	// was processed.
	p.applyResetsUpTo(seq - 1)
	anoms, sc := p.process(rec, seq)
	p.processed = seq
	p.applyResetsLocked()
	publish := seq > p.checkpoint
	p.mu.Unlock()
	if publish && !p.publish(ctx, anoms, sc) {
		p.stalled.Store(true) // stopping: these outputs are not on RISK
	}
	p.advance(seq)
	p.svc.observed.Inc()
	p.svc.processTime.Observe(time.Since(start).Seconds())
	return seq, pending, true
}

// skip passes over the decision at seq, which this partition does not
// learn from, exactly as over one it did: resets due by then apply.
func (p *partition) skip(seq uint64) {
	p.mu.Lock()
	p.processed = seq
	p.applyResetsLocked()
	p.mu.Unlock()
	p.advance(seq)
}

// advance moves the publish watermark, unless an earlier output failed
// to publish (the partition is stopping and will be rebuilt from there).
func (p *partition) advance(seq uint64) {
	if !p.stalled.Load() {
		p.published.Store(seq)
	}
}

// process folds one decision into the agent's baseline and its session
// and returns the anomalies raised and the new score (nil if unchanged).
func (p *partition) process(rec rules.DecisionRecord, seq uint64) ([]Anomaly, *SessionScore) {
	o, paused := observation(rec)
	k := key(rec.Tenant, rec.AgentID)
	a := p.agents[k]
	if a == nil {
		a = baseline.New(rec.Tenant, rec.AgentID)
		p.agents[k] = a
	}
	p.own++
	p.newestMS = max(p.newestMS, o.AtMS)
	if p.own%sweepEvery == 0 {
		for k, s := range p.sessions {
			if s.LastMS < p.newestMS-sessionIdleMS {
				delete(p.sessions, k)
				delete(p.lastScore, k)
			}
		}
	}
	raised := a.Observe(o, p.svc.cfg.Baseline)
	var anoms []Anomaly
	var sa []score.Anomaly
	for _, r := range raised {
		if p.svc.deps.Catalog != nil && p.svc.deps.Catalog.Suppressed(rec.Tenant, r.Signature) {
			p.svc.suppressed.Inc()
			continue
		}
		an := Anomaly{ID: anomalyID(rec.ID, r.Type, r.Value), Tenant: rec.Tenant, AgentID: rec.AgentID, SessionID: rec.SessionID,
			Severity: r.Severity, Summary: r.Summary, OccurredAt: ms(o.AtMS), Type: r.Type, Value: r.Value, Signature: r.Signature,
			Evidence: r.Evidence, DecisionID: rec.ID, EventID: rec.EventID, Action: slimAction(rec.Input.Action), PolicySeq: seq}
		an.Evidence["decisionId"] = rec.ID
		anoms = append(anoms, an)
		sa = append(sa, score.Anomaly{ID: an.ID, Type: an.Type, Severity: an.Severity})
	}
	if rec.SessionID == "" {
		return anoms, nil
	}
	sk := key(rec.Tenant, rec.SessionID)
	s := p.sessions[sk]
	if s == nil {
		s = score.NewSession(rec.Tenant, rec.AgentID, rec.SessionID)
		p.sessions[sk] = s
	}
	s.Add(score.Record{ID: rec.ID, AtMS: o.AtMS, Outcome: rec.Decision.Outcome.String(), Error: o.Error, Paused: paused}, sa)
	res := s.Compute()
	fp := fingerprint(res)
	if p.lastScore[sk].fingerprint == fp {
		return anoms, nil
	}
	sc := &SessionScore{ID: "scr_" + strings.TrimPrefix(rec.ID, "dec_"), Tenant: rec.Tenant, AgentID: s.AgentID, SessionID: rec.SessionID,
		Severity: res.Severity, Summary: summary(res), OccurredAt: ms(o.AtMS), Score: res.Score, Formula: res.Version,
		Actions: res.Actions, Dimensions: res.Dimensions, Factors: res.Factors, Recommendations: res.Recommendations,
		FirstEventAt: ms(s.FirstMS), LastEventAt: ms(s.LastMS), DecisionID: rec.ID, PolicySeq: seq}
	p.lastScore[sk] = scored{fingerprint: fp, score: sc}
	return anoms, sc
}

// scored is the score a session last changed to: what was published on
// RISK, or is being published, for it. GET /v1/sessions/:id/risk answers
// with it on request, before RISK or its projection has it.
type scored struct {
	fingerprint string
	score       *SessionScore
}

func fingerprint(r score.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d|%s", r.Score, r.Severity)
	for _, f := range r.Factors {
		fmt.Fprintf(&b, "|%s:%d", f.Code, f.Count)
	}
	return b.String()
}

func summary(r score.Result) string {
	if len(r.Factors) == 0 {
		return fmt.Sprintf("risk %d (%s): nothing notable in %d actions", r.Score, r.Severity, r.Actions)
	}
	return fmt.Sprintf("risk %d (%s): %d %s", r.Score, r.Severity, r.Factors[0].Count, r.Factors[0].Description)
}

func slimAction(a rules.Action) rules.Action {
	return rules.Action{Kind: a.Kind, Tool: a.Tool, Target: a.Target, Publisher: a.Publisher, Operation: a.Operation, ToolType: a.ToolType, TargetSystem: a.TargetSystem}
}

// observation reads what the baseline needs off a decision. An action is
// an error when its response status is 400 or more, its category says
// error, or its context carries a non-empty "error".
func observation(rec rules.DecisionRecord) (baseline.Observation, bool) {
	a, ag := rec.Input.Action, rec.Input.Agent
	o := baseline.Observation{ID: rec.ID, SessionID: rec.SessionID, AtMS: rec.At.UnixMilli(), Kind: a.Kind, Tool: a.Tool,
		Destination: a.Host(), Publisher: a.Publisher, Declared: ag.Declared, DeclaredTools: ag.Tools, DeclaredDestinations: ag.Destinations}
	ctx := rec.Input.Context
	if st, ok := ctx["responseStatus"].(float64); ok && st >= 400 {
		o.Error = true
	}
	if e, ok := ctx["error"]; ok && e != nil && e != false && e != "" {
		o.Error = true
	}
	if cat, _ := a.Metadata["category"].(string); strings.Contains(cat, "error") {
		o.Error = true
	}
	paused := false
	for _, r := range rec.Decision.ReasonCodes {
		if r == rules.ReasonAgentPaused {
			paused = true
		}
	}
	o.Blocked = rec.Decision.Outcome >= rules.RequireApproval && !paused
	return o, paused && rec.Decision.Outcome == rules.Block
}

// publish records the outputs of one decision on RISK, deduplicated by id
// so that a redelivery or a rebuild that overlaps the checkpoint writes
// nothing twice. It retries until it succeeds or ctx ends (then it
// reports false): the partition does not move on while an output is
// unrecorded.
func (p *partition) publish(ctx context.Context, anoms []Anomaly, sc *SessionScore) bool {
	for _, a := range anoms {
		if !p.retry(ctx, streams.AnomalySubject(a.Tenant, a.AgentID), a.ID, mustJSON(a)) {
			return false
		}
		p.svc.anomalies.WithLabelValues(a.Type).Inc()
	}
	if sc != nil {
		if !p.retry(ctx, streams.SessionScoreSubject(sc.Tenant, sc.SessionID), sc.ID, mustJSON(sc)) {
			return false
		}
		p.svc.scores.Inc()
	}
	return true
}

func (p *partition) retry(ctx context.Context, subject, id string, data []byte) bool {
	delay := 50 * time.Millisecond
	for {
		pctx, cancel := context.WithTimeout(ctx, p.svc.cfg.PublishTimeout)
		_, err := p.svc.deps.JS.Publish(pctx, subject, data, jetstream.WithMsgID(id))
		cancel()
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		p.log.Warn("risk: publish failed; retrying", slog.String("subject", subject), slog.String("error", err.Error()))
		select {
		case <-ctx.Done():
			return false
		case <-time.After(delay):
		}
		delay = min(2*delay, 5*time.Second)
	}
}

// saveCheckpoint records how far outputs are published, so that a
// rebuild republishes nothing older (the RISK duplicate window covers
// only the last minutes).
func (p *partition) saveCheckpoint(ctx context.Context) {
	seq := p.published.Load()
	if seq <= p.saved {
		return
	}
	if _, err := p.svc.checkpoints.Put(ctx, p.checkpointKey(), []byte(strconv.FormatUint(seq, 10))); err != nil {
		p.log.Warn("risk: checkpoint not saved", slog.String("error", err.Error()))
		return
	}
	p.saved = seq
}

// profilesRequest asks a partition for a tenant's baselines.
type profilesRequest struct {
	Tenant  string `json:"tenant"`
	AgentID string `json:"agentId,omitempty"`
}

func (p *partition) onProfiles(m *nats.Msg) {
	var req profilesRequest
	if json.Unmarshal(m.Data, &req) != nil || req.Tenant == "" {
		_ = m.Respond([]byte(`{"error":"bad request"}`))
		return
	}
	p.mu.Lock()
	out := []Profile{}
	for _, a := range p.agents {
		if a.Tenant == req.Tenant && (req.AgentID == "" || a.AgentID == req.AgentID) {
			out = append(out, profileOf(a, p.svc.cfg.Baseline.Warmup))
		}
	}
	p.mu.Unlock()
	_ = m.Respond(mustJSON(out))
}

// onResetRequest records a reset at the point this partition has reached
// and applies it at once, so that a profile read right after the reset
// answer shows the empty baseline.
func (p *partition) onResetRequest(m *nats.Msg) {
	var r Reset
	if json.Unmarshal(m.Data, &r) != nil || r.Tenant == "" || r.AgentID == "" || r.ID == "" {
		_ = m.Respond([]byte(`{"error":"bad request"}`))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	r.PolicySeq = p.processed
	ctx, cancel := context.WithTimeout(context.Background(), p.svc.cfg.PublishTimeout)
	defer cancel()
	if _, err := p.svc.deps.JS.Publish(ctx, streams.BaselineResetSubject(r.Tenant, r.AgentID), mustJSON(r), jetstream.WithMsgID(r.ID)); err != nil {
		_ = m.Respond(mustJSON(map[string]string{"error": err.Error()}))
		return
	}
	p.addResetLocked(mustJSON(r))
	p.applyResetsLocked()
	_ = m.Respond(mustJSON(r))
}

// scoreRequest asks a partition for a session's score once it has folded
// in POLICY up to PolicySeq (waiting at most WaitMS).
type scoreRequest struct {
	Tenant    string `json:"tenant"`
	SessionID string `json:"sessionId"`
	PolicySeq uint64 `json:"policySeq"`
	WaitMS    int64  `json:"waitMs"`
}

// scoreReply is a partition's answer: the session's score if the
// partition holds the session.
type scoreReply struct {
	Score *SessionScore `json:"score,omitempty"`
	Error string        `json:"error,omitempty"`
}

// onScore answers a scoreRequest. The wait runs off the subscription's
// goroutine, so one waiting request does not hold up the partition's
// other requests.
func (p *partition) onScore(m *nats.Msg) {
	var req scoreRequest
	if json.Unmarshal(m.Data, &req) != nil || req.Tenant == "" || req.SessionID == "" {
		_ = m.Respond(mustJSON(scoreReply{Error: "bad request"}))
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(min(max(req.WaitMS, 0), 60_000))*time.Millisecond)
		defer cancel()
		if err := p.waitFolded(ctx, req.PolicySeq); err != nil {
			_ = m.Respond(mustJSON(scoreReply{Error: "catching up: " + err.Error()}))
			return
		}
		p.mu.Lock()
		sc := p.lastScore[key(req.Tenant, req.SessionID)].score
		p.mu.Unlock()
		_ = m.Respond(mustJSON(scoreReply{Score: sc}))
	}()
}

// waitFolded returns once every decision of this partition's recorded at
// or before seq is folded in, or ctx ends. At the tail the server
// delivers the partition its own shards only, so the folded watermark
// moves on its own decisions and may never reach seq (the tenant's newest decision may
// be another partition's). When it has not, the consumer's info says
// whether any decision of the partition's is stored beyond what was
// delivered: if none is, the delivered ones are all there is up to now
// (at least up to seq, which was stored before the request), and folding
// them is enough.
func (p *partition) waitFolded(ctx context.Context, seq uint64) error {
	for {
		at := p.folded.At()
		if at >= seq {
			return nil
		}
		info, err := p.decisions.info(ctx)
		if err == nil && info.NumPending == 0 {
			return p.folded.WaitFor(ctx, min(seq, info.Delivered.Stream))
		}
		// Decisions still to deliver (or the ordered consumer is being
		// recreated): wait for progress, then ask again.
		wctx, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
		_ = p.folded.WaitFor(wctx, at+1)
		cancel()
		if ctx.Err() != nil {
			if err != nil {
				return fmt.Errorf("risk decisions: %w (%w)", ctx.Err(), err)
			}
			return fmt.Errorf("waiting for POLICY sequence %d: %w", seq, ctx.Err())
		}
	}
}

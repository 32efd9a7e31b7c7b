package notifier

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Job is one signal to deliver to one channel: the message on the
// delivery's own NOTIFIER subject. A failed attempt publishes the next job
// (Attempt+1, NotBefore in the future) on the same subject, so pending
// retries live in JetStream and survive restarts.
type Job struct {
	DeliveryID string `json:"deliveryId"`
	Tenant     string `json:"tenant"`
	ChannelID  string `json:"channelId"`
	Signal     Signal `json:"signal"`
	// Attempt is 1-based within one replay; Replay counts manual retries
	// of a finished delivery.
	Attempt   int       `json:"attempt"`
	Replay    int       `json:"replay"`
	NotBefore time.Time `json:"notBefore"`
}

// Outcomes of an attempt: what happens to the delivery next.
const (
	OutcomeDelivered = "delivered"
	OutcomeRetry     = "retry_scheduled"
	OutcomeDead      = "dead_lettered"
	OutcomeDropped   = "dropped" // channel deleted or disabled meanwhile
	OutcomeTest      = "test"
)

// Attempt is one recorded delivery attempt (projected into ClickHouse).
type Attempt struct {
	ID            string     `json:"id"`
	DeliveryID    string     `json:"deliveryId"`
	Tenant        string     `json:"tenant"`
	ChannelID     string     `json:"channelId"`
	ChannelType   string     `json:"channelType"`
	SignalID      string     `json:"signalId"`
	SignalType    string     `json:"signalType"`
	WebhookID     string     `json:"webhookId"`
	Attempt       int        `json:"attempt"`
	Replay        int        `json:"replay"`
	Status        string     `json:"status"` // succeeded | failed
	Outcome       string     `json:"outcome"`
	StatusCode    int        `json:"statusCode"`
	LatencyMs     float64    `json:"latencyMs"`
	Error         string     `json:"error,omitempty"`
	NextAttemptAt *time.Time `json:"nextAttemptAt,omitempty"`
	At            time.Time  `json:"at"`
}

// deliveryID is derived from the signal and the channel, so a redelivered
// signal schedules nothing new.
func deliveryID(signalID, channelID string) string {
	sum := sha256.Sum256([]byte(signalID + "\x00" + channelID))
	return "msg_" + hex.EncodeToString(sum[:12])
}

// fanOut turns the signals of one source stream into delivery jobs.
func (s *Service) fanOut(ctx context.Context, stream, durable string, filters []string) error {
	cons, err := s.consumer(ctx, stream, jetstream.ConsumerConfig{
		Durable: durable, Description: "signals → notification delivery jobs",
		FilterSubjects: filters, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: 30 * time.Second, MaxDeliver: -1, MaxAckPending: 1000,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { s.handleSignal(ctx, m) }, jetstream.PullMaxMessages(256))
	if err != nil {
		return fmt.Errorf("%s: consume: %w", durable, err)
	}
	<-ctx.Done()
	cc.Drain()
	<-cc.Closed()
	return nil
}

func (s *Service) handleSignal(ctx context.Context, m jetstream.Msg) {
	if t, ok := decisionTenant(m.Subject()); ok && s.channels.none(t) {
		// Matched to no channel, the signal would be acked unsent: so
		// is the decision, without decoding it (most tenants' case).
		_ = m.Ack()
		return
	}
	s.deps.Gate.Yield()
	sig, ok, err := decodeSignal(m)
	if err != nil {
		s.log.Error("undecodable signal", slog.String("subject", m.Subject()), slog.String("error", err.Error()))
		_ = m.TermWithReason("undecodable signal")
		return
	}
	if !ok || time.Since(sig.OccurredAt) > s.cfg.SignalMaxAge {
		_ = m.Ack()
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.schedule(pctx, sig, s.channels.match(sig)); err != nil {
		s.log.Warn("schedule deliveries", slog.String("signal", sig.ID), slog.String("error", err.Error()))
		_ = m.NakWithDelay(time.Second)
		return
	}
	_ = m.Ack()
}

// schedule publishes the first job of sig for each channel. The write
// expects the delivery's subject to be empty, so scheduling is idempotent
// however often the signal is redelivered.
func (s *Service) schedule(ctx context.Context, sig Signal, chans []Channel) error {
	futures := make([]jetstream.PubAckFuture, 0, len(chans))
	for _, ch := range chans {
		job := Job{DeliveryID: deliveryID(sig.ID, ch.ID), Tenant: ch.Tenant, ChannelID: ch.ID, Signal: sig, Attempt: 1}
		data, err := json.Marshal(job)
		if err != nil {
			return fmt.Errorf("encode job: %w", err)
		}
		msg := nats.NewMsg(streams.DeliveryScheduledSubject(job.Tenant, job.DeliveryID))
		msg.Data = data
		f, err := s.deps.JS.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(0))
		if err != nil {
			return fmt.Errorf("publish job: %w", err)
		}
		futures = append(futures, f)
	}
	for _, f := range futures {
		select {
		case <-f.Ok():
			s.m.fanout.WithLabelValues(sig.Type).Inc()
		case err := <-f.Err():
			if !natsx.IsWrongLastSequence(err) {
				return fmt.Errorf("publish job: %w", err)
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// deliver consumes delivery jobs and hands each to its channel's lane.
func (s *Service) deliver(ctx context.Context) error {
	cons, err := s.consumer(ctx, streams.Notifier, jetstream.ConsumerConfig{
		Durable: ConsumerDeliver, Description: "delivery jobs → channel targets",
		FilterSubject: streams.AllDeliveriesScheduled, AckPolicy: jetstream.AckExplicitPolicy,
		AckWait: s.cfg.ackWait(), MaxDeliver: -1, MaxAckPending: 20000,
	})
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) { s.handleJob(ctx, m) }, jetstream.PullMaxMessages(512))
	if err != nil {
		return fmt.Errorf("deliver: consume: %w", err)
	}
	<-ctx.Done()
	// Refuse new work first, so that the jobs the client already buffered
	// go straight back to JetStream (for another replica or the next
	// start) instead of waiting out their ack deadline.
	s.lanes.refuse()
	cc.Drain()
	<-cc.Closed()
	s.lanes.stop()
	return nil
}

// maxNak bounds one NakWithDelay; a job due later is simply pushed back
// again, which keeps far-future retries cheap for the server.
const maxNak = time.Hour

func (s *Service) handleJob(ctx context.Context, m jetstream.Msg) {
	var job Job
	if err := json.Unmarshal(m.Data(), &job); err != nil || job.DeliveryID == "" {
		_ = m.TermWithReason("undecodable delivery job")
		return
	}
	if wait := time.Until(job.NotBefore); wait > 5*time.Millisecond {
		_ = m.NakWithDelay(min(wait, maxNak))
		return
	}
	meta, err := m.Metadata()
	if err != nil {
		_ = m.Nak()
		return
	}
	pushedBack := s.lanes.takePushedBack(meta.Sequence.Stream)
	if meta.NumDelivered > 1 && !pushedBack {
		// A redelivery may be stale: superseded by a later job for the
		// same delivery (a retry scheduled before a crash, a replay).
		if cur, err := s.lastSeq(ctx, streams.DeliveryScheduledSubject(job.Tenant, job.DeliveryID)); err == nil && cur != meta.Sequence.Stream {
			_ = m.Ack()
			return
		}
		if fin, err := s.lastSeq(ctx, streams.DeliveryFinishedSubject(job.Tenant, job.DeliveryID)); err == nil && fin > meta.Sequence.Stream {
			_ = m.Ack()
			return
		}
	}
	ch, ok := s.channels.get(job.Tenant, job.ChannelID)
	if !ok || !ch.Enabled {
		s.record(ctx, Attempt{Outcome: OutcomeDropped, Status: "failed", Error: "channel deleted or disabled"}, job, ch)
		_ = m.Ack()
		return
	}
	if !s.lanes.offer(ch, laneItem{msg: m, job: job, seq: meta.Sequence.Stream}) {
		if s.lanes.draining.Load() {
			_ = m.Nak()
			return
		}
		// Its lane is full: this process pushed it back, so when it
		// returns it is known to be current and skips the stale checks.
		s.lanes.markPushedBack(meta.Sequence.Stream)
		_ = m.NakWithDelay(s.cfg.BusyDelay)
	}
}

// lastSeq is the stream sequence of the last message on subject (0 when
// there is none).
func (s *Service) lastSeq(ctx context.Context, subject string) (uint64, error) {
	st, err := s.deps.JS.Stream(ctx, streams.Notifier)
	if err != nil {
		return 0, err
	}
	msg, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return msg.Sequence, nil
}

// result is what one HTTP attempt produced.
type result struct {
	status     int
	latency    time.Duration
	retryAfter time.Duration
	err        error
	// permanent failures (refused by the SSRF guard, unusable channel)
	// are dead-lettered at once: retrying cannot help.
	permanent bool
}

func (r result) ok() bool { return r.err == nil && r.status >= 200 && r.status < 300 }

func (r result) describe() string {
	if r.err != nil {
		return cleanError(r.err)
	}
	if !r.ok() {
		return "target answered " + strconv.Itoa(r.status)
	}
	return ""
}

// send makes one attempt at delivering job to ch.
func (s *Service) send(ctx context.Context, ch Channel, job Job) result {
	raw, err := s.box.Open(ch.Sealed, ch.ad())
	if err != nil {
		return result{err: errors.New("channel credentials do not decrypt with this deployment's key"), permanent: true}
	}
	var sec secrets
	if err := json.Unmarshal(raw, &sec); err != nil {
		return result{err: errors.New("channel credentials are corrupt"), permanent: true}
	}
	actx, cancel := context.WithTimeout(ctx, s.cfg.AttemptTimeout)
	defer cancel()
	now := time.Now()
	req, err := render(actx, ch, sec, job, now)
	if err != nil {
		return result{err: err, permanent: true}
	}
	resp, err := s.client.Do(req)
	lat := time.Since(now)
	if err != nil {
		return result{err: err, latency: lat, permanent: errors.Is(err, ssrf.ErrForbidden)}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	return result{status: resp.StatusCode, latency: time.Since(now), retryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), now)}
}

// maxRetryAfter bounds what a Retry-After header can express before the
// configured cap applies (and keeps huge values from overflowing).
const maxRetryAfter = 7 * 24 * time.Hour

// parseRetryAfter reads delay-seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil && n > 0 {
		return time.Duration(min(n, int64(maxRetryAfter/time.Second))) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return min(t.Sub(now), maxRetryAfter)
	}
	return 0
}

// backoffFor is the jittered wait after the given failed attempt.
func (s *Service) backoffFor(attempt int) time.Duration {
	sc := s.cfg.Schedule
	b := &backoff.ExponentialBackOff{
		InitialInterval: sc.InitialInterval, RandomizationFactor: sc.Jitter, Multiplier: sc.Multiplier,
		MaxInterval: sc.MaxInterval, MaxElapsedTime: 0, Stop: backoff.Stop, Clock: backoff.SystemClock,
	}
	b.Reset()
	d := b.NextBackOff()
	for i := 1; i < attempt; i++ {
		d = b.NextBackOff()
	}
	return d
}

// process runs one job on its lane: attempt, record, then schedule the
// next attempt or finish, and only then ack.
func (s *Service) process(ctx context.Context, it laneItem) {
	_ = it.msg.InProgress()
	job := it.job
	ch, ok := s.channels.get(job.Tenant, job.ChannelID)
	if !ok || !ch.Enabled {
		s.record(ctx, Attempt{Outcome: OutcomeDropped, Status: "failed", Error: "channel deleted or disabled"}, job, ch)
		_ = it.msg.Ack()
		return
	}
	if job.Attempt == 1 && job.Replay == 0 {
		s.m.firstDelay.Observe(time.Since(job.Signal.OccurredAt).Seconds())
	}
	r := s.send(ctx, ch, job)
	if ctx.Err() != nil {
		// Cut short by shutdown: not the target's fault, try again later.
		_ = it.msg.Nak()
		return
	}
	s.m.latency.WithLabelValues(ch.Type).Observe(r.latency.Seconds())
	a := Attempt{Status: "succeeded", Outcome: OutcomeDelivered, StatusCode: r.status, LatencyMs: float64(r.latency.Microseconds()) / 1000}
	var next *Job
	switch {
	case r.ok():
		s.m.attempts.WithLabelValues(ch.Type, "succeeded").Inc()
	case !r.permanent && job.Attempt < s.cfg.Schedule.MaxAttempts:
		s.m.attempts.WithLabelValues(ch.Type, "failed").Inc()
		wait := max(s.backoffFor(job.Attempt), min(r.retryAfter, s.cfg.Schedule.RetryAfterCap))
		n := job
		n.Attempt++
		n.NotBefore = time.Now().Add(wait).UTC()
		next = &n
		a.Status, a.Outcome, a.Error, a.NextAttemptAt = "failed", OutcomeRetry, r.describe(), &n.NotBefore
	default:
		s.m.attempts.WithLabelValues(ch.Type, "failed").Inc()
		s.m.dead.Inc()
		a.Status, a.Outcome, a.Error = "failed", OutcomeDead, r.describe()
	}
	s.tracker.observe(ctx, ch, r.ok())
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := s.record(pctx, a, job, ch); err != nil {
		_ = it.msg.NakWithDelay(time.Second)
		return
	}
	if next != nil {
		if err := s.publishJob(pctx, *next, it.seq); err != nil && !errors.Is(err, errSuperseded) {
			s.log.Warn("schedule retry", slog.String("delivery", job.DeliveryID), slog.String("error", err.Error()))
			_ = it.msg.NakWithDelay(time.Second)
			return
		}
	} else if err := s.finish(pctx, job, a.Outcome); err != nil {
		_ = it.msg.NakWithDelay(time.Second)
		return
	}
	_ = it.msg.Ack()
}

var errSuperseded = errors.New("delivery job superseded")

// publishJob writes a job on its delivery subject if that subject is
// still at expect (compare-and-set: one retry per failed attempt, one
// replay per click).
func (s *Service) publishJob(ctx context.Context, job Job, expect uint64) error {
	data, err := json.Marshal(job)
	if err != nil {
		return fmt.Errorf("encode job: %w", err)
	}
	msg := nats.NewMsg(streams.DeliveryScheduledSubject(job.Tenant, job.DeliveryID))
	msg.Data = data
	_, err = s.deps.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(expect))
	if natsx.IsWrongLastSequence(err) {
		return errSuperseded
	}
	return err
}

func (s *Service) finish(ctx context.Context, job Job, outcome string) error {
	data, _ := json.Marshal(map[string]any{"deliveryId": job.DeliveryID, "channelId": job.ChannelID, "outcome": outcome, "attempt": job.Attempt, "replay": job.Replay, "at": time.Now().UTC()})
	msg := nats.NewMsg(streams.DeliveryFinishedSubject(job.Tenant, job.DeliveryID))
	msg.Data = data
	_, err := s.deps.JS.PublishMsg(ctx, msg)
	return err
}

// record publishes an attempt (filling in what the job and channel say).
func (s *Service) record(ctx context.Context, a Attempt, job Job, ch Channel) error {
	a.DeliveryID, a.Tenant, a.ChannelID, a.ChannelType = job.DeliveryID, job.Tenant, job.ChannelID, ch.Type
	a.SignalID, a.SignalType, a.Attempt, a.Replay = job.Signal.ID, job.Signal.Type, job.Attempt, job.Replay
	a.WebhookID = job.DeliveryID
	a.ID = fmt.Sprintf("%s.%d.%d", job.DeliveryID, job.Replay, job.Attempt)
	if a.Outcome == OutcomeTest || a.Outcome == OutcomeDropped {
		a.ID += "." + a.Outcome
	}
	a.At = time.Now().UTC()
	data, err := json.Marshal(a)
	if err != nil {
		return fmt.Errorf("encode attempt: %w", err)
	}
	msg := nats.NewMsg(streams.DeliveryAttemptedSubject(job.Tenant, job.ChannelID))
	msg.Data = data
	msg.Header.Set(nats.MsgIdHdr, a.ID)
	if _, err := s.deps.JS.PublishMsg(ctx, msg); err != nil {
		s.log.Warn("record attempt", slog.String("delivery", job.DeliveryID), slog.String("error", err.Error()))
		return err
	}
	return nil
}

// laneItem is a job waiting on its channel's lane.
type laneItem struct {
	msg jetstream.Msg
	job Job
	seq uint64
}

// lanes gives every channel its own bounded queue and workers, so a slow
// or hung target only ever holds up its own deliveries.
type lanes struct {
	s       *Service
	mu      sync.Mutex
	byKey   map[string]chan laneItem
	stopped bool
	// draining is set at stop: queued jobs go back instead of running.
	draining atomic.Bool
	// pushedBack holds the stream sequences of jobs handed back because
	// their lane was full, with when (entries a replica never sees again
	// are pruned).
	pbMu       sync.Mutex
	pushedBack map[uint64]time.Time
	wg         sync.WaitGroup
	ctx        context.Context
	cancel     context.CancelFunc
}

func newLanes(s *Service) *lanes {
	ctx, cancel := context.WithCancel(context.Background())
	return &lanes{s: s, byKey: map[string]chan laneItem{}, pushedBack: map[uint64]time.Time{}, ctx: ctx, cancel: cancel}
}

func (l *lanes) markPushedBack(seq uint64) {
	l.pbMu.Lock()
	defer l.pbMu.Unlock()
	now := time.Now()
	if len(l.pushedBack) >= 100_000 {
		for k, at := range l.pushedBack {
			if now.Sub(at) > time.Minute {
				delete(l.pushedBack, k)
			}
		}
	}
	l.pushedBack[seq] = now
}

func (l *lanes) takePushedBack(seq uint64) bool {
	l.pbMu.Lock()
	defer l.pbMu.Unlock()
	_, ok := l.pushedBack[seq]
	delete(l.pushedBack, seq)
	return ok
}

// refuse makes every later offer fail and queued jobs go back unrun.
func (l *lanes) refuse() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.stopped = true
	l.draining.Store(true)
}

// offer queues it on ch's lane; false when the lane is full or stopping.
func (l *lanes) offer(ch Channel, it laneItem) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopped {
		return false
	}
	key := ch.Tenant + "/" + ch.ID
	q, ok := l.byKey[key]
	if !ok {
		q = make(chan laneItem, l.s.cfg.LaneQueue)
		l.byKey[key] = q
		for range l.s.cfg.LaneWorkers {
			l.wg.Add(1)
			go l.work(q)
		}
	}
	select {
	case q <- it:
		return true
	default:
		return false
	}
}

func (l *lanes) work(q chan laneItem) {
	defer l.wg.Done()
	for it := range q {
		if l.draining.Load() {
			// Stopping: hand a job that has not started back to JetStream
			// for another replica or the next start.
			_ = it.msg.Nak()
			continue
		}
		l.s.process(l.ctx, it)
	}
}

// stop returns queued jobs to JetStream and lets in-flight attempts
// finish, for at most ShutdownTimeout; attempts cut short are not
// recorded and their jobs are redelivered.
func (l *lanes) stop() {
	l.refuse()
	l.mu.Lock()
	for _, q := range l.byKey {
		close(q)
	}
	l.mu.Unlock()
	timer := time.AfterFunc(l.s.cfg.ShutdownTimeout, l.cancel)
	l.wg.Wait()
	timer.Stop()
	l.cancel()
}

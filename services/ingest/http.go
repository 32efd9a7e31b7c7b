package ingest

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/redact"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/telemetry"
)

// Item outcomes reported per event.
const (
	StatusAccepted  = "accepted"
	StatusDuplicate = "duplicate"
	StatusRejected  = "rejected"
	StatusFailed    = "failed"
)

// Result is the outcome for one event.
type Result struct {
	Index     int             `json:"index"`
	EventID   string          `json:"eventId,omitempty"`
	Status    string          `json:"status"`
	Accepted  bool            `json:"accepted"`
	Duplicate bool            `json:"duplicate"`
	Sequence  uint64          `json:"sequence,omitempty"`
	Error     *httpkit.Detail `json:"error,omitempty"`
}

// BatchResponse summarises a batch.
type BatchResponse struct {
	Accepted   int      `json:"accepted"`
	Duplicates int      `json:"duplicates"`
	Rejected   int      `json:"rejected"`
	Failed     int      `json:"failed"`
	Results    []Result `json:"results"`
}

// clientInfo reads the SDK headers: Kaplaix's, and Vigil's own which win
// when both are sent.
func clientInfo(h http.Header) event.Client {
	pick := func(names ...string) string {
		for _, n := range names {
			if v := h.Get(n); v != "" {
				if len(v) > 200 {
					v = v[:200]
				}
				return v
			}
		}
		return ""
	}
	return event.Client{
		SDK:          pick("X-Vigil-Sdk", "X-Kaplaix-Sdk"),
		Framework:    pick("X-Vigil-Framework", "X-Kaplaix-Framework"),
		AgentVersion: pick("X-Vigil-Agent-Version", "X-Kaplaix-Agent-Version"),
	}
}

// recordSlack is what a record takes besides its payload, at most: the
// other fields are capped in length.
const recordSlack = 512

// message is the INGEST message of ev: its payload redacted by pol (the
// tenant's, from redactionFor), the record encoded, the dedupe id set.
// The record is appended to arena when it has room for it (a batch's
// records share one allocation); the arena is returned past it.
func (s *Service) message(ctx context.Context, pol *redact.Policy, tenant string, ev event.Event, sourceMS int64, cl event.Client, keyID string, now time.Time, arena []byte) (*nats.Msg, []byte, error) {
	n := redactPayload(pol, tenant, &ev)
	rec := event.Record{Tenant: tenant, Event: ev, SourceMS: sourceMS, ReceivedMS: now.UnixMilli(), Client: cl, KeyID: keyID, Redactions: n}
	dst, inArena := arena[len(arena):], true
	if cap(dst) < len(ev.Payload)+recordSlack {
		// Sized for the record around the payload, so that one
		// allocation holds it.
		dst, inArena = make([]byte, 0, len(ev.Payload)+recordSlack), false
	}
	data, err := rec.AppendJSON(dst)
	if err != nil {
		return nil, arena, fmt.Errorf("encode record: %w", err)
	}
	if inArena && len(data) <= cap(dst) {
		// Written into the arena (append did not move it): the next
		// record goes after it, and none may append into this one.
		arena = arena[:len(arena)+len(data)]
		data = data[:len(data):len(data)]
	}
	m := nats.NewMsg(streams.EventReceivedSubject(tenant, ev.AgentID))
	m.Data = data
	// Dedupe is per tenant: two tenants may well pick the same UUID.
	m.Header.Set(jetstream.MsgIDHeader, tenant+":"+ev.EventID)
	// The event's verdict continues the trace of this request (no span per
	// event: a batch holds up to a thousand).
	telemetry.Inject(ctx, m.Header)
	return m, arena, nil
}

func (s *Service) postEvent(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	now := time.Now()
	p := httpkit.Principal(c)
	def, err := defaultAgent(p, c.Request().Header)
	if err != nil {
		s.accepted.WithLabelValues(StatusRejected).Inc()
		return err
	}
	ev, sourceMS, err := event.DecodeFor(body, s.cfg.Limits, now, "", def)
	if err == nil {
		err = reports(p, ev.AgentID)
	}
	if err != nil {
		s.accepted.WithLabelValues(StatusRejected).Inc()
		return err
	}
	gate := s.agentGate(p.Tenant)
	if err := gate.admit(ev.AgentID, ""); err != nil {
		s.accepted.WithLabelValues(StatusRejected).Inc()
		return err
	}
	pol, err := s.redactionFor(c.Request().Context(), p.Tenant)
	if err != nil {
		return err
	}
	m, _, err := s.message(c.Request().Context(), pol, p.Tenant, ev, sourceMS, clientInfo(c.Request().Header), p.KeyID, now, nil)
	if err != nil {
		return err
	}
	// The wait for the ack is bounded by PublishTimeout alone, not by the
	// client's connection: a child of the request's context registered
	// itself (a map and a lock) on that context on every request. A
	// client that leaves meanwhile changes nothing: the event is stored
	// or not either way, and a retry is deduplicated by its id.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request().Context()), s.cfg.PublishTimeout)
	defer cancel()
	ack, err := s.publisher().PublishMsg(ctx, m)
	if err != nil {
		s.publishErr.Inc()
		s.accepted.WithLabelValues(StatusFailed).Inc()
		return apperr.Unavailable("event store did not acknowledge the event; retry", time.Second, err)
	}
	consistency.Note(c.Request().Context(), streams.Ingest, ack.Sequence)
	r := Result{EventID: ev.EventID, Status: StatusAccepted, Accepted: true, Duplicate: ack.Duplicate, Sequence: ack.Sequence}
	counted := s.stored
	if ack.Duplicate {
		r.Status, counted = StatusDuplicate, s.duplicates
	}
	counted.Inc()
	return writeResult(c, http.StatusAccepted, &r)
}

// decodeBatch accepts {"events":[...]} or a bare array. The events are
// slices of body, validated with it once.
func decodeBatch(body []byte) ([]event.Item, error) {
	items, ok := event.SplitBatch(body)
	if !ok {
		return nil, apperr.Validation("batch body must be {\"events\":[...]} or a JSON array of events",
			apperr.FieldError{Path: "events", Code: event.CodeMalformed, Message: "malformed JSON"})
	}
	return items, nil
}

func (s *Service) postBatch(c echo.Context) error {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBatchBodyBytes)
	if err != nil {
		return err
	}
	items, err := decodeBatch(body)
	if err != nil {
		return err
	}
	switch {
	case len(items) == 0:
		return apperr.Validation("batch is empty", apperr.FieldError{Path: "events", Code: event.CodeRequired, Message: "at least one event is required"})
	case len(items) > s.cfg.MaxBatch:
		return apperr.Validation("batch is too large", apperr.FieldError{Path: "events", Code: event.CodeTooLong,
			Message: fmt.Sprintf("a batch holds at most %d events", s.cfg.MaxBatch)})
	}
	raws := make([]item, len(items))
	for i, it := range items {
		raws[i] = item{ev: it, path: "events[" + strconv.Itoa(i) + "]."}
	}
	resp, err := s.storeItems(c, raws)
	if err != nil {
		return err
	}
	if resp.Failed > 0 && resp.Failed == len(items)-resp.Rejected {
		// Nothing was stored: tell the client to back off and retry.
		c.Response().Header().Set("Retry-After", "1")
		return writeBatch(c, http.StatusServiceUnavailable, resp)
	}
	return writeBatch(c, http.StatusAccepted, resp)
}

// item is one event of a multi-event request: its JSON, to be decoded
// and validated, or the reason the receiver refused it before that (err).
// path prefixes its error paths ("events[3].").
type item struct {
	ev   event.Item
	err  error
	path string
}

// storeItems is the one path every multi-event receiver (the batch and
// OTLP traces) stores through: rate limit by the number of events,
// decode and validate each, check the sender may report for its agent and
// the agent cap, redact, publish asynchronously and wait for the acks.
// Each item gets its own result; an error is returned only when the
// request as a whole is refused (sender headers, rate limit).
func (s *Service) storeItems(c echo.Context, items []item) (BatchResponse, error) {
	p := httpkit.Principal(c)
	def, err := defaultAgent(p, c.Request().Header)
	if err != nil {
		return BatchResponse{}, err
	}
	// A batch costs what it carries: batching must not multiply the rate.
	if err := s.deps.Limiter.Take(c, ratelimit.Ingest, len(items)); err != nil {
		return BatchResponse{}, err
	}

	now := time.Now()
	cl := clientInfo(c.Request().Header)
	resp := BatchResponse{Results: make([]Result, len(items))}
	futures := make([]jetstream.PubAckFuture, len(items))
	// One connection for the whole request: its events reach the stream
	// in the order they were sent.
	js := s.publisher()
	gate := s.agentGate(p.Tenant)
	// The tenant's redaction policy, looked up once, when the first event
	// is to be published (a request of refused events needs none).
	var (
		pol    *redact.Policy
		polErr error
		looked bool
	)
	// The batch's records, in one allocation: each takes about its
	// event's size, plus the fields ingest adds.
	size := 0
	for _, it := range items {
		size += len(it.ev.Raw()) + recordSlack/2
	}
	arena := make([]byte, 0, size)
	for i, it := range items {
		resp.Results[i].Index = i
		err := it.err
		var (
			ev       event.Event
			sourceMS int64
		)
		if err == nil {
			ev, sourceMS, err = it.ev.DecodeFor(s.cfg.Limits, now, it.path, def)
		}
		if err == nil {
			resp.Results[i].EventID = ev.EventID
			// Another agent's event is refused alone (before it counts
			// against the agent cap); the rest of the batch is stored.
			err = reports(p, ev.AgentID)
		}
		if err == nil {
			err = gate.admit(ev.AgentID, it.path)
		}
		if err != nil {
			resp.Results[i].Status = StatusRejected
			resp.Results[i].Error = detailOf(err)
			continue
		}
		if !looked {
			pol, polErr = s.redactionFor(c.Request().Context(), p.Tenant)
			looked = true
		}
		var m *nats.Msg
		err = polErr
		if err == nil {
			m, arena, err = s.message(c.Request().Context(), pol, p.Tenant, ev, sourceMS, cl, p.KeyID, now, arena)
		}
		if err == nil {
			futures[i], err = js.PublishMsgAsync(m)
		}
		if err != nil {
			resp.Results[i].Status = StatusFailed
			resp.Results[i].Error = detailOf(apperr.Unavailable("event store did not accept the event; retry", time.Second, err))
		}
	}

	deadline := time.NewTimer(s.cfg.PublishTimeout)
	defer deadline.Stop()
	for i, f := range futures {
		if f == nil {
			continue
		}
		r := &resp.Results[i]
		select {
		case ack := <-f.Ok():
			r.Status, r.Accepted, r.Duplicate, r.Sequence = StatusAccepted, true, ack.Duplicate, ack.Sequence
			consistency.Note(c.Request().Context(), streams.Ingest, ack.Sequence)
			if ack.Duplicate {
				r.Status = StatusDuplicate
			}
		case err := <-f.Err():
			r.Status, r.Error = StatusFailed, detailOf(apperr.Unavailable("event store did not acknowledge the event; retry", time.Second, err))
		case <-deadline.C:
			// Not acknowledged in time: reported as failed so the client
			// retries it. If it was stored after all, the retry is a
			// duplicate and is stored once.
			r.Status, r.Error = StatusFailed, detailOf(apperr.Unavailable("event store did not acknowledge the event in time; retry", time.Second, errors.New("timeout")))
			deadline.Reset(0)
		case <-c.Request().Context().Done():
			r.Status, r.Error = StatusFailed, detailOf(apperr.Unavailable("request cancelled", time.Second, c.Request().Context().Err()))
		}
	}
	for _, r := range resp.Results {
		switch r.Status {
		case StatusAccepted:
			resp.Accepted++
		case StatusDuplicate:
			resp.Duplicates++
		case StatusRejected:
			resp.Rejected++
		case StatusFailed:
			resp.Failed++
		}
	}
	s.accepted.WithLabelValues(StatusAccepted).Add(float64(resp.Accepted))
	s.accepted.WithLabelValues(StatusDuplicate).Add(float64(resp.Duplicates))
	s.accepted.WithLabelValues(StatusRejected).Add(float64(resp.Rejected))
	s.accepted.WithLabelValues(StatusFailed).Add(float64(resp.Failed))
	if resp.Failed > 0 {
		s.publishErr.Add(float64(resp.Failed))
	}
	return resp, nil
}

// defaultAgent is the agent an agent key's events are attributed to when
// they name none: the one named by X-Agent-Id, which must be one the key
// is bound to (403 otherwise), else the key's only agent. People, other
// keys and agent keys not yet bound get "": their events name their agent.
func defaultAgent(p auth.Principal, h http.Header) (string, error) {
	if !p.Bound() || len(p.Agents) == 0 {
		return "", nil
	}
	if named := h.Get("X-Agent-Id"); named != "" || len(p.Agents) == 1 {
		return p.AgentFor(named)
	}
	return "", nil
}

// reports refuses an event for an agent the sender may not report for.
func reports(p auth.Principal, agentID string) error {
	if !p.Covers(agentID) {
		return apperr.Forbidden(fmt.Sprintf("this agent key may not report events of agent %q", agentID))
	}
	return nil
}

func detailOf(err error) *httpkit.Detail {
	var ae *apperr.Error
	if !errors.As(err, &ae) {
		return &httpkit.Detail{Code: "INTERNAL_ERROR", Message: err.Error()}
	}
	d := httpkit.DetailOf(ae)
	return &d
}

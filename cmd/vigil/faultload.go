package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/google/uuid"
)

// faultLoad is the load of the fault experiments (`vigil chaos` and the
// cluster test): workers that report events and ask for decisions while
// something breaks, remembering exactly what Vigil acknowledged (a 2xx),
// and the check that everything acknowledged is read back once. An event
// that was not acknowledged is sent again with the same eventId (as a
// client should), so an event stored whose ack was lost must still be
// read once; a decision that was not acknowledged is not retried (a new
// request is a new decision).
type faultLoad struct {
	client *http.Client
	key    string
	// ingest and api are base URLs the workers spread their requests
	// over (the same URL for an all-in-one); on a failure a worker moves
	// to the next one.
	ingest, api []string
	// agent prefixes the agents: each worker reports as its own agent in
	// its own session, and moves to a new one every agentSpan rounds,
	// so that every list read back is short.
	agent string
	run   string
	// tool is what each decision asks about ("search" unless set).
	tool string
	// pace, when set, is the least time between one worker's rounds (an
	// event and a decision), which bounds the load (and what is read
	// back) however fast Vigil answers.
	pace time.Duration

	mu        sync.Mutex
	events    map[string]string // acked eventId → session
	decisions map[string]bool   // acked decisionId
	// sessions are the agents (and sessions, named alike) used.
	sessions  map[string]bool
	failures  atomic.Int64
	firstFail string
	// lastFail and firstOK after it measure how long a fault kept
	// requests failing.
	lastFail atomic.Int64
}

func newFaultLoad(key, agent string, ingest, api []string) *faultLoad {
	return &faultLoad{
		client: &http.Client{Timeout: 5 * time.Second},
		key:    key, agent: agent, ingest: ingest, api: api, run: uuid.NewString()[:8], tool: "search",
		events: map[string]string{}, decisions: map[string]bool{}, sessions: map[string]bool{},
	}
}

// do sends one request and reports the status, the body and any error.
func (l *faultLoad) do(ctx context.Context, method, u string, body any) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+l.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := l.client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, b, err
}

// agentSpan is how many events and decisions a worker reports as one
// agent before it moves to the next.
const agentSpan = 100

// autoRegister lets the tenant's agents register with their first
// decision (POST /v1/settings/agents), so that workers can move to new
// agents as they go.
func (l *faultLoad) autoRegister(ctx context.Context) error {
	for {
		st, b, err := l.do(ctx, http.MethodPost, l.api[0]+"/v1/settings/agents", map[string]any{"autoRegister": true})
		if err == nil && st/100 == 2 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("enable agent auto-registration: %d %s %v", st, b, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Run drives workers until ctx ends: each alternates an event and a
// decision.
func (l *faultLoad) Run(ctx context.Context, workers int) {
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.worker(ctx, w)
		}()
	}
	wg.Wait()
}

func (l *faultLoad) fail(what string, st int, b []byte, err error) {
	l.failures.Add(1)
	l.lastFail.Store(time.Now().UnixNano())
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.firstFail == "" {
		l.firstFail = fmt.Sprintf("%s: %d %.200s %v", what, st, b, err)
	}
}

func (l *faultLoad) worker(ctx context.Context, w int) {
	in, ap := w, w
	next := time.Now()
	for n := 0; ctx.Err() == nil; n++ {
		if l.pace > 0 {
			next = next.Add(l.pace)
			if d := time.Until(next); d > 0 {
				select {
				case <-time.After(d):
				case <-ctx.Done():
					return
				}
			} else {
				next = time.Now()
			}
		}
		agent := fmt.Sprintf("%s-%s-%d-%d", l.agent, l.run, w, n/agentSpan)
		session := agent
		if n%agentSpan == 0 {
			l.mu.Lock()
			l.sessions[session] = true
			l.mu.Unlock()
		}
		// An event, retried with its id until acknowledged or the run ends.
		id := uuid.NewString()
		ev := map[string]any{"eventId": id, "agentId": agent, "sessionId": session, "category": "tool_call",
			"schemaVersion": "1.0", "sourceTimestamp": time.Now().UTC().Format(time.RFC3339Nano),
			"payload": map[string]any{"tool": "search", "n": rand.IntN(1000)}}
		for ctx.Err() == nil {
			st, b, err := l.do(ctx, http.MethodPost, l.ingest[in%len(l.ingest)]+"/v1/events", ev)
			if err == nil && st == http.StatusAccepted {
				l.mu.Lock()
				l.events[id] = session
				l.mu.Unlock()
				break
			}
			if ctx.Err() != nil {
				break
			}
			l.fail("event", st, b, err)
			in++
			time.Sleep(50 * time.Millisecond)
		}
		if ctx.Err() != nil {
			return
		}
		st, b, err := l.do(ctx, http.MethodPost, l.api[ap%len(l.api)]+"/v1/decisions.evaluate",
			map[string]any{"agentId": agent, "action": l.tool, "sessionId": session})
		var d struct {
			DecisionID string `json:"decisionId"`
		}
		if err == nil && st == http.StatusOK && json.Unmarshal(b, &d) == nil && d.DecisionID != "" {
			l.mu.Lock()
			l.decisions[d.DecisionID] = true
			l.mu.Unlock()
			continue
		}
		if ctx.Err() == nil {
			l.fail("decision", st, b, err)
			ap++
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// faultResult is what one experiment found.
type faultResult struct {
	Name string
	// Acked counts acknowledged events and decisions; Lost those not
	// read back; Duplicated those read back more than once (or sealed
	// twice in the ledger).
	Acked, Lost, Duplicated int
	// LedgerLeaves is the tenant's tree size; LedgerDuplicated counts
	// records sealed twice, LedgerMissing acknowledged ones not sealed.
	LedgerLeaves                    uint64
	LedgerMissing, LedgerDuplicated int
	Failures                        int64
	// FirstFailure describes the first failed request.
	FirstFailure string
	// Recovery is how long after the fault ended requests kept failing
	// (the last failed request), and CatchUp how long after the load
	// stopped until every acknowledged write was read back.
	Recovery, CatchUp time.Duration
	Err               error
}

// Check reads everything back through the api at base until every
// acknowledged event and decision is there (or within ends), and counts
// what is missing and what is doubled. ledger, if set, counts the
// tenant's ledger leaves for the same records.
func (l *faultLoad) Check(ctx context.Context, base string, within time.Duration, ledger func(ctx context.Context, events, decisions map[string]bool) (leaves uint64, missing, dup int, err error)) faultResult {
	l.mu.Lock()
	events := map[string]bool{}
	for id := range l.events {
		events[id] = true
	}
	decisions := map[string]bool{}
	for id := range l.decisions {
		decisions[id] = true
	}
	var sessions []string
	for s := range l.sessions {
		sessions = append(sessions, s)
	}
	l.mu.Unlock()
	r := faultResult{Acked: len(events) + len(decisions), Failures: l.failures.Load(), FirstFailure: l.firstFail}
	start := time.Now()
	deadline := start.Add(within)
	for {
		lost, dup, err := l.readBack(ctx, base, sessions, events, decisions)
		if err == nil && ledger != nil {
			var lm, ld int
			r.LedgerLeaves, lm, ld, err = ledger(ctx, events, decisions)
			r.LedgerMissing, r.LedgerDuplicated = lm, ld
			if err == nil && lm > 0 {
				err = fmt.Errorf("%d records not sealed yet", lm)
			}
		}
		r.Lost, r.Duplicated, r.Err = lost, dup, err
		if (err == nil && lost == 0) || time.Now().After(deadline) || ctx.Err() != nil {
			r.CatchUp = time.Since(start)
			return r
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// readBack lists every session's events and every agent's decisions
// (an agent and its session share a name), eight at a time, with a
// patient client: reads are slow on a loaded machine.
func (l *faultLoad) readBack(ctx context.Context, base string, sessions []string, events, decisions map[string]bool) (lost, dup int, err error) {
	rl := &faultLoad{client: &http.Client{Timeout: 60 * time.Second}, key: l.key}
	var mu sync.Mutex
	seen := map[string]int{}
	errs := make([]error, len(sessions))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, s := range sessions {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ids, err := rl.readAgent(ctx, base, s)
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				seen[id]++
			}
			errs[i] = err
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return 0, 0, err
	}
	for _, n := range seen {
		if n > 1 {
			dup++
		}
	}
	for _, ids := range []map[string]bool{events, decisions} {
		for id := range ids {
			if seen[id] == 0 {
				lost++
			}
		}
	}
	return lost, dup, nil
}

// readAgent returns the event ids of session s and the decision ids of
// agent s, as listed (an id listed twice appears twice).
func (l *faultLoad) readAgent(ctx context.Context, base, s string) ([]string, error) {
	var ids []string
	cursor := ""
	for {
		u := base + "/v1/sessions/" + url.PathEscape(s) + "?limit=1000"
		if cursor != "" {
			u += "&cursor=" + url.QueryEscape(cursor)
		}
		st, b, err := l.do(ctx, http.MethodGet, u, nil)
		if st == http.StatusNotFound {
			break // no event of this session projected yet
		}
		if err != nil || st != http.StatusOK {
			return nil, fmt.Errorf("GET session %s: %d %s %v", s, st, b, err)
		}
		var pg struct {
			Events []struct {
				EventID string `json:"eventId"`
			} `json:"events"`
			NextCursor *string `json:"nextCursor"`
		}
		if err := json.Unmarshal(b, &pg); err != nil {
			return nil, fmt.Errorf("session %s: %w", s, err)
		}
		for _, e := range pg.Events {
			ids = append(ids, e.EventID)
		}
		if pg.NextCursor == nil {
			break
		}
		cursor = *pg.NextCursor
	}
	for offset := 0; ; offset += 100 {
		u := fmt.Sprintf("%s/v1/verdicts?agent=%s&source=decision&since=24h&limit=100&offset=%d", base, url.QueryEscape(s), offset)
		st, b, err := l.do(ctx, http.MethodGet, u, nil)
		if err != nil || st != http.StatusOK {
			return nil, fmt.Errorf("GET verdicts: %d %s %v", st, b, err)
		}
		var pg struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			HasMore bool `json:"hasMore"`
		}
		if err := json.Unmarshal(b, &pg); err != nil {
			return nil, fmt.Errorf("verdicts: %w", err)
		}
		for _, d := range pg.Data {
			ids = append(ids, d.ID)
		}
		if !pg.HasMore {
			return ids, nil
		}
	}
}

// ledgerCheck counts, for the api key's tenant, the ledger leaves of the
// acknowledged events and decisions: missing ones and ones sealed twice.
// The tree size is what users read (GET /v1/ledger/checkpoint at
// ledgerBase); every leaf below it must be one distinct record.
func (l *faultLoad) ledgerCheck(ch driver.Conn, tenant, ledgerBase string) func(ctx context.Context, events, decisions map[string]bool) (uint64, int, int, error) {
	return func(ctx context.Context, events, decisions map[string]bool) (uint64, int, int, error) {
		st, b, err := l.do(ctx, http.MethodGet, ledgerBase+"/v1/ledger/checkpoint", nil)
		if err != nil || st != http.StatusOK {
			return 0, 0, 0, fmt.Errorf("GET checkpoint: %d %s %v", st, b, err)
		}
		var cp struct {
			TreeSize uint64 `json:"treeSize"`
		}
		if err := json.Unmarshal(b, &cp); err != nil {
			return 0, 0, 0, fmt.Errorf("checkpoint: %w", err)
		}
		rows, err := ch.Query(ctx, `SELECT kind, record_id, count() FROM ledger_leaves FINAL
			WHERE tenant_id = ? AND idx < ? GROUP BY kind, record_id`, tenant, cp.TreeSize)
		if err != nil {
			return 0, 0, 0, fmt.Errorf("ledger leaves: %w", err)
		}
		defer rows.Close()
		seen := map[string]uint64{}
		var leaves uint64
		dup := 0
		for rows.Next() {
			var kind, id string
			var n uint64
			if err := rows.Scan(&kind, &id, &n); err != nil {
				return 0, 0, 0, err
			}
			leaves += n
			if kind == "event" || kind == "decision" {
				seen[id] += n
			}
			if n > 1 {
				dup++
			}
		}
		if err := rows.Err(); err != nil {
			return 0, 0, 0, err
		}
		if leaves != cp.TreeSize {
			return cp.TreeSize, 0, dup, fmt.Errorf("tree size %d but %d leaves stored below it", cp.TreeSize, leaves)
		}
		missing := 0
		for _, ids := range []map[string]bool{events, decisions} {
			for id := range ids {
				if seen[id] == 0 {
					missing++
				}
			}
		}
		return cp.TreeSize, missing, dup, nil
	}
}

// ackedDecisions is a copy of the acknowledged decision ids.
func (l *faultLoad) ackedDecisions() map[string]bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]bool, len(l.decisions))
	for id := range l.decisions {
		out[id] = true
	}
	return out
}

// acked counts the writes acknowledged so far.
func (l *faultLoad) acked() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.events) + len(l.decisions)
}

// RecoveredAfter is how long after t requests kept failing (0 if none
// failed after t).
func (l *faultLoad) RecoveredAfter(t time.Time) time.Duration {
	last := time.Unix(0, l.lastFail.Load())
	if last.Before(t) {
		return 0
	}
	return last.Sub(t)
}

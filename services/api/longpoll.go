package api

import (
	"context"
	"net/http"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// longPollRetryAfter is what a caller over its long-poll cap is told to
// wait: long enough for one of its own polls to end or be answered.
const longPollRetryAfter = 5 * time.Second

// longPolls caps the long-polls each caller (API key or member) holds open
// at once on this api instance, so one key cannot tie up the instance's
// connections and goroutines.
type longPolls struct {
	max     int
	mu      sync.Mutex
	open    map[string]int
	active  prometheus.Gauge
	refused prometheus.Counter
}

func newLongPolls(max int) *longPolls {
	return &longPolls{
		max: max, open: map[string]int{},
		active: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "vigil_api_long_polls", Help: "Long-polls (GET /v1/decisions/:id?wait=) open on this instance.",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "vigil_api_long_polls_refused_total", Help: "Long-polls refused because the caller had its cap open (429).",
		}),
	}
}

// acquire takes one of who's long-poll slots; release gives it back.
func (l *longPolls) acquire(who string) (release func(), err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[who] >= l.max {
		l.refused.Inc()
		return nil, &apperr.Error{Kind: apperr.KindRateLimited, RetryAfter: longPollRetryAfter,
			Message: "too many long-polls open for this caller; retry after one ends"}
	}
	l.open[who]++
	l.active.Inc()
	var once sync.Once
	return func() {
		once.Do(func() {
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.open[who]--; l.open[who] <= 0 {
				delete(l.open, who)
			}
			l.active.Dec()
		})
	}, nil
}

// getDecision returns a decision, and for require_approval its pending
// action; with ?wait it long-polls until the outcome is final.
//
// The record is read once (read-your-writes: an id a door returned is
// found at once, from any instance). Only a require_approval decision
// waits, and it waits on the approval board, which wakes on every
// GUARDIAN change: a long-poll makes no ClickHouse query while it waits.
func (s *Service) getDecision(c echo.Context) error {
	wait, err := parseWait(c)
	if err != nil {
		return err
	}
	p, id := httpkit.Principal(c), pathID(c)
	rec, err := s.ownDecision(c, p, id, "read")
	if err != nil {
		return err
	}
	if rec.Decision.Outcome != rules.RequireApproval {
		return c.JSON(http.StatusOK, s.decisionView(c, &rec, nil))
	}
	a, ok := s.deps.Board.ByDecision(p.Tenant, id)
	if wait > 0 && !(ok && a.Status.Final()) {
		release, err := s.longPolls.acquire(p.Tenant + "\x00" + p.Actor())
		if err != nil {
			return err
		}
		defer release()
		ctx, cancel := context.WithTimeout(c.Request().Context(), wait)
		a, ok = s.deps.Board.Wait(ctx, p.Tenant, id)
		cancel()
	}
	var pending *approval.Action
	if ok {
		pending = &a
	}
	return c.JSON(http.StatusOK, s.decisionView(c, &rec, pending))
}

// ownDecision reads decision id of p's tenant; an agent key gets only its
// own agents' decisions (403 for the verb otherwise).
func (s *Service) ownDecision(c echo.Context, p auth.Principal, id, verb string) (rules.DecisionRecord, error) {
	rec, err := s.decisionRecord(c, id)
	if err != nil {
		return rec, err
	}
	if !p.ActsAs(rec.AgentID) {
		return rec, apperr.Forbidden("this agent key may not " + verb + " decisions of other agents")
	}
	return rec, nil
}

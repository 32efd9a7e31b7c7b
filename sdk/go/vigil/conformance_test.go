package vigil_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/sdk/go/vigil"
)

// The Go runner of the SDK conformance scenarios (sdk/conformance): the
// harness there starts Vigil and runs this test with the environment its
// README describes. Without that environment it is skipped.

type scenarioFile struct {
	Scenarios []scenario `json:"scenarios"`
}

type scenario struct {
	ID     string        `json:"id"`
	Title  string        `json:"title"`
	Client clientOptions `json:"client"`
	Steps  []step        `json:"steps"`
	Person string        `json:"person"`
}

type clientOptions struct {
	BatchSize         int  `json:"batchSize"`
	LingerMs          int  `json:"lingerMs"`
	MaxRetries        *int `json:"maxRetries"`
	BackoffMs         int  `json:"backoffMs"`
	ApprovalTimeoutMs int  `json:"approvalTimeoutMs"`
	Breaker           *struct {
		Failures   int `json:"failures"`
		CooldownMs int `json:"cooldownMs"`
	} `json:"breaker"`
}

type step struct {
	Op    string `json:"op"`
	Event struct {
		Category string         `json:"category"`
		Payload  map[string]any `json:"payload"`
	} `json:"event"`
	Count  *int `json:"count"`
	Action struct {
		Tool      string         `json:"tool"`
		Arguments map[string]any `json:"arguments"`
		Context   map[string]any `json:"context"`
	} `json:"action"`
	RunArguments  map[string]any `json:"runArguments"`
	OnBreakerOpen string         `json:"onBreakerOpen"`
	Expect        struct {
		Proceed     *bool    `json:"proceed"`
		Outcome     string   `json:"outcome"`
		ReasonCodes []string `json:"reasonCodes"`
		Error       string   `json:"error"`
		FailedOpen  bool     `json:"failedOpen"`
	} `json:"expect"`
	Ms int `json:"ms"`
	// expectRequests
	Method                  string `json:"method"`
	Path                    string `json:"path"`
	Items                   *int   `json:"items"`
	Faulted                 *int   `json:"faulted"`
	Refused                 *int   `json:"refused"`
	AllHaveIdempotencyKey   bool   `json:"allHaveIdempotencyKey"`
	SameIdempotencyKey      bool   `json:"sameIdempotencyKey"`
	DistinctIdempotencyKeys bool   `json:"distinctIdempotencyKeys"`
	SameDecisionID          bool   `json:"sameDecisionId"`
	raw                     json.RawMessage
}

func (s *step) UnmarshalJSON(b []byte) error {
	type plain step
	if err := json.Unmarshal(b, (*plain)(s)); err != nil {
		return err
	}
	s.raw = append(json.RawMessage(nil), b...)
	return nil
}

type env struct {
	url, key, agent, control, run string
}

func TestConformance(t *testing.T) {
	e := env{os.Getenv("VIGIL_URL"), os.Getenv("VIGIL_API_KEY"), os.Getenv("VIGIL_AGENT_ID"), os.Getenv("VIGIL_CONFORMANCE_CONTROL"), os.Getenv("VIGIL_CONFORMANCE_RUN")}
	if e.control == "" {
		t.Skip("VIGIL_CONFORMANCE_CONTROL not set: run through sdk/conformance")
	}
	raw, err := os.ReadFile(os.Getenv("VIGIL_CONFORMANCE_SCENARIOS"))
	if err != nil {
		t.Fatal(err)
	}
	var sf scenarioFile
	if err := json.Unmarshal(raw, &sf); err != nil {
		t.Fatal(err)
	}
	for _, sc := range sf.Scenarios {
		t.Run(sc.ID, func(t *testing.T) { play(t, e, sc) })
	}
}

func play(t *testing.T, e env, sc scenario) {
	ctl(t, e, "/reset", nil)
	opts := []vigil.Option{vigil.WithAgent(e.agent)}
	co := sc.Client
	if co.BatchSize > 0 || co.LingerMs > 0 {
		size, linger := max(co.BatchSize, 100), time.Duration(co.LingerMs)*time.Millisecond
		if co.BatchSize > 0 {
			size = co.BatchSize
		}
		if linger == 0 {
			linger = time.Second
		}
		opts = append(opts, vigil.WithBatch(size, linger))
	}
	if co.MaxRetries != nil {
		opts = append(opts, vigil.WithRetries(*co.MaxRetries))
	}
	if co.BackoffMs > 0 {
		opts = append(opts, vigil.WithBackoff(time.Duration(co.BackoffMs)*time.Millisecond, 10*time.Second))
	}
	if co.ApprovalTimeoutMs > 0 {
		opts = append(opts, vigil.WithApprovalTimeout(time.Duration(co.ApprovalTimeoutMs)*time.Millisecond))
	}
	if co.Breaker != nil {
		opts = append(opts, vigil.WithBreaker(co.Breaker.Failures, time.Duration(co.Breaker.CooldownMs)*time.Millisecond))
	}
	c, err := vigil.New(e.url, e.key, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	session := e.run + "." + sc.ID
	ctx := vigil.ContextWithSession(context.Background(), session)
	for i, s := range sc.Steps {
		what := fmt.Sprintf("step %d (%s)", i, s.Op)
		switch s.Op {
		case "report":
			n := 1
			if s.Count != nil {
				n = *s.Count
			}
			for range n {
				if err := c.Report(ctx, vigil.Event{Category: s.Event.Category, Payload: s.Event.Payload}); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
			}
		case "flush":
			fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			err := c.Flush(fctx)
			cancel()
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case "close":
			if err := c.Close(); err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case "guard":
			guardStep(t, ctx, c, s, what)
		case "fault":
			ctl(t, e, "/faults", s.raw)
		case "down":
			ctl(t, e, "/down", nil)
		case "up":
			ctl(t, e, "/up", nil)
		case "sleep":
			time.Sleep(time.Duration(s.Ms) * time.Millisecond)
		case "expectRequests":
			expectRequests(t, e, s, what)
		case "expectEvents":
			expectEvents(t, e, session, *s.Count, what)
		default:
			t.Fatalf("%s: unknown op", what)
		}
	}
}

// errorName is the neutral name of an SDK error (README.md).
func errorName(err error) string {
	for _, k := range []struct {
		target error
		name   string
	}{
		{vigil.ErrBlocked, "blocked"}, {vigil.ErrApprovalRejected, "approval_rejected"},
		{vigil.ErrApprovalTimeout, "approval_timeout"}, {vigil.ErrArgumentsMismatch, "arguments_mismatch"},
		{vigil.ErrBreakerOpen, "breaker_open"}, {vigil.ErrUnavailable, "unavailable"},
	} {
		if errors.Is(err, k.target) {
			return k.name
		}
	}
	return fmt.Sprintf("other: %v", err)
}

func guardStep(t *testing.T, ctx context.Context, c *vigil.Client, s step, what string) {
	t.Helper()
	a := vigil.Action{Tool: s.Action.Tool, Arguments: s.Action.Arguments, Context: s.Action.Context}
	var opts []vigil.CallOption
	if s.OnBreakerOpen == "fail_open" {
		opts = append(opts, vigil.OnBreakerOpen(vigil.FailOpen))
	}
	gctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var d *vigil.Decision
	var err error
	if s.RunArguments != nil {
		if d, err = c.Ask(gctx, a, opts...); err == nil {
			err = c.Redeem(gctx, d, s.RunArguments)
		}
	} else {
		d, err = c.Guard(gctx, a, opts...)
	}
	x := s.Expect
	if x.Proceed != nil && *x.Proceed != (err == nil) {
		t.Fatalf("%s: proceed %v, want %v (error %v)", what, err == nil, *x.Proceed, err)
	}
	if x.Error != "" {
		if got := errorName(err); got != x.Error {
			t.Fatalf("%s: error %s, want %s", what, got, x.Error)
		}
	}
	var blocked *vigil.BlockedError
	if errors.As(err, &blocked) && blocked.Decision != d {
		t.Fatalf("%s: the BlockedError carries another decision", what)
	}
	if x.Outcome != "" && (d == nil || string(d.Outcome) != x.Outcome) {
		t.Fatalf("%s: decision %+v, want outcome %s (error %v)", what, d, x.Outcome, err)
	}
	if x.ReasonCodes != nil && (d == nil || !slices.Equal(d.ReasonCodes, x.ReasonCodes)) {
		t.Fatalf("%s: decision %+v, want reason codes %v", what, d, x.ReasonCodes)
	}
	if x.FailedOpen && (d == nil || !d.FailedOpen) {
		t.Fatalf("%s: decision %+v, want failed open", what, d)
	}
}

type logged struct {
	Requests []struct {
		Method         string `json:"method"`
		Path           string `json:"path"`
		IdempotencyKey string `json:"idempotencyKey"`
		Faulted        bool   `json:"faulted"`
		Items          int    `json:"items"`
		DecisionID     string `json:"decisionId"`
	} `json:"requests"`
	Refused int `json:"refused"`
}

// pathMatches compares a path with a pattern whose * is one segment.
func pathMatches(pattern, p string) bool {
	ok, _ := path.Match(pattern, p)
	return ok
}

func expectRequests(t *testing.T, e env, s step, what string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var l logged
		if err := json.Unmarshal(ctl(t, e, "GET /requests", nil), &l); err != nil {
			t.Fatal(err)
		}
		var sel []int
		for i, r := range l.Requests {
			if (s.Method == "" || r.Method == s.Method) && (s.Path == "" || pathMatches(s.Path, r.Path)) {
				sel = append(sel, i)
			}
		}
		countOK := s.Count == nil || len(sel) == *s.Count
		refusedOK := s.Refused == nil || l.Refused == *s.Refused
		if !countOK || !refusedOK {
			if (s.Count != nil && len(sel) > *s.Count) || time.Now().After(deadline) {
				t.Fatalf("%s: %d matching requests (want %v), %d refused (want %v): %+v", what, len(sel), deref(s.Count), l.Refused, deref(s.Refused), l)
			}
			time.Sleep(50 * time.Millisecond)
			continue
		}
		items, faulted := 0, 0
		keys, decisions := map[string]bool{}, map[string]bool{}
		for _, i := range sel {
			r := l.Requests[i]
			items += r.Items
			if r.Faulted {
				faulted++
			}
			if s.AllHaveIdempotencyKey && r.IdempotencyKey == "" {
				t.Fatalf("%s: request %d has no Idempotency-Key", what, i)
			}
			if s.DistinctIdempotencyKeys && keys[r.IdempotencyKey] {
				t.Fatalf("%s: Idempotency-Key %q reused: %+v", what, r.IdempotencyKey, l)
			}
			keys[r.IdempotencyKey] = true
			if r.DecisionID != "" {
				decisions[r.DecisionID] = true
			}
		}
		switch {
		case s.Items != nil && items != *s.Items:
			t.Fatalf("%s: %d items, want %d: %+v", what, items, *s.Items, l)
		case s.Faulted != nil && faulted != *s.Faulted:
			t.Fatalf("%s: %d faulted, want %d: %+v", what, faulted, *s.Faulted, l)
		case s.SameIdempotencyKey && (len(keys) != 1 || keys[""]):
			t.Fatalf("%s: Idempotency-Keys %v, want one", what, keys)
		case s.SameDecisionID && len(decisions) != 1:
			t.Fatalf("%s: decision ids %v, want one", what, decisions)
		}
		return
	}
}

func deref(p *int) any {
	if p == nil {
		return "any"
	}
	return *p
}

func expectEvents(t *testing.T, e env, session string, want int, what string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		var got struct {
			Count int `json:"count"`
		}
		if err := json.Unmarshal(ctl(t, e, "GET /events?sessionId="+session, nil), &got); err != nil {
			t.Fatal(err)
		}
		if got.Count == want {
			return
		}
		if got.Count > want || time.Now().After(deadline) {
			t.Fatalf("%s: %d events stored for %s, want %d", what, got.Count, session, want)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// ctl calls the harness's control API: "GET /path" or a POST to path.
func ctl(t *testing.T, e env, path string, body []byte) []byte {
	t.Helper()
	method := http.MethodPost
	if m, p, ok := strings.Cut(path, " "); ok {
		method, path = m, p
	}
	req, err := http.NewRequest(method, e.control+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("control %s: %v", path, err)
	}
	defer res.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(res.Body)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("control %s: %d %s", path, res.StatusCode, b.String())
	}
	return b.Bytes()
}

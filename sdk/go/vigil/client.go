package vigil

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Version is the SDK's version, sent in the x-vigil-sdk header.
const Version = "0.1.0"

// Client talks to one Vigil deployment with one API key. It is safe for
// concurrent use. Close it to flush the reported events.
type Client struct {
	base    string
	key     string
	agent   string
	hc      *http.Client
	retries int
	backoff time.Duration
	maxWait time.Duration
	attempt time.Duration
	approve time.Duration
	onOpen  BreakerMode
	brk     *breaker
	batch   batchConfig
	onError func(error)
	events  *batcher
}

// Option configures a Client.
type Option func(*Client)

// WithAgent is the agent the client acts as when an Event or Action names
// none (with an agent key bound to one agent, Vigil infers it anyway).
func WithAgent(id string) Option { return func(c *Client) { c.agent = id } }

// WithHTTPClient replaces http.DefaultClient (for proxies, TLS, tracing).
// Set no Timeout on it: the SDK bounds each attempt itself, and an
// approval's long-poll lasts up to 30 s.
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.hc = hc } }

// WithRetries is how many times a request answered 429, 502, 503 or 504,
// or lost on the network, is retried (default 3; 0 never retries).
func WithRetries(n int) Option { return func(c *Client) { c.retries = max(n, 0) } }

// WithBackoff sets the backoff between retries: attempt n waits a random
// duration in [0, min(max, base·2ⁿ)] ("full jitter"), or what Retry-After
// says when the answer has one (capped at max). Defaults 200 ms and 10 s.
func WithBackoff(base, max time.Duration) Option {
	return func(c *Client) { c.backoff, c.maxWait = base, max }
}

// WithAttemptTimeout bounds one HTTP attempt (default 10 s; a long-poll
// gets its wait on top).
func WithAttemptTimeout(d time.Duration) Option { return func(c *Client) { c.attempt = d } }

// WithApprovalTimeout bounds how long Guard waits for a person to decide
// a require_approval (default 15 minutes, Vigil's default expiry); past
// it Guard fails with ErrApprovalTimeout and the action does not run.
func WithApprovalTimeout(d time.Duration) Option { return func(c *Client) { c.approve = d } }

// WithBreaker configures the circuit breaker: failures consecutive failed
// calls open it (default 5; 0 disables it); cooldown later one call probes
// (default 30 s).
func WithBreaker(failures int, cooldown time.Duration) Option {
	return func(c *Client) { c.brk = newBreaker(failures, cooldown) }
}

// WithBreakerMode is the client-wide default of what a call does while the
// breaker is open (FailClosed unless set); OnBreakerOpen overrides it per
// call site.
func WithBreakerMode(m BreakerMode) Option { return func(c *Client) { c.onOpen = m } }

// WithErrorHandler receives what the background sender cannot return to
// anyone: events Vigil rejected, batches dropped at Close. Default: none.
func WithErrorHandler(f func(error)) Option { return func(c *Client) { c.onError = f } }

// New returns a client of the Vigil at baseURL (e.g. http://localhost:8080)
// using apiKey. It starts the background sender of Report.
func New(baseURL, apiKey string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("vigil: base URL %q: want http(s)://host[:port]", baseURL)
	}
	if apiKey == "" {
		return nil, errors.New("vigil: an API key is required")
	}
	c := &Client{
		base: strings.TrimRight(baseURL, "/"), key: apiKey, hc: http.DefaultClient,
		retries: 3, backoff: 200 * time.Millisecond, maxWait: 10 * time.Second,
		attempt: 10 * time.Second, approve: 15 * time.Minute,
		brk: newBreaker(5, 30*time.Second), batch: defaultBatch,
	}
	for _, o := range opts {
		o(c)
	}
	if err := c.batch.validate(); err != nil {
		return nil, err
	}
	c.events = newBatcher(c)
	return c, nil
}

// request is one logical call: its attempts share the Idempotency-Key.
type request struct {
	method, path string
	body         any
	idemKey      string
	// wait is added to the attempt timeout (long-polls).
	wait time.Duration
}

// call sends r through the breaker with retries and decodes a 2xx answer
// into out (unless nil). It returns ErrBreakerOpen (no request sent), an
// *UnavailableError, an *APIError (a non-retryable answer), or the
// context's error.
func (c *Client) call(ctx context.Context, r request, out any) error {
	if !c.brk.allow() {
		return ErrBreakerOpen
	}
	var body []byte
	if r.body != nil {
		var err error
		if body, err = json.Marshal(r.body); err != nil {
			c.brk.done(resultNeutral)
			return fmt.Errorf("vigil: encode %s: %w", r.path, err)
		}
	}
	for attempt := 0; ; attempt++ {
		status, hdr, resp, err := c.once(ctx, r, body)
		if ctx.Err() != nil {
			c.brk.done(resultNeutral)
			return ctx.Err()
		}
		if err == nil && status >= 200 && status < 300 {
			c.brk.done(resultOK)
			if out == nil || len(resp) == 0 {
				return nil
			}
			if err := json.Unmarshal(resp, out); err != nil {
				return fmt.Errorf("vigil: decode the answer of %s: %w", r.path, err)
			}
			return nil
		}
		var last error = err
		var retryAfter time.Duration = -1
		if err == nil {
			ae := apiError(status, hdr, resp)
			last = ae
			if !retryable(status) {
				c.brk.done(resultOK) // Vigil answered: it is up
				return ae
			}
			if hdr.Get("Retry-After") != "" {
				retryAfter = ae.RetryAfter
			}
		}
		if attempt >= c.retries {
			// A throttled client is talking to a healthy Vigil.
			if status == http.StatusTooManyRequests {
				c.brk.done(resultOK)
			} else {
				c.brk.done(resultFailed)
			}
			return &UnavailableError{Attempts: attempt + 1, Err: last}
		}
		if err := sleep(ctx, c.delay(attempt, retryAfter)); err != nil {
			c.brk.done(resultNeutral)
			return err
		}
	}
}

// once makes one attempt.
func (c *Client) once(ctx context.Context, r request, body []byte) (int, http.Header, []byte, error) {
	actx, cancel := context.WithTimeout(ctx, c.attempt+r.wait)
	defer cancel()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(actx, r.method, c.base+r.path, rd)
	if err != nil {
		return 0, nil, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "vigil-go/"+Version)
	req.Header.Set("x-vigil-sdk", "go/"+Version)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if r.idemKey != "" {
		req.Header.Set("Idempotency-Key", r.idemKey)
	}
	res, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, err
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return 0, nil, nil, err
	}
	return res.StatusCode, res.Header, b, nil
}

func retryable(status int) bool {
	switch status {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// delay is the wait before retry attempt+1: Retry-After when the answer
// had one (≥ 0), else full jitter over an exponential ceiling.
func (c *Client) delay(attempt int, retryAfter time.Duration) time.Duration {
	if retryAfter >= 0 {
		return min(retryAfter, c.maxWait)
	}
	ceil := c.backoff << min(attempt, 30)
	if ceil <= 0 || ceil > c.maxWait {
		ceil = c.maxWait
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// parseRetryAfter reads delay-seconds or an HTTP date; -1 when absent or
// unreadable.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return -1
	}
	if s, err := strconv.Atoi(v); err == nil {
		if s < 0 {
			return -1
		}
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(t.Sub(now), 0)
	}
	return -1
}

// apiError reads Vigil's error envelope (either spelling).
func apiError(status int, hdr http.Header, body []byte) *APIError {
	e := &APIError{Status: status, RetryAfter: parseRetryAfter(hdr.Get("Retry-After"), time.Now())}
	if e.RetryAfter < 0 {
		e.RetryAfter = 0
	}
	var env struct {
		Error struct {
			Code    string `json:"code"`
			Message string `json:"message"`
			Details []struct {
				Code string `json:"code"`
			} `json:"details"`
		} `json:"error"`
		Code      string `json:"code"`
		Message   string `json:"message"`
		RequestID string `json:"requestId"`
	}
	if json.Unmarshal(body, &env) == nil {
		e.Code, e.Message, e.RequestID = env.Error.Code, env.Error.Message, env.RequestID
		if e.Code == "" {
			e.Code = env.Code
		}
		if e.Message == "" {
			e.Message = env.Message
		}
		if len(env.Error.Details) > 0 {
			e.Detail = env.Error.Details[0].Code
		}
	}
	if e.Code == "" {
		e.Code = http.StatusText(status)
	}
	return e
}

// newID is a random (version 4) UUID, for event ids and idempotency keys.
func newID() string {
	var b [16]byte
	_, _ = crand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

package mcpgate

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/mcppin"
	rules "github.com/vigilhq/vigil/pkg/policy"
)

// ErrVigilUnavailable wraps every failure to get an answer from Vigil: the
// gateway refuses what it cannot have decided (fail closed).
var ErrVigilUnavailable = errors.New("vigil unavailable")

// APIError is an error answer of the Vigil API, in its envelope.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("vigil: HTTP %d %s: %s", e.Status, e.Code, e.Message)
}

// vigil is the gateway's client of the Vigil HTTP API, with an agent key.
type vigil struct {
	base    string
	key     string
	agentID string
	hc      *http.Client
	// timeout bounds each request but the long-polls.
	timeout time.Duration
}

// decision is the part of a decision answer the gateway reads
// (POST /v1/decisions.evaluate and GET /v1/decisions/:id).
type decision struct {
	DecisionID  string   `json:"decisionId"`
	Decision    string   `json:"decision"`
	ReasonCodes []string `json:"reasonCodes"`
	// Final and Outcome are set by GET /v1/decisions/:id: outcome is
	// approved or rejected once a person (or an expiry) decided.
	Final   bool   `json:"final"`
	Outcome string `json:"outcome"`
}

// do sends one request and decodes a 2xx answer into out. Anything else
// is an *APIError, or ErrVigilUnavailable for transport failures and 5xx.
func (v *vigil) do(ctx context.Context, method, path string, body any, hdr map[string]string, out any) error {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return fmt.Errorf("encode %s %s: %w", method, path, err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, v.base+path, rd)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+v.key)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, val := range hdr {
		req.Header.Set(k, val)
	}
	res, err := v.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%w: %s %s: %w", ErrVigilUnavailable, method, path, err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(io.LimitReader(res.Body, 8<<20))
	if err != nil {
		return fmt.Errorf("%w: %s %s: read answer: %w", ErrVigilUnavailable, method, path, err)
	}
	if res.StatusCode/100 != 2 {
		var env struct {
			Error struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"error"`
		}
		_ = json.Unmarshal(data, &env)
		ae := &APIError{Status: res.StatusCode, Code: env.Error.Code, Message: env.Error.Message}
		if res.StatusCode >= 500 {
			return fmt.Errorf("%w: %w", ErrVigilUnavailable, ae)
		}
		return ae
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("%w: %s %s: decode answer: %w", ErrVigilUnavailable, method, path, err)
	}
	return nil
}

// evaluate asks for a decision on an action. idemKey, when set, makes a
// repeated request answer the first decision (Idempotency-Key).
func (v *vigil) evaluate(ctx context.Context, act rules.Action, sessionID, idemKey string) (decision, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	body := map[string]any{"action": act, "context": map[string]any{}, "sessionId": sessionID}
	if v.agentID != "" {
		body["agentId"] = v.agentID
	}
	var hdr map[string]string
	if idemKey != "" {
		hdr = map[string]string{"Idempotency-Key": idemKey}
	}
	var d decision
	err := v.do(ctx, http.MethodPost, "/v1/decisions.evaluate", body, hdr, &d)
	if err == nil && (d.DecisionID == "" || d.Decision == "") {
		err = fmt.Errorf("%w: decision answer without decisionId or decision", ErrVigilUnavailable)
	}
	return d, err
}

// longPoll is the longest wait one GET /v1/decisions/:id?wait= asks for.
const longPoll = 60 * time.Second

// await long-polls a require_approval decision until a person (or an
// expiry) decided it, or ctx ends. A caller over its long-poll cap (429)
// waits as told and asks again.
func (v *vigil) await(ctx context.Context, id string) (decision, error) {
	for {
		rctx, cancel := context.WithTimeout(ctx, longPoll+10*time.Second)
		var d decision
		err := v.do(rctx, http.MethodGet, "/v1/decisions/"+url.PathEscape(id)+"?wait="+strconv.Itoa(int(longPoll/time.Second))+"s", nil, nil, &d)
		cancel()
		var ae *APIError
		switch {
		case err == nil && d.Final:
			return d, nil
		case err == nil:
		case errors.As(err, &ae) && ae.Status == http.StatusTooManyRequests:
			if err := sleep(ctx, 5*time.Second); err != nil {
				return d, err
			}
		default:
			return d, err
		}
		if err := ctx.Err(); err != nil {
			return d, err
		}
	}
}

// pinsView is GET /v1/mcp/pins.
type pinsView struct {
	mcppin.ServerPins
	Quarantined bool `json:"quarantined"`
}

func (v *vigil) pins(ctx context.Context, server string) (pinsView, error) {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	var p pinsView
	err := v.do(ctx, http.MethodGet, "/v1/mcp/pins?server="+url.QueryEscape(server), nil, nil, &p)
	return p, err
}

// pin pins the tools of an approved review.
func (v *vigil) pin(ctx context.Context, decisionID string) error {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	return v.do(ctx, http.MethodPost, "/v1/mcp/pins", map[string]string{"decisionId": decisionID}, nil, nil)
}

// postEvents reports events (POST /v1/events/batch). Items the API
// rejected are returned as an error; accepted and duplicate ones are
// done (event ids make a retry safe).
func (v *vigil) postEvents(ctx context.Context, events []map[string]any) error {
	ctx, cancel := context.WithTimeout(ctx, v.timeout)
	defer cancel()
	var out struct {
		Rejected int `json:"rejected"`
		Failed   int `json:"failed"`
		Results  []struct {
			Status string `json:"status"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		} `json:"results"`
	}
	if err := v.do(ctx, http.MethodPost, "/v1/events/batch", map[string]any{"events": events}, nil, &out); err != nil {
		return err
	}
	if out.Failed > 0 {
		return fmt.Errorf("%w: %d of %d events not stored", ErrVigilUnavailable, out.Failed, len(events))
	}
	if out.Rejected > 0 {
		var msgs []string
		for _, r := range out.Results {
			if r.Error != nil {
				msgs = append(msgs, r.Error.Message)
			}
		}
		return fmt.Errorf("vigil rejected %d events: %s", out.Rejected, strings.Join(msgs, "; "))
	}
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

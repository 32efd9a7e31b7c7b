package conformance

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"path"
	"strings"
	"sync"
)

// Fault is what the proxy answers instead of Vigil for the next Times
// requests whose path matches Path (a path.Match pattern: * is one
// segment). Mode "after" forwards the request first and discards
// Vigil's answer: a response lost on the way back.
type Fault struct {
	Path       string `json:"path"`
	Status     int    `json:"status"`
	Times      int    `json:"times"`
	RetryAfter string `json:"retryAfter,omitempty"`
	Mode       string `json:"mode,omitempty"`
}

// Request is one request the proxy received, as GET /requests lists it.
type Request struct {
	Method         string `json:"method"`
	Path           string `json:"path"`
	IdempotencyKey string `json:"idempotencyKey"`
	Status         int    `json:"status"`
	UpstreamStatus int    `json:"upstreamStatus"`
	Faulted        bool   `json:"faulted"`
	Items          int    `json:"items"`
	DecisionID     string `json:"decisionId"`
}

// FaultProxy is an HTTP reverse proxy in front of Vigil that injects
// faults, goes down on command and logs every request it sees, so that a
// runner can check what its SDK sent (retries, idempotency keys, batches).
type FaultProxy struct {
	target *url.URL
	rp     *httputil.ReverseProxy

	mu      sync.Mutex
	faults  []Fault
	log     []Request
	refused int
	down    bool
	conns   map[net.Conn]struct{}
}

// NewFaultProxy proxies to target (a base URL).
func NewFaultProxy(target string) (*FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("proxy target %q: %w", target, err)
	}
	p := &FaultProxy{target: u, conns: map[net.Conn]struct{}{}}
	p.rp = httputil.NewSingleHostReverseProxy(u)
	return p, nil
}

// Listener wraps ln so that, while the proxy is down, each new connection
// is counted as refused and closed before a byte is read.
func (p *FaultProxy) Listener(ln net.Listener) net.Listener { return &downListener{Listener: ln, p: p} }

type downListener struct {
	net.Listener
	p *FaultProxy
}

func (l *downListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		l.p.mu.Lock()
		down := l.p.down
		if down {
			l.p.refused++
		}
		l.p.mu.Unlock()
		if !down {
			return c, nil
		}
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0) // a reset, as from a host that went away
		}
		_ = c.Close()
	}
}

// ConnState tracks open connections so that Down can cut them.
func (p *FaultProxy) ConnState(c net.Conn, s http.ConnState) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch s {
	case http.StateNew:
		p.conns[c] = struct{}{}
	case http.StateClosed, http.StateHijacked:
		delete(p.conns, c)
	}
}

// Reset clears faults and the log and brings the proxy up.
func (p *FaultProxy) Reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults, p.log, p.refused, p.down = nil, nil, 0, false
}

// AddFault queues f.
func (p *FaultProxy) AddFault(f Fault) error {
	if _, err := path.Match(f.Path, "/"); err != nil || f.Path == "" || f.Status < 400 || f.Status > 599 || f.Times < 1 || (f.Mode != "" && f.Mode != "before" && f.Mode != "after") {
		return fmt.Errorf("fault %+v: want a path pattern, a 4xx/5xx status, times ≥ 1 and mode before|after", f)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.faults = append(p.faults, f)
	return nil
}

// SetDown takes the proxy down (cutting every open connection) or up.
func (p *FaultProxy) SetDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	if down {
		for c := range p.conns {
			_ = c.Close()
		}
	}
}

// Requests returns a copy of the log and the refused connection count.
func (p *FaultProxy) Requests() ([]Request, int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Request(nil), p.log...), p.refused
}

// take consumes one use of the first fault for path, if any.
func (p *FaultProxy) take(urlPath string) (Fault, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i := range p.faults {
		if ok, _ := path.Match(p.faults[i].Path, urlPath); ok && p.faults[i].Times > 0 {
			p.faults[i].Times--
			return p.faults[i], true
		}
	}
	return Fault{}, false
}

func (p *FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "read body", http.StatusBadRequest)
		return
	}
	entry := Request{Method: r.Method, Path: r.URL.Path, IdempotencyKey: r.Header.Get("Idempotency-Key"), Items: countItems(r.URL.Path, body)}
	f, faulted := p.take(r.URL.Path)
	if !faulted || f.Mode == "after" {
		rec := &recorder{header: http.Header{}, status: http.StatusOK}
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		p.rp.ServeHTTP(rec, r)
		entry.UpstreamStatus = rec.status
		entry.DecisionID = decisionID(rec.body.Bytes())
		if !faulted {
			entry.Status = rec.status
			p.record(entry) // before the answer, so a runner that has it sees the entry
			for k, v := range rec.header {
				w.Header()[k] = v
			}
			w.WriteHeader(rec.status)
			_, _ = w.Write(rec.body.Bytes())
			return
		}
	}
	entry.Status, entry.Faulted = f.Status, true
	p.record(entry)
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.Status)
	code := "SERVICE_UNAVAILABLE"
	if f.Status == http.StatusTooManyRequests {
		code = "RATE_LIMITED"
	}
	_ = json.NewEncoder(w).Encode(map[string]any{
		"error": map[string]any{"code": code, "message": "injected by the conformance proxy", "details": []any{}},
		"code":  strings.ToLower(code), "message": "injected by the conformance proxy",
	})
}

func (p *FaultProxy) record(e Request) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.log = append(p.log, e)
}

// countItems is the number of events in a batch body ({"events": […]} or
// a bare array), or 1 for a single event.
func countItems(path string, body []byte) int {
	switch {
	case strings.HasSuffix(path, "/events/batch"):
		var wrapped struct {
			Events []json.RawMessage `json:"events"`
		}
		if json.Unmarshal(body, &wrapped) == nil && wrapped.Events != nil {
			return len(wrapped.Events)
		}
		var bare []json.RawMessage
		if json.Unmarshal(body, &bare) == nil {
			return len(bare)
		}
	case strings.HasSuffix(path, "/events"):
		return 1
	}
	return 0
}

func decisionID(body []byte) string {
	var v struct {
		DecisionID string `json:"decisionId"`
	}
	_ = json.Unmarshal(body, &v)
	return v.DecisionID
}

// recorder holds Vigil's answer so the proxy can pass it on or drop it.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header         { return r.header }
func (r *recorder) Write(b []byte) (int, error) { return r.body.Write(b) }
func (r *recorder) WriteHeader(s int)           { r.status = s }

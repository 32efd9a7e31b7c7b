// Package consistency implements consistency tokens: read-your-writes for
// reads of projections, across processes.
//
// Every write answers with the stream sequence(s) that stored it in the
// Vigil-Consistency header (a token such as "INGEST:1042,CONTROL:17").
// A read that sends the token back (header, or the consistency query
// parameter) waits, bounded, until every projection it reads has passed
// those sequences, then answers. Tokens are stream sequences, so a token
// issued by one instance is honoured by any other.
//
// Track (installed on every server by httpkit) parses the request's token
// and collects the sequences written while serving it; Await (per route)
// waits for the projections the route reads.
package consistency

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Header carries a token, on the answer to a write and on a read.
const Header = "Vigil-Consistency"

// Param is the query parameter a read may carry the token in instead.
const Param = "consistency"

// DefaultWait bounds how long a read waits for its token before it
// answers 503 with Retry-After.
const DefaultWait = 5 * time.Second

// known are the streams a token may name.
var known = []string{streams.Ingest, streams.Control, streams.Policy, streams.Guardian, streams.Risk, streams.Notifier, streams.Ledger}

// Token maps a stream to a sequence: everything the holder wrote to that
// stream is at or below it.
type Token map[string]uint64

// maxStreams bounds a token (one entry per stream; a few dozen bytes).
const maxStreams = 16

// Parse reads a token: comma-separated STREAM:sequence pairs, stream names
// in any case. The empty string is the empty token.
func Parse(s string) (Token, error) {
	t := Token{}
	s = strings.TrimSpace(s)
	if s == "" {
		return t, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) > maxStreams {
		return nil, fmt.Errorf("a token names at most %d streams", maxStreams)
	}
	for _, p := range parts {
		name, num, ok := strings.Cut(strings.TrimSpace(p), ":")
		if !ok {
			return nil, fmt.Errorf("%q is not STREAM:sequence", p)
		}
		name = strings.ToUpper(strings.TrimSpace(name))
		if !slices.Contains(known, name) {
			return nil, fmt.Errorf("unknown stream %q", name)
		}
		seq, err := strconv.ParseUint(strings.TrimSpace(num), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("sequence of %s is not a number", name)
		}
		t[name] = max(t[name], seq)
	}
	return t, nil
}

// String is the canonical form: streams sorted, zero sequences left out.
// It allocates only the string it returns (every write's answer carries
// one).
func (t Token) String() string {
	// Both buffers stay on the stack for a token Parse can return; one
	// built in code with more streams only moves them to the heap.
	names := make([]string, 0, maxStreams)
	for k, v := range t {
		if v != 0 {
			names = append(names, k)
		}
	}
	slices.Sort(names)
	var buf [128]byte
	b := buf[:0]
	for i, k := range names {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, k...)
		b = append(b, ':')
		b = strconv.AppendUint(b, t[k], 10)
	}
	return string(b)
}

// Merge returns the token at least as recent as t and o on every stream.
func (t Token) Merge(o Token) Token {
	out := maps.Clone(t)
	if out == nil {
		out = Token{}
	}
	for k, v := range o {
		out[k] = max(out[k], v)
	}
	return out
}

// collector gathers the sequences written while serving one request. It
// is the request's context too (Note finds it by collectorKey), so that
// tracking a request costs one allocation rather than a value context
// and a collector.
type collector struct {
	context.Context
	// in is the token the request carried (nil: none).
	in Token
	mu sync.Mutex
	// The sequences the request wrote: the first stream inline (a write
	// stores on one stream, and a map for it cost ~250 bytes per
	// request), t for the others.
	stream string
	seq    uint64
	t      Token
}

type collectorKey struct{}

func (c *collector) Value(key any) any {
	if key == (collectorKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// note records seq on stream; c.mu is held.
func (c *collector) note(stream string, seq uint64) {
	switch {
	case c.stream == "" || c.stream == stream:
		c.stream, c.seq = stream, max(c.seq, seq)
	default:
		if c.t == nil {
			c.t = Token{}
		}
		c.t[stream] = max(c.t[stream], seq)
	}
}

// answer is the token a 2xx answer carries ("" for none): the request's
// merged with what it wrote.
func (c *collector) answer() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.stream == "":
		return c.in.String()
	case len(c.in) == 0 && c.t == nil:
		// Note keeps no zero sequence: this is String's canonical form.
		return c.stream + ":" + strconv.FormatUint(c.seq, 10)
	}
	out := c.in.Merge(c.t)
	out[c.stream] = max(out[c.stream], c.seq)
	return out.String()
}

// Note records that the write being served stored seq on stream, so that
// its answer carries it. Store layers call it with the request's context;
// without one (a background write) it does nothing.
func Note(ctx context.Context, stream string, seq uint64) {
	c, _ := ctx.Value(collectorKey{}).(*collector)
	if c == nil || seq == 0 {
		return
	}
	c.mu.Lock()
	c.note(stream, seq)
	c.mu.Unlock()
}

// Track parses the request's token (400 when malformed) and, on a 2xx
// answer, sets Vigil-Consistency to that token merged with every sequence
// noted while serving the request, so a client can keep passing the last
// token it got.
func Track() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			req := c.Request()
			in, err := fromRequest(req)
			if err != nil {
				return err
			}
			col := &collector{Context: req.Context(), in: in}
			c.SetRequest(req.WithContext(col))
			c.Response().Before(func() {
				if st := c.Response().Status; st < 200 || st > 299 {
					return
				}
				if s := col.answer(); s != "" {
					c.Response().Header()[Header] = []string{s}
				}
			})
			return next(c)
		}
	}
}

// fromRequest reads the request's token from the header and the query
// parameter; nil when it carries none (most requests: no allocation).
func fromRequest(r *http.Request) (Token, error) {
	hs := r.Header.Values(Header)
	var qs []string
	if r.URL.RawQuery != "" {
		qs = r.URL.Query()[Param]
	}
	if len(hs) == 0 && len(qs) == 0 {
		return nil, nil
	}
	t := Token{}
	for _, v := range append(hs[:len(hs):len(hs)], qs...) {
		p, err := Parse(v)
		if err != nil {
			return nil, apperr.Validation("consistency token is not valid",
				apperr.FieldError{Path: Header, Code: "invalid_format", Message: "Vigil-Consistency must be STREAM:sequence pairs separated by commas: " + err.Error()})
		}
		t = t.Merge(p)
	}
	return t, nil
}

// FromContext returns the token the request carried (empty without one).
func FromContext(c echo.Context) Token {
	if col, ok := c.Request().Context().Value(collectorKey{}).(*collector); ok {
		return col.in
	}
	// Track did not run (a server built without it): read it here.
	t, _ := fromRequest(c.Request())
	return t
}

// Projection is what a read waits on for one stream: the progress of the
// projection it reads.
type Projection interface {
	WaitFor(ctx context.Context, seq uint64) error
}

// Waits names, per stream, the projections a route reads.
type Waits map[string][]Projection

// Wait blocks until every projection in w has passed the token's sequence
// on its stream, for at most bound; streams w does not name are ignored
// (the route does not read them). Past the bound it is a 503 with
// Retry-After, in the usual envelope.
func Wait(ctx context.Context, t Token, w Waits, bound time.Duration) error {
	if len(t) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, bound)
	defer cancel()
	for _, stream := range slices.SortedFunc(maps.Keys(t), cmp.Compare) {
		for _, p := range w[stream] {
			if err := p.WaitFor(ctx, t[stream]); err != nil {
				if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || apperr.Is(err, apperr.KindUnavailable) {
					return apperr.Unavailable(fmt.Sprintf("the data this read needs has not caught up with %s:%d yet; retry", stream, t[stream]), time.Second, err)
				}
				return err
			}
		}
	}
	return nil
}

// Await is route middleware: it runs Wait for the request's token before
// the handler.
func Await(w Waits, bound time.Duration) echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			if err := Wait(c.Request().Context(), FromContext(c), w, bound); err != nil {
				return err
			}
			return next(c)
		}
	}
}

// Then is a projection fed by another: a wait on it waits for first to
// pass seq, then for second to pass everything its stream held by then
// (read with last). The policy service's event verdicts, for instance,
// turn INGEST sequences into POLICY ones that the decisions projector
// then has to pass.
func Then(first Projection, last func(context.Context) (uint64, error), second Projection) Projection {
	return chain{first, last, second}
}

type chain struct {
	first  Projection
	last   func(context.Context) (uint64, error)
	second Projection
}

func (c chain) WaitFor(ctx context.Context, seq uint64) error {
	if err := c.first.WaitFor(ctx, seq); err != nil {
		return err
	}
	next, err := c.last(ctx)
	if err != nil {
		return apperr.Unavailable("stream position unavailable; retry", time.Second, err)
	}
	return c.second.WaitFor(ctx, next)
}

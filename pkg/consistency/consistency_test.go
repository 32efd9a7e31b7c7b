package consistency_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		in, want string
		bad      bool
	}{
		{in: "", want: ""},
		{in: "INGEST:12", want: "INGEST:12"},
		{in: "control:4, INGEST:12", want: "CONTROL:4,INGEST:12"},
		{in: "INGEST:3,INGEST:9", want: "INGEST:9"},
		{in: "INGEST:0", want: ""},
		{in: "NOPE:1", bad: true},
		{in: "INGEST", bad: true},
		{in: "INGEST:-1", bad: true},
		{in: "INGEST:1x", bad: true},
	} {
		tok, err := consistency.Parse(tc.in)
		if (err != nil) != tc.bad {
			t.Errorf("Parse(%q) error = %v, want bad=%v", tc.in, err, tc.bad)
			continue
		}
		if !tc.bad && tok.String() != tc.want {
			t.Errorf("Parse(%q) = %q, want %q", tc.in, tok.String(), tc.want)
		}
	}
}

func TestMerge(t *testing.T) {
	got := consistency.Token{"INGEST": 5, "CONTROL": 9}.Merge(consistency.Token{"INGEST": 7, "POLICY": 1}).String()
	if want := "CONTROL:9,INGEST:7,POLICY:1"; got != want {
		t.Fatalf("Merge = %q, want %q", got, want)
	}
}

// TestWait: a read waits for the projections of the streams its token
// names, ignores the others, and past the bound is unavailable.
func TestWait(t *testing.T) {
	var ingest, control natsx.Watermark
	w := consistency.Waits{"INGEST": {&ingest}, "CONTROL": {&control}}
	ingest.Advance(10)
	control.Advance(3)
	tests := []struct {
		name    string
		tok     consistency.Token
		advance func()
		wantErr bool
	}{
		{"already passed", consistency.Token{"INGEST": 10, "CONTROL": 3}, nil, false},
		{"stream the route does not read", consistency.Token{"RISK": 99}, nil, false},
		{"passed while waiting", consistency.Token{"INGEST": 11}, func() { ingest.Advance(11) }, false},
		{"never passed", consistency.Token{"CONTROL": 4}, nil, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.advance != nil {
				go tc.advance()
			}
			err := consistency.Wait(context.Background(), tc.tok, w, 100*time.Millisecond)
			if (err != nil) != tc.wantErr {
				t.Fatalf("Wait = %v, want error %v", err, tc.wantErr)
			}
			if tc.wantErr {
				var ae *apperr.Error
				if !errors.As(err, &ae) || ae.Kind != apperr.KindUnavailable || ae.RetryAfter <= 0 {
					t.Fatalf("Wait past the bound = %#v, want unavailable with Retry-After", err)
				}
			}
		})
	}
}

// TestTrack: a 2xx answers with the request's token merged with what the
// handler wrote; an error answer carries none; a malformed token is 400.
func TestTrack(t *testing.T) {
	// The server every service runs installs Track and the envelope.
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	e.POST("/w", func(c echo.Context) error {
		consistency.Note(c.Request().Context(), "INGEST", 42)
		return c.NoContent(http.StatusAccepted)
	})
	e.POST("/fail", func(c echo.Context) error {
		consistency.Note(c.Request().Context(), "INGEST", 42)
		return apperr.Conflict("taken")
	})
	for _, tc := range []struct {
		path, sent, want string
		status           int
	}{
		{"/w", "", "INGEST:42", http.StatusAccepted},
		{"/w", "CONTROL:7,INGEST:50", "CONTROL:7,INGEST:50", http.StatusAccepted},
		{"/fail", "CONTROL:7", "", http.StatusConflict},
		{"/w", "bogus", "", http.StatusBadRequest},
	} {
		req := httptest.NewRequest(http.MethodPost, tc.path, nil)
		if tc.sent != "" {
			req.Header.Set(consistency.Header, tc.sent)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != tc.status || rec.Header().Get(consistency.Header) != tc.want {
			t.Errorf("%s with %q: %d %q, want %d %q", tc.path, tc.sent, rec.Code, rec.Header().Get(consistency.Header), tc.status, tc.want)
		}
	}
}

// TestTrackQueryAndFromContext: a token in the query parameter counts as
// one in the header, a handler reads the request's token with FromContext,
// and a request without one reads the empty token.
func TestTrackQueryAndFromContext(t *testing.T) {
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var got consistency.Token
	e.GET("/r", func(c echo.Context) error {
		got = consistency.FromContext(c)
		return c.NoContent(http.StatusOK)
	})
	for _, tc := range []struct {
		target, header, want string
	}{
		{"/r", "", ""},
		{"/r?consistency=INGEST:5", "", "INGEST:5"},
		{"/r?%63onsistency=INGEST:6", "", "INGEST:6"},
		{"/r?consistency=INGEST:5", "INGEST:9,CONTROL:1", "CONTROL:1,INGEST:9"},
		{"/r?other=1", "RISK:3", "RISK:3"},
	} {
		got = nil
		req := httptest.NewRequest(http.MethodGet, tc.target, nil)
		if tc.header != "" {
			req.Header.Set(consistency.Header, tc.header)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || got.String() != tc.want || rec.Header().Get(consistency.Header) != tc.want {
			t.Errorf("%s with %q: %d, FromContext %q, answered %q; want %q", tc.target, tc.header, rec.Code, got.String(), rec.Header().Get(consistency.Header), tc.want)
		}
	}
}

// TestStringCanonical: String (sorted on the stack) writes what sorting
// the keys and joining them does, for tokens of up to and past the parsed
// maximum of streams.
func TestStringCanonical(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		tok := consistency.Token{}
		for range rng.IntN(20) {
			tok[fmt.Sprintf("S%d", rng.IntN(25))] = uint64(rng.IntN(3)) * rng.Uint64N(1<<40)
		}
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(tok)) {
			if tok[k] != 0 {
				parts = append(parts, k+":"+strconv.FormatUint(tok[k], 10))
			}
		}
		if got, want := tok.String(), strings.Join(parts, ","); got != want {
			t.Fatalf("String of %v = %q, want %q", tok, got, want)
		}
	}
}

// TestTrackNotes: the answer merges the request's token with every
// sequence noted, whether one stream was written (kept inline) or several,
// and keeps the highest sequence per stream.
func TestTrackNotes(t *testing.T) {
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	notes := map[string][][2]any{
		"/one":   {{"INGEST", uint64(7)}, {"INGEST", uint64(5)}},
		"/two":   {{"INGEST", uint64(7)}, {"CONTROL", uint64(3)}, {"CONTROL", uint64(9)}, {"INGEST", uint64(8)}},
		"/three": {{"POLICY", uint64(2)}, {"INGEST", uint64(0)}, {"LEDGER", uint64(4)}, {"RISK", uint64(1)}},
		"/none":  nil,
	}
	for path, ns := range notes {
		e.POST(path, func(c echo.Context) error {
			for _, n := range ns {
				consistency.Note(c.Request().Context(), n[0].(string), n[1].(uint64))
			}
			return c.NoContent(http.StatusAccepted)
		})
	}
	for _, tc := range []struct{ path, sent, want string }{
		{"/one", "", "INGEST:7"},
		{"/one", "INGEST:9", "INGEST:9"},
		{"/one", "CONTROL:1", "CONTROL:1,INGEST:7"},
		{"/two", "", "CONTROL:9,INGEST:8"},
		{"/two", "INGEST:20,RISK:4", "CONTROL:9,INGEST:20,RISK:4"},
		{"/three", "", "LEDGER:4,POLICY:2,RISK:1"},
		{"/none", "", ""},
		{"/none", "INGEST:3", "INGEST:3"},
	} {
		req := httptest.NewRequest(http.MethodPost, tc.path, nil)
		if tc.sent != "" {
			req.Header.Set(consistency.Header, tc.sent)
		}
		rec := httptest.NewRecorder()
		e.ServeHTTP(rec, req)
		if got := rec.Header().Get(consistency.Header); rec.Code != http.StatusAccepted || got != tc.want {
			t.Errorf("%s with %q: %d %q, want %q", tc.path, tc.sent, rec.Code, got, tc.want)
		}
	}
}

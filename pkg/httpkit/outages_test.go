package httpkit_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/testkit"
)

// count returns how many JSON records in logs have level and msg.
func count(t *testing.T, logs *testkit.Logs, level, msg string) int {
	t.Helper()
	n := 0
	for _, line := range bytes.Split(bytes.TrimSpace([]byte(logs.String())), []byte("\n")) {
		if len(line) == 0 {
			continue
		}
		var r struct{ Level, Msg string }
		if err := json.Unmarshal(line, &r); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if r.Level == level && (msg == "" || r.Msg == msg) {
			n++
		}
	}
	return n
}

const (
	msgDown = "dependency unavailable: answering 503 until it returns"
	msgBack = "dependency available again"
)

func TestUnavailabilityLoggedOncePerStateChange(t *testing.T) {
	logs := &testkit.Logs{}
	e, err := httpkit.NewServer(slog.New(slog.NewJSONHandler(logs, nil)), prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	var storeDown, brokerDown atomic.Bool
	e.GET("/events", func(c echo.Context) error {
		if storeDown.Load() {
			return apperr.Unavailable("events are unavailable", 2*time.Second, errors.New("dial tcp: connection refused"))
		}
		return c.NoContent(http.StatusOK)
	})
	e.GET("/keys", func(c echo.Context) error {
		if brokerDown.Load() {
			return apperr.Unavailable("the broker is unavailable", time.Second, nil)
		}
		return c.NoContent(http.StatusOK)
	})
	e.GET("/bug", func(echo.Context) error { return errors.New("nil map") })
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	get := func(path string, want int) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}

	steps := []struct {
		name      string
		do        func()
		downs     int // WARN records that an outage began, so far
		backs     int // WARN records that it ended, so far
		errorLogs int // ERROR records, so far
	}{
		{"healthy", func() { get("/events", 200); get("/keys", 200) }, 0, 0, 0},
		{"ClickHouse down: many 503s, one warning", func() {
			storeDown.Store(true)
			for range 20 {
				get("/events", 503)
			}
		}, 1, 0, 0},
		{"another dependency down: its own warning", func() {
			brokerDown.Store(true)
			get("/keys", 503)
			get("/keys", 503)
			get("/events", 503)
		}, 2, 0, 0},
		{"ClickHouse back: one recovery", func() {
			storeDown.Store(false)
			get("/events", 200)
			get("/events", 200)
		}, 2, 1, 0},
		{"ClickHouse down again: a new warning", func() {
			storeDown.Store(true)
			get("/events", 503)
		}, 3, 1, 0},
		{"a bug is still an error, every time", func() { get("/bug", 500); get("/bug", 500) }, 3, 1, 2},
	}
	for _, st := range steps {
		st.do()
		// The access middleware notes a success after the response went
		// out, so the counts may lag the last answer by a moment; they only
		// grow, so an extra record would still fail a later step.
		testkit.Eventually(t, st.name, func() (bool, string) {
			downs, backs, errs := count(t, logs, "WARN", msgDown), count(t, logs, "WARN", msgBack), count(t, logs, "ERROR", "")
			return downs == st.downs && backs == st.backs && errs == st.errorLogs,
				fmt.Sprintf("%d outage warnings (want %d), %d recoveries (want %d), %d errors (want %d)",
					downs, st.downs, backs, st.backs, errs, st.errorLogs)
		})
	}
}

package console

import (
	"net/http/httptest"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/approval"
)

func TestSafeNextStaysInTheConsole(t *testing.T) {
	for in, want := range map[string]string{
		"/console/sessions?search=x": "/console/sessions?search=x",
		"":                           "/console/desk",
		"https://evil.example/":      "/console/desk",
		"//evil.example/console":     "/console/desk",
		"/console\\@evil.example":    "/console/desk",
		"/v1/keys":                   "/console/desk",
	} {
		if got := safeNext(in); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSameOrigin(t *testing.T) {
	for _, c := range []struct {
		origin string
		want   bool
	}{{"", true}, {"http://vigil.test:8080", true}, {"http://VIGIL.test:8080", true}, {"null", false}, {"http://evil.test", false}, {"http://vigil.test:9090", false}} {
		req := httptest.NewRequest("POST", "http://vigil.test:8080/console/sign-in", nil)
		if c.origin != "" {
			req.Header.Set("Origin", c.origin)
		}
		if got := sameOrigin(echo.New().NewContext(req, httptest.NewRecorder())); got != c.want {
			t.Errorf("Origin %q: %v, want %v", c.origin, got, c.want)
		}
	}
}

func TestCardsMostUrgentThenNewest(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cs := []card{
		{Action: approval.Action{ID: "old-normal", Priority: "normal", CreatedAt: at}},
		{Action: approval.Action{ID: "new-normal", Priority: "normal", CreatedAt: at.Add(time.Minute)}},
		{Action: approval.Action{ID: "old-high", Priority: "high", CreatedAt: at}},
		{Action: approval.Action{ID: "low", Priority: "low", CreatedAt: at.Add(time.Hour)}},
	}
	sortCards(cs)
	var got []string
	for _, c := range cs {
		got = append(got, c.ID)
	}
	want := []string{"old-high", "new-normal", "old-normal", "low"}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("order %v, want %v", got, want)
		}
	}
}

func TestFieldAndText(t *testing.T) {
	m := map[string]any{"action": map[string]any{"tool": "refund"}, "rules": []any{1.0, 2.0}, "n": 3.0, "f": 0.25, "ok": true, "tags": []any{"a", "b"}}
	for path, want := range map[string]string{"action.tool": "refund", "rules.#": "2", "n": "3", "f": "0.25", "ok": "yes", "tags": "a, b", "missing.x": "", "action.tool.x": ""} {
		if got := text(field(m, path)); got != want {
			t.Errorf("%s: %q, want %q", path, got, want)
		}
	}
}

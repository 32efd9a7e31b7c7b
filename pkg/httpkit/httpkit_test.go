package httpkit_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
)

// fakeAuth is a test double of httpkit.Authenticator: a fixed token table.
type fakeAuth map[string]auth.Principal

func (f fakeAuth) Authenticate(_ context.Context, token string) (auth.Principal, error) {
	if token == "broker-down" {
		return auth.Principal{}, apperr.Unavailable("key store unavailable", 2*time.Second, errors.New("timeout"))
	}
	p, ok := f[token]
	if !ok {
		return auth.Principal{}, apperr.Unauthenticated("invalid API key")
	}
	return p, nil
}

var keys = fakeAuth{
	"tok-admin":  {Tenant: "acme", Role: auth.RoleAdmin, KeyID: "k1"},
	"tok-viewer": {Tenant: "acme", Role: auth.RoleViewer, KeyID: "k2"},
	"tok-other":  {Tenant: "globex", Role: auth.RoleOwner, KeyID: "k3"},
}

type cursor struct {
	After int `json:"after"`
}

const bodyCap = 16

func newServer(t *testing.T) (*httptest.Server, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	kinds := map[string]error{
		"validation": apperr.Validation("event failed validation",
			apperr.FieldError{Path: "events[3].eventId", Code: "required", Message: "eventId is required"},
			apperr.FieldError{Path: "events[3].payload", Code: "invalid_type", Message: "payload must be a JSON object"}),
		"validation-bare": apperr.Validation("could not read request body"),
		"unauthenticated": apperr.Unauthenticated("missing key"),
		"forbidden":       apperr.Forbidden("nope"),
		"notfound":        apperr.NotFound("agent %q not found", "a1"),
		"conflict":        apperr.Conflict("agent %q already exists", "a1"),
		"toolarge":        apperr.TooLarge("too big"),
		"ratelimited":     apperr.RateLimited(1500 * time.Millisecond),
		"ratelimited-ms":  apperr.RateLimited(10 * time.Millisecond),
		"ratelimited-0":   apperr.RateLimited(0),
		"unavailable":     apperr.Unavailable("event store did not acknowledge", 5*time.Second, errors.New("nats: timeout")),
		"internal":        &apperr.Error{Kind: apperr.KindInternal, Message: "invariant broken"},
		"plain":           errors.New("dial tcp 10.0.0.7:9000: password=hunter2"),
		"wrapped":         fmt.Errorf("handler: %w", apperr.Conflict("lost the race")),
		"echo-400":        echo.NewHTTPError(http.StatusBadRequest, "bad thing"),
		"echo-415":        echo.NewHTTPError(http.StatusUnsupportedMediaType),
		"echo-map":        echo.NewHTTPError(http.StatusForbidden, map[string]string{"x": "y"}),
		"echo-502":        echo.NewHTTPError(http.StatusBadGateway),
	}
	e.GET("/err/:kind", func(c echo.Context) error {
		err, ok := kinds[c.Param("kind")]
		if !ok {
			t.Errorf("unknown kind %q", c.Param("kind"))
			return nil
		}
		return err
	})
	e.GET("/panic", func(c echo.Context) error { panic("kaboom") })

	g := e.Group("/v1", httpkit.Authenticate(keys))
	g.GET("/whoami", func(c echo.Context) error {
		p := httpkit.Principal(c)
		return c.JSON(http.StatusOK, map[string]string{"tenant": p.Tenant, "role": string(p.Role), "keyId": p.KeyID})
	})
	g.POST("/keys", func(c echo.Context) error { return c.NoContent(http.StatusCreated) }, httpkit.Require(auth.KeysManage))
	g.GET("/sessions", func(c echo.Context) error { return c.NoContent(http.StatusOK) }, httpkit.Require(auth.SessionsRead))

	e.GET("/items", func(c echo.Context) error {
		limit, err := httpkit.Limit(c, 2, 3)
		if err != nil {
			return err
		}
		cur := cursor{After: 0}
		if err := httpkit.DecodeCursor(c, &cur); err != nil {
			return err
		}
		var data []int
		for i := cur.After + 1; i <= 5 && len(data) < limit; i++ {
			data = append(data, i)
		}
		more := len(data) > 0 && data[len(data)-1] < 5
		var next any
		if more {
			next = cursor{After: data[len(data)-1]}
		}
		return c.JSON(http.StatusOK, httpkit.NewPage(data, more, next))
	})
	e.POST("/lenient", func(c echo.Context) error {
		var in lenientBody
		if err := httpkit.DecodeLenient(c, 1<<10, &in); err != nil {
			return err
		}
		return c.JSON(http.StatusOK, in)
	})
	e.POST("/body", func(c echo.Context) error {
		b, err := httpkit.ReadBody(c, bodyCap)
		if err != nil {
			return err
		}
		return c.String(http.StatusOK, strconv.Itoa(len(b)))
	})
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	return srv, reg
}

type envelope struct {
	Error struct {
		Code    string          `json:"code"`
		Message string          `json:"message"`
		Details json.RawMessage `json:"details"`
	} `json:"error"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId"`
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func do(t *testing.T, method, url string, body io.Reader, header map[string]string) response {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{res.StatusCode, res.Header, b}
}

// checkEnvelope asserts the response is the error envelope with the given
// status and codes, and returns it.
func checkEnvelope(t *testing.T, r response, status int, code, short string) envelope {
	t.Helper()
	if r.status != status {
		t.Errorf("status = %d, want %d (body %s)", r.status, status, r.body)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q", ct)
	}
	var env envelope
	if err := json.Unmarshal(r.body, &env); err != nil {
		t.Fatalf("body %s is not JSON: %v", r.body, err)
	}
	if env.Error.Code != code || env.Code != short {
		t.Errorf("codes = %q / %q, want %q / %q", env.Error.Code, env.Code, code, short)
	}
	if env.Error.Message == "" || env.Message != env.Error.Message {
		t.Errorf("messages = %q / %q", env.Error.Message, env.Message)
	}
	if d := strings.TrimSpace(string(env.Error.Details)); !strings.HasPrefix(d, "[") {
		t.Errorf("error.details = %s, want an array", d)
	}
	if env.RequestID == "" || env.RequestID != r.header.Get(echo.HeaderXRequestID) {
		t.Errorf("requestId = %q, header %q", env.RequestID, r.header.Get(echo.HeaderXRequestID))
	}
	return env
}

func TestErrorEnvelope(t *testing.T) {
	srv, reg := newServer(t)
	cases := []struct {
		kind        string
		status      int
		code, short string
		message     string // "" = not checked
		retryAfter  string // "" = header must be absent
		details     string
	}{
		{"validation", 400, "VALIDATION_ERROR", "invalid_request", "event failed validation", "",
			`[{"path":"events[3].eventId","code":"required","message":"eventId is required"},{"path":"events[3].payload","code":"invalid_type","message":"payload must be a JSON object"}]`},
		{"validation-bare", 400, "VALIDATION_ERROR", "invalid_request", "could not read request body", "", `[]`},
		{"unauthenticated", 401, "AUTHENTICATION_FAILED", "unauthorized", "missing key", "", `[]`},
		{"forbidden", 403, "FORBIDDEN", "forbidden", "nope", "", `[]`},
		{"notfound", 404, "NOT_FOUND", "not_found", `agent "a1" not found`, "", `[]`},
		{"conflict", 409, "CONFLICT", "conflict", `agent "a1" already exists`, "", `[]`},
		{"toolarge", 413, "PAYLOAD_TOO_LARGE", "payload_too_large", "too big", "", `[]`},
		{"ratelimited", 429, "RATE_LIMITED", "rate_limited", "rate limit exceeded", "2", `[]`},
		{"ratelimited-ms", 429, "RATE_LIMITED", "rate_limited", "", "1", `[]`},
		{"ratelimited-0", 429, "RATE_LIMITED", "rate_limited", "", "", `[]`},
		// KLA's one 5xx code; Vigil's finer one in error.code and details.
		{"unavailable", 503, "SERVICE_UNAVAILABLE", "internal_error", "event store did not acknowledge", "5", `[{"path":"","code":"unavailable","message":"temporarily unavailable; retry after Retry-After"}]`},
		{"internal", 500, "INTERNAL_ERROR", "internal_error", "invariant broken", "", `[]`},
		{"plain", 500, "INTERNAL_ERROR", "internal_error", "internal error", "", `[]`},
		{"wrapped", 409, "CONFLICT", "conflict", "lost the race", "", `[]`},
		{"echo-400", 400, "VALIDATION_ERROR", "invalid_request", "bad thing", "", `[]`},
		{"echo-415", 400, "VALIDATION_ERROR", "invalid_request", "Unsupported Media Type", "", `[]`},
		{"echo-map", 403, "FORBIDDEN", "forbidden", "Forbidden", "", `[]`},
		{"echo-502", 500, "INTERNAL_ERROR", "internal_error", "Bad Gateway", "", `[]`},
	}
	for _, tc := range cases {
		t.Run(tc.kind, func(t *testing.T) {
			r := do(t, http.MethodGet, srv.URL+"/err/"+tc.kind, nil, nil)
			env := checkEnvelope(t, r, tc.status, tc.code, tc.short)
			if tc.message != "" && env.Message != tc.message {
				t.Errorf("message = %q, want %q", env.Message, tc.message)
			}
			if got := r.header.Get("Retry-After"); got != tc.retryAfter {
				t.Errorf("Retry-After = %q, want %q", got, tc.retryAfter)
			}
			if string(env.Error.Details) != tc.details {
				t.Errorf("details = %s, want %s", env.Error.Details, tc.details)
			}
			if strings.Contains(string(r.body), "hunter2") {
				t.Errorf("internal error text leaked: %s", r.body)
			}
		})
	}
	// The request metrics record the status that was actually sent.
	for status, want := range map[string]float64{"409": 2, "429": 3, "500": 3} {
		if got := requests(t, reg, "/err/:kind", status); got != want {
			t.Errorf("requests{status=%s} = %v, want %v", status, got, want)
		}
	}
}

// requests returns vigil_http_requests_total for a GET of route that
// answered status.
func requests(t *testing.T, reg *prometheus.Registry, route, status string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "vigil_http_requests_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if labels["route"] == route && labels["status"] == status && labels["method"] == http.MethodGet {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func TestEchoErrorsUseTheEnvelope(t *testing.T) {
	srv, _ := newServer(t)
	t.Run("unknown route", func(t *testing.T) {
		r := do(t, http.MethodGet, srv.URL+"/no/such/route", nil, nil)
		checkEnvelope(t, r, 404, "NOT_FOUND", "not_found")
	})
	t.Run("wrong method", func(t *testing.T) {
		r := do(t, http.MethodDelete, srv.URL+"/items", nil, nil)
		checkEnvelope(t, r, 405, "NOT_FOUND", "not_found")
		if allow := r.header.Get("Allow"); !strings.Contains(allow, http.MethodGet) {
			t.Errorf("Allow = %q, want it to list GET", allow)
		}
	})
	t.Run("panic", func(t *testing.T) {
		r := do(t, http.MethodGet, srv.URL+"/panic", nil, nil)
		env := checkEnvelope(t, r, 500, "INTERNAL_ERROR", "internal_error")
		if strings.Contains(env.Message, "kaboom") {
			t.Errorf("panic value leaked: %q", env.Message)
		}
	})
	t.Run("HEAD has no body", func(t *testing.T) {
		r := do(t, http.MethodHead, srv.URL+"/no/such/route", nil, nil)
		if r.status != 404 || len(r.body) != 0 {
			t.Errorf("HEAD: %d %q", r.status, r.body)
		}
	})
}

func TestAuthenticate(t *testing.T) {
	srv, _ := newServer(t)
	cases := []struct {
		name        string
		header      map[string]string
		status      int
		code, short string
		tenant      string
	}{
		{"missing header", nil, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"empty header", map[string]string{"Authorization": ""}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"basic scheme", map[string]string{"Authorization": "Basic dG9rLWFkbWluOg=="}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"token without scheme", map[string]string{"Authorization": "tok-admin"}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"scheme without token", map[string]string{"Authorization": "Bearer "}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"scheme and spaces", map[string]string{"Authorization": "Bearer    "}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"unknown token", map[string]string{"Authorization": "Bearer tok-forged"}, 401, "AUTHENTICATION_FAILED", "unauthorized", ""},
		{"authenticator unavailable", map[string]string{"Authorization": "Bearer broker-down"}, 503, "SERVICE_UNAVAILABLE", "internal_error", ""},
		{"tenant mismatch", map[string]string{"Authorization": "Bearer tok-admin", "x-tenant-id": "globex"}, 403, "FORBIDDEN", "forbidden", ""},
		{"tenant case differs", map[string]string{"Authorization": "Bearer tok-admin", "x-tenant-id": "ACME"}, 403, "FORBIDDEN", "forbidden", ""},
		{"tenant matches", map[string]string{"Authorization": "Bearer tok-admin", "x-tenant-id": "acme"}, 200, "", "", "acme"},
		{"no tenant header", map[string]string{"Authorization": "Bearer tok-other"}, 200, "", "", "globex"},
		{"lower-case scheme", map[string]string{"Authorization": "bearer tok-viewer"}, 200, "", "", "acme"},
		{"extra spaces around the token", map[string]string{"Authorization": "Bearer  tok-viewer "}, 200, "", "", "acme"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodGet, srv.URL+"/v1/whoami", nil, tc.header)
			if tc.status != 200 {
				checkEnvelope(t, r, tc.status, tc.code, tc.short)
				return
			}
			if r.status != 200 {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			var who map[string]string
			if err := json.Unmarshal(r.body, &who); err != nil || who["tenant"] != tc.tenant || who["keyId"] == "" {
				t.Errorf("whoami = %s (%v), want tenant %q", r.body, err, tc.tenant)
			}
		})
	}
}

func TestRequire(t *testing.T) {
	srv, _ := newServer(t)
	cases := []struct {
		token, method, path string
		status              int
	}{
		{"tok-admin", http.MethodPost, "/v1/keys", 201},
		{"tok-viewer", http.MethodPost, "/v1/keys", 403},
		{"tok-viewer", http.MethodGet, "/v1/sessions", 200},
		{"tok-other", http.MethodPost, "/v1/keys", 201},
		{"", http.MethodPost, "/v1/keys", 401}, // authentication comes first
	}
	for _, tc := range cases {
		h := map[string]string{}
		if tc.token != "" {
			h["Authorization"] = "Bearer " + tc.token
		}
		r := do(t, tc.method, srv.URL+tc.path, nil, h)
		if r.status != tc.status {
			t.Errorf("%s %s as %s: status %d, want %d (%s)", tc.method, tc.path, tc.token, r.status, tc.status, r.body)
		}
		if tc.status == 403 {
			env := checkEnvelope(t, r, 403, "FORBIDDEN", "forbidden")
			if !strings.Contains(env.Message, "viewer") || !strings.Contains(env.Message, string(auth.KeysManage)) {
				t.Errorf("message %q should name the role and the permission", env.Message)
			}
		}
	}
}

type page struct {
	Data       []int   `json:"data"`
	NextCursor *string `json:"nextCursor"`
	HasMore    bool    `json:"hasMore"`
}

func TestPagination(t *testing.T) {
	srv, _ := newServer(t)
	// Walk every page through real HTTP.
	var got [][]int
	url := srv.URL + "/items"
	for i := 0; ; i++ {
		if i > 5 {
			t.Fatal("pagination does not terminate")
		}
		r := do(t, http.MethodGet, url, nil, nil)
		if r.status != 200 {
			t.Fatalf("status %d: %s", r.status, r.body)
		}
		var p page
		if err := json.Unmarshal(r.body, &p); err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Data)
		if p.HasMore != (p.NextCursor != nil) {
			t.Errorf("hasMore %v with nextCursor %v", p.HasMore, p.NextCursor)
		}
		if p.NextCursor == nil {
			if !strings.Contains(string(r.body), `"nextCursor":null`) {
				t.Errorf("last page %s must carry nextCursor: null", r.body)
			}
			break
		}
		url = srv.URL + "/items?cursor=" + *p.NextCursor
	}
	if want := fmt.Sprint([][]int{{1, 2}, {3, 4}, {5}}); fmt.Sprint(got) != want {
		t.Errorf("pages = %v, want %v", got, want)
	}

	// Past the end: an empty data array, not null.
	r := do(t, http.MethodGet, srv.URL+"/items?cursor="+httpkit.EncodeCursor(cursor{After: 5}), nil, nil)
	if want := `{"data":[],"nextCursor":null,"hasMore":false}`; strings.TrimSpace(string(r.body)) != want {
		t.Errorf("empty page = %s, want %s", r.body, want)
	}
}

func TestLimitAndCursorValidation(t *testing.T) {
	srv, _ := newServer(t)
	cases := []struct {
		query   string
		status  int
		path    string
		code    string
		entries int // items on the page when 200
	}{
		{"", 200, "", "", 2},
		{"limit=1", 200, "", "", 1},
		{"limit=3", 200, "", "", 3},
		{"limit=0", 400, "limit", "out_of_range", 0},
		{"limit=4", 200, "", "", 3}, // clamped to the maximum
		{"limit=1000", 200, "", "", 3},
		{"limit=-1", 400, "limit", "out_of_range", 0},
		{"limit=abc", 400, "limit", "out_of_range", 0},
		{"limit=1.5", 400, "limit", "out_of_range", 0},
		{"limit=99999999999999999999", 200, "", "", 3},
		{"limit=-99999999999999999999", 400, "limit", "out_of_range", 0},
		{"cursor=" + httpkit.EncodeCursor(cursor{After: 1}), 200, "", "", 2},
		{"cursor=!!!", 400, "cursor", "invalid_format", 0},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte("not json")), 400, "cursor", "invalid_format", 0},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`{"after":"x"}`)), 400, "cursor", "invalid_format", 0},
		{"cursor=" + base64.StdEncoding.EncodeToString([]byte(`{"after":1}`)), 400, "cursor", "invalid_format", 0},
	}
	for _, tc := range cases {
		t.Run(tc.query, func(t *testing.T) {
			r := do(t, http.MethodGet, srv.URL+"/items?"+tc.query, nil, nil)
			if tc.status == 200 {
				var p page
				if r.status != 200 || json.Unmarshal(r.body, &p) != nil || len(p.Data) != tc.entries {
					t.Errorf("status %d body %s, want %d items", r.status, r.body, tc.entries)
				}
				return
			}
			env := checkEnvelope(t, r, 400, "VALIDATION_ERROR", "invalid_request")
			var det []apperr.FieldError
			if err := json.Unmarshal(env.Error.Details, &det); err != nil || len(det) != 1 || det[0].Path != tc.path || det[0].Code != tc.code {
				t.Errorf("details = %s, want one %s/%s", env.Error.Details, tc.path, tc.code)
			}
		})
	}
}

func TestReadBody(t *testing.T) {
	srv, _ := newServer(t)
	cases := []struct {
		name    string
		body    io.Reader
		status  int
		wantLen string
	}{
		{"empty", bytes.NewReader(nil), 200, "0"},
		{"at the cap", bytes.NewReader(bytes.Repeat([]byte("x"), bodyCap)), 200, strconv.Itoa(bodyCap)},
		{"one over the cap", bytes.NewReader(bytes.Repeat([]byte("x"), bodyCap+1)), 413, ""},
		{"far over the cap", bytes.NewReader(bytes.Repeat([]byte("x"), 1<<20)), 413, ""},
		// No Content-Length: the cap applies while streaming.
		{"chunked under the cap", io.MultiReader(strings.NewReader(strings.Repeat("y", bodyCap-1))), 200, strconv.Itoa(bodyCap - 1)},
		{"chunked over the cap", io.MultiReader(strings.NewReader(strings.Repeat("y", bodyCap)), strings.NewReader("z")), 413, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, srv.URL+"/body", tc.body, nil)
			if tc.status == 200 {
				if r.status != 200 || string(r.body) != tc.wantLen {
					t.Errorf("status %d body %q, want 200 %q", r.status, r.body, tc.wantLen)
				}
				return
			}
			env := checkEnvelope(t, r, 413, "PAYLOAD_TOO_LARGE", "payload_too_large")
			if !strings.Contains(env.Message, strconv.Itoa(bodyCap)) {
				t.Errorf("message %q should state the cap", env.Message)
			}
		})
	}
}

func TestNewPage(t *testing.T) {
	cases := []struct {
		name string
		page any
		want string
	}{
		{"last page", httpkit.NewPage([]string{"a"}, false, "ignored"), `{"data":["a"],"nextCursor":null,"hasMore":false}`},
		{"nil data", httpkit.NewPage[string](nil, false, nil), `{"data":[],"nextCursor":null,"hasMore":false}`},
		{"more", httpkit.NewPage([]int{1}, true, cursor{After: 1}), `{"data":[1],"nextCursor":"` + base64.RawURLEncoding.EncodeToString([]byte(`{"after":1}`)) + `","hasMore":true}`},
	}
	for _, tc := range cases {
		b, err := json.Marshal(tc.page)
		if err != nil || string(b) != tc.want {
			t.Errorf("%s: %s (%v), want %s", tc.name, b, err, tc.want)
		}
	}
}

func TestDetailOf(t *testing.T) {
	d := httpkit.DetailOf(apperr.Unavailable("retry", time.Second, nil))
	if d.Code != "SERVICE_UNAVAILABLE" || d.Message != "retry" || d.Details == nil {
		t.Errorf("DetailOf = %+v", d)
	}
	b, _ := json.Marshal(httpkit.DetailOf(apperr.NotFound("x")))
	if want := `{"code":"NOT_FOUND","message":"x","details":[]}`; string(b) != want {
		t.Errorf("DetailOf JSON = %s, want %s", b, want)
	}
}

func TestHealthRoutes(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	var healthy atomic.Bool
	healthy.Store(true)
	httpkit.HealthRoutes(e, reg, map[string]httpkit.Check{
		"nats": func(context.Context) error { return nil },
		"clickhouse": func(context.Context) error {
			if healthy.Load() {
				return nil
			}
			return errors.New("connection refused")
		},
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	if r := do(t, http.MethodGet, srv.URL+"/healthz", nil, nil); r.status != 200 {
		t.Errorf("healthz %d", r.status)
	}
	if r := do(t, http.MethodGet, srv.URL+"/readyz", nil, nil); r.status != 200 || !strings.Contains(string(r.body), `"ready":true`) {
		t.Errorf("readyz healthy: %d %s", r.status, r.body)
	}
	healthy.Store(false)
	r := do(t, http.MethodGet, srv.URL+"/readyz", nil, nil)
	if r.status != 503 || !strings.Contains(string(r.body), `"clickhouse":"connection refused"`) || !strings.Contains(string(r.body), `"nats":"ok"`) {
		t.Errorf("readyz unhealthy: %d %s", r.status, r.body)
	}
	if r := do(t, http.MethodGet, srv.URL+"/metrics", nil, nil); r.status != 200 || !strings.Contains(string(r.body), "vigil_http_requests_total") {
		t.Errorf("metrics: %d", r.status)
	}
	if _, err := httpkit.NewServer(slog.New(slog.DiscardHandler), reg); err == nil {
		t.Error("registering the HTTP metrics twice on one registry should fail")
	}
}

// TestMetricLabelsAreBounded: 100 requests with made-up methods and paths
// add a bounded number of series, and no label carries what the client
// made up (issue 14: 100 random methods grew /metrics to 108 MB).
func TestMetricLabelsAreBounded(t *testing.T) {
	reg := prometheus.NewRegistry()
	e, err := httpkit.NewServer(slog.New(slog.DiscardHandler), reg)
	if err != nil {
		t.Fatal(err)
	}
	e.GET("/v1/things/:id", func(c echo.Context) error { return c.NoContent(http.StatusNoContent) })
	// A registered route that answers 404 itself is still that route.
	e.GET("/v1/off", func(c echo.Context) error { return c.NoContent(http.StatusNotFound) })
	httpkit.HealthRoutes(e, reg, nil)
	srv := httptest.NewServer(e)
	defer srv.Close()
	do(t, http.MethodGet, srv.URL+"/v1/off", nil, nil)
	for i := range 100 {
		method := fmt.Sprintf("M%05dX", i)
		do(t, method, fmt.Sprintf("%s/v1/things/%d", srv.URL, i), nil, nil)
		do(t, http.MethodGet, fmt.Sprintf("%s/no/such/%d", srv.URL, i), nil, nil)
		do(t, http.MethodGet, fmt.Sprintf("%s/v1/things/%d", srv.URL, i), nil, nil)
	}
	r := do(t, http.MethodGet, srv.URL+"/metrics", nil, nil)
	if bytes.Contains(r.body, []byte("M00042X")) || bytes.Contains(r.body, []byte("/no/such/")) || bytes.Contains(r.body, []byte("things/42")) {
		t.Fatalf("metrics carry client-chosen labels")
	}
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	for _, f := range fams {
		series[f.GetName()] = len(f.GetMetric())
	}
	// GET and OTHER on /v1/things/:id, plus the unmatched GETs, at a
	// couple of statuses each.
	if n := series["vigil_http_requests_total"]; n == 0 || n > 7 {
		t.Fatalf("vigil_http_requests_total has %d series: %s", n, r.body)
	}
	if !bytes.Contains(r.body, []byte(`method="OTHER"`)) || !bytes.Contains(r.body, []byte(`route="unmatched"`)) {
		t.Fatalf("want the OTHER method and unmatched route labels:\n%s", r.body)
	}
	if !bytes.Contains(r.body, []byte(`vigil_http_requests_total{method="GET",route="/v1/off",status="404"} 1`)) {
		t.Fatalf("a registered route answering 404 lost its label:\n%s", r.body)
	}
	for _, tc := range []struct{ in, want string }{
		{"GET", "GET"}, {"PATCH", "PATCH"}, {"get", "OTHER"}, {"PROPFIND", "OTHER"}, {"", "OTHER"},
	} {
		if got := httpkit.MetricMethod(tc.in); got != tc.want {
			t.Errorf("MetricMethod(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

type lenientInner struct {
	Role string `json:"role"`
}

type lenientBody struct {
	Name  string        `json:"name"`
	Count int           `json:"count,omitempty"`
	Inner *lenientInner `json:"inner"`
	lenientInner
	Skipped string `json:"-"`
}

// TestDecodeLenient: unknown top-level fields are ignored and named in
// Warning headers; known fields, nested objects and trailing data are
// checked as strictly as DecodeJSON checks them.
func TestDecodeLenient(t *testing.T) {
	srv, _ := newServer(t)
	cases := []struct {
		name     string
		body     string
		status   int
		warnings []string
		want     lenientBody
	}{
		{"known fields only", `{"name":"a","count":2,"role":"r"}`, 200, nil, lenientBody{Name: "a", Count: 2, lenientInner: lenientInner{Role: "r"}}},
		{"unknown fields ignored", `{"name":"a","colour":"blue","zeta":{"x":1}}`, 200,
			[]string{`299 - "unknown field \"colour\" ignored"`, `299 - "unknown field \"zeta\" ignored"`}, lenientBody{Name: "a"}},
		{"a field tagged - is unknown", `{"name":"a","Skipped":"x"}`, 200, []string{`299 - "unknown field \"Skipped\" ignored"`}, lenientBody{Name: "a"}},
		{"known field of the wrong type", `{"name":"a","count":"two","colour":1}`, 400, []string{`299 - "unknown field \"colour\" ignored"`}, lenientBody{}},
		{"unknown field nested in a known object", `{"name":"a","inner":{"role":"r","x":1}}`, 400, nil, lenientBody{}},
		{"trailing data", `{"name":"a"} {}`, 400, nil, lenientBody{}},
		{"not an object", `[1]`, 400, nil, lenientBody{}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := do(t, http.MethodPost, srv.URL+"/lenient", strings.NewReader(tc.body), map[string]string{"Content-Type": "application/json"})
			if r.status != tc.status {
				t.Fatalf("status %d body %s, want %d", r.status, r.body, tc.status)
			}
			if got := r.header.Values("Warning"); !slices.Equal(got, tc.warnings) {
				t.Errorf("Warning = %q, want %q", got, tc.warnings)
			}
			if tc.status != 200 {
				checkEnvelope(t, r, 400, "VALIDATION_ERROR", "invalid_request")
				return
			}
			var got lenientBody
			if err := json.Unmarshal(r.body, &got); err != nil || got.Name != tc.want.Name || got.Count != tc.want.Count || got.Role != tc.want.Role {
				t.Errorf("decoded %s, want %+v", r.body, tc.want)
			}
		})
	}
}

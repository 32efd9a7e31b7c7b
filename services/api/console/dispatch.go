package console

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/httpkit"
)

// recorder is the in-memory http.ResponseWriter an API dispatch writes to.
type recorder struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }
func (r *recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.body.Write(b)
}
func (r *recorder) WriteHeader(s int) {
	if r.status == 0 {
		r.status = s
	}
}

// apiResult is an API answer.
type apiResult struct {
	Status int
	Header http.Header
	Body   []byte
}

// OK reports a 2xx.
func (r apiResult) OK() bool { return r.Status >= 200 && r.Status < 300 }

// Decode unmarshals the body into v.
func (r apiResult) Decode(v any) error { return json.Unmarshal(r.Body, v) }

// Problem is the error envelope's message and details, for a page.
func (r apiResult) Problem() string {
	var env struct {
		Error struct {
			Message string `json:"message"`
			Details []struct {
				Path, Message string
			} `json:"details"`
		} `json:"error"`
	}
	if json.Unmarshal(r.Body, &env) != nil || env.Error.Message == "" {
		return fmt.Sprintf("HTTP %d", r.Status)
	}
	var b strings.Builder
	b.WriteString(env.Error.Message)
	for _, d := range env.Error.Details {
		fmt.Fprintf(&b, "\n%s: %s", d.Path, d.Message)
	}
	return b.String()
}

// call sends one API request as the signed-in person, in-process through
// the same echo instance (and so the same middleware, authentication and
// role checks) a remote client goes through. body is JSON-encoded unless
// it is a []byte (sent as is, with contentType).
func (c *Console) call(ec echo.Context, method, path string, body any, contentType ...string) apiResult {
	s := current(ec)
	var rd io.Reader
	ct := "application/json"
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
		if len(contentType) > 0 {
			ct = contentType[0]
		}
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return apiResult{Status: http.StatusInternalServerError, Body: []byte(`{"error":{"message":"console: cannot encode the request"}}`)}
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(ec.Request().Context(), method, path, rd)
	if err != nil {
		return apiResult{Status: http.StatusBadRequest, Body: []byte(`{"error":{"message":"console: bad request path"}}`)}
	}
	req.RemoteAddr = ec.Request().RemoteAddr
	req.Host = ec.Request().Host
	req.Header.Set(echo.HeaderAuthorization, "Bearer "+s.token)
	req.Header.Set(httpkit.TenantHeader, s.principal.Tenant)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "vigil-console")
	if rd != nil {
		req.Header.Set(echo.HeaderContentType, ct)
	}
	rec := &recorder{header: http.Header{}}
	c.api.ServeHTTP(rec, req)
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if rec.status == http.StatusUnauthorized {
		// The credential was revoked or expired: the session ends with it.
		if err := c.sessions.drop(ec.Request().Context(), s); err != nil {
			c.log.Warn("console: end a session", "error", err)
		}
	}
	return apiResult{Status: rec.status, Header: rec.header, Body: rec.body.Bytes()}
}

// list GETs an API list page and returns its items.
func (c *Console) list(ec echo.Context, path string) ([]map[string]any, apiResult) {
	r := c.call(ec, http.MethodGet, path, nil)
	if !r.OK() {
		return nil, r
	}
	var page struct {
		Data []map[string]any `json:"data"`
	}
	if err := r.Decode(&page); err != nil {
		var arr []map[string]any
		if json.Unmarshal(r.Body, &arr) == nil {
			return arr, r
		}
	}
	return page.Data, r
}

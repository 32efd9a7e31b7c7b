package console

// The policy editor's test cases and replay: the page's script posts the
// editor's text here and these pass it to POST /v1/policies/test and
// /v1/policies/replay as the signed-in person, answering the API's JSON
// (or its error envelope, a 400 as 200 with valid: false) for the script
// to render.

import (
	"io"
	"net/http"
	"net/url"

	"github.com/labstack/echo/v4"
)

// relayPolicy posts the request body (the editor's YAML) to the API route
// at path and answers the API's status and body.
func (c *Console) relayPolicy(ec echo.Context, path string) error {
	body, err := io.ReadAll(io.LimitReader(ec.Request().Body, 1<<20))
	if err != nil {
		return c.fail(ec, http.StatusBadRequest, "cannot read the policy")
	}
	r := c.call(ec, http.MethodPost, path, body, "application/yaml")
	if r.Status == http.StatusBadRequest {
		// An invalid draft is the editor's normal state while typing: as
		// the validate relay does, answer 200 with the envelope and
		// valid: false, so the browser does not log a failed request on
		// every keystroke.
		var env map[string]any
		if err := r.Decode(&env); err == nil && env != nil {
			env["valid"] = false
			return ec.JSON(http.StatusOK, env)
		}
	}
	return ec.Blob(r.Status, echo.MIMEApplicationJSON, r.Body)
}

// testPolicy runs the draft's test cases.
func (c *Console) testPolicy(ec echo.Context) error {
	return c.relayPolicy(ec, "/v1/policies/test")
}

// replayPolicy replays the tenant's recorded decisions of the last ?days
// against the draft; the API checks the bounds.
func (c *Console) replayPolicy(ec echo.Context) error {
	q := url.Values{}
	q.Set("days", ec.QueryParam("days"))
	q.Set("limit", "100")
	return c.relayPolicy(ec, "/v1/policies/replay?"+q.Encode())
}

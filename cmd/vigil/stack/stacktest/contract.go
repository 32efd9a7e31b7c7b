package stacktest

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/vigilhq/vigil/pkg/openapi"
	"github.com/vigilhq/vigil/pkg/routes"
)

// OpenAPI loads and validates the built-in OpenAPI 3.1 document with
// kin-openapi, whose openapi3filter validates 3.1 documents' bodies with
// JSON Schema 2020-12.
func OpenAPI(t testing.TB) *openapi3.T {
	t.Helper()
	b, err := openapi.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	doc, err := openapi3.NewLoader().LoadFromData(b)
	if err != nil {
		t.Fatalf("load the OpenAPI document: %v", err)
	}
	if err := doc.Validate(context.Background()); err != nil {
		t.Fatalf("the OpenAPI document is invalid: %v", err)
	}
	if !doc.IsOpenAPI31OrLater() {
		t.Fatalf("openapi %q, want 3.1", doc.OpenAPI)
	}
	return doc
}

// contract is an http.RoundTripper that validates every response of a
// route of the table against the OpenAPI document: its status must be
// documented for the operation (the success status, or an error) and
// its body must match the schema (the error envelope for every error).
type contract struct {
	t      testing.TB
	doc    *openapi3.T
	router *routes.Router

	mu      sync.Mutex
	checked map[string]bool // routes whose responses were validated
}

// ContractClient is an HTTP client whose every response is checked
// against the OpenAPI document; at the end of the test it reports how
// many routes were covered.
func ContractClient(t testing.TB) *http.Client {
	c := &contract{t: t, doc: OpenAPI(t), router: routes.NewRouter(routes.Default()), checked: map[string]bool{}}
	t.Cleanup(func() {
		t.Logf("OpenAPI contract: responses of %d of %d routes validated", len(c.checked), len(routes.Default()))
	})
	return &http.Client{Transport: c, Timeout: 60 * time.Second}
}

func (c *contract) RoundTrip(req *http.Request) (*http.Response, error) {
	res, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(res.Body)
	res.Body.Close()
	if err != nil {
		return nil, err
	}
	res.Body = io.NopCloser(bytes.NewReader(body))
	route, ok := c.router.Find(req)
	if !ok || openapi.BrowserRoute(route.Path) {
		// Console pages are not API operations (docs/console.md).
		return res, nil
	}
	oasPath := OpenAPIPath(route.Path)
	item := c.doc.Paths.Value(oasPath)
	if item == nil || item.GetOperation(route.Method) == nil {
		c.t.Errorf("contract: %s is in the route table but not in the OpenAPI document", route)
		return res, nil
	}
	in := &openapi3filter.RequestValidationInput{Request: req, Route: &routers.Route{
		Spec: c.doc, Path: oasPath, PathItem: item, Method: route.Method, Operation: item.GetOperation(route.Method),
	}}
	err = openapi3filter.ValidateResponse(req.Context(), &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in, Status: res.StatusCode, Header: res.Header,
		Body: io.NopCloser(bytes.NewReader(body)), Options: &openapi3filter.Options{IncludeResponseStatus: true},
	})
	if err != nil {
		c.t.Errorf("contract: %s %s → %d does not match the OpenAPI document: %v\nbody: %.300s", req.Method, req.URL.Path, res.StatusCode, err, body)
	}
	c.mu.Lock()
	c.checked[route.String()] = true
	c.mu.Unlock()
	return res, nil
}

// OpenAPIPath is an echo path in OpenAPI's template syntax.
func OpenAPIPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"

	"github.com/vigilhq/vigil/pkg/openapi"
	"github.com/vigilhq/vigil/pkg/routes"
)

// loadOpenAPI loads and validates the built-in OpenAPI 3.1 document with
// kin-openapi, whose openapi3filter validates 3.1 documents' bodies with
// JSON Schema 2020-12.
func loadOpenAPI(t testing.TB) *openapi3.T {
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

// contractClient is an HTTP client whose every response is checked
// against the OpenAPI document; at the end of the test it reports how
// many routes were covered.
func contractClient(t testing.TB) (*http.Client, *contract) {
	c := &contract{t: t, doc: loadOpenAPI(t), router: routes.NewRouter(routes.Default()), checked: map[string]bool{}}
	t.Cleanup(func() {
		t.Logf("OpenAPI contract: responses of %d of %d routes validated", len(c.checked), len(routes.Default()))
	})
	return &http.Client{Transport: c, Timeout: httpClient.Timeout}, c
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
	if !ok {
		return res, nil
	}
	oasPath := openapiPath(route.Path)
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

// openapiPath is an echo path in OpenAPI's template syntax.
func openapiPath(p string) string {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if strings.HasPrefix(s, ":") {
			parts[i] = "{" + s[1:] + "}"
		}
	}
	return strings.Join(parts, "/")
}

// TestOpenAPIDocument: the document is valid OpenAPI 3.1 (kin-openapi),
// has exactly the operations of the route table, describes no route the
// table lacks, gives every operation the error envelope, and is what the
// api serves at /openapi.json without a key.
func TestOpenAPIDocument(t *testing.T) {
	doc := loadOpenAPI(t)
	table := routes.Default()
	var inDoc []string
	for p, item := range doc.Paths.Map() {
		for m, op := range item.Operations() {
			inDoc = append(inDoc, m+" "+p)
			want := "#/components/schemas/ErrorEnvelope"
			if p == "/v1/traces" {
				want = "#/components/schemas/OTLPStatus" // OTLP/HTTP's own error shape
			}
			if op.Responses.Default() == nil || op.Responses.Default().Value.Content.Get("application/json").Schema.Ref != want {
				t.Errorf("%s %s: errors are not %s", m, p, want)
			}
		}
	}
	for _, r := range table {
		if !slices.Contains(inDoc, r.Method+" "+openapiPath(r.Path)) {
			t.Errorf("%s is not in the OpenAPI document", r)
		}
	}
	if len(inDoc) != len(table) {
		t.Errorf("the document has %d operations, the route table %d routes", len(inDoc), len(table))
	}
	for _, o := range openapi.Operations() {
		if !slices.ContainsFunc(table, func(r routes.Route) bool { return r.String() == o }) {
			t.Errorf("pkg/openapi describes %s, which is not in the route table", o)
		}
	}

	e := newEnv(t)
	r := e.get("", openapi.Path)
	want, _ := openapi.Builtin()
	if r.status != http.StatusOK || !bytes.Equal(r.body, want) || !json.Valid(r.body) {
		t.Fatalf("GET /openapi.json: %d, %d bytes, want the document", r.status, len(r.body))
	}
}

package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"slices"
	"testing"

	"github.com/vigilhq/vigil/cmd/vigil/stack/stacktest"
	"github.com/vigilhq/vigil/pkg/openapi"
	"github.com/vigilhq/vigil/pkg/routes"
)

// TestOpenAPIDocument: the document is valid OpenAPI 3.1 (kin-openapi),
// has exactly the operations of the route table, describes no route the
// table lacks, gives every operation the error envelope, and is what the
// api serves at /openapi.json without a key.
func TestOpenAPIDocument(t *testing.T) {
	doc := stacktest.OpenAPI(t)
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
	api := 0 // the table's API routes: all but the console's pages
	for _, r := range table {
		if openapi.BrowserRoute(r.Path) {
			if slices.Contains(inDoc, r.Method+" "+stacktest.OpenAPIPath(r.Path)) {
				t.Errorf("%s is a console page, not an API operation, but the OpenAPI document lists it", r)
			}
			continue
		}
		api++
		if !slices.Contains(inDoc, r.Method+" "+stacktest.OpenAPIPath(r.Path)) {
			t.Errorf("%s is not in the OpenAPI document", r)
		}
	}
	if len(inDoc) != api {
		t.Errorf("the document has %d operations, the route table %d API routes", len(inDoc), api)
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

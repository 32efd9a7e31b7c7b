package agent_test

import (
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
)

func TestParseDeclarationSources(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name     string
		body     string
		want     map[string][]string
		badPaths []string
	}{
		{"label or list", `{"tools":["web_fetch","crm"],"destinations":["*.example.com"],"sources":{"web_fetch":"untrusted_content","crm":["pii","internal"],"*.example.com":["untrusted_content"]}}`,
			map[string][]string{"web_fetch": {"untrusted_content"}, "crm": {"pii", "internal"}, "*.example.com": {"untrusted_content"}}, nil},
		{"none", `{"tools":["a"]}`, nil, nil},
		{"null", `{"tools":["a"],"sources":null}`, nil, nil},
		{"undeclared key", `{"tools":["a"],"sources":{"b":"pii"}}`, nil, []string{"sources.b"}},
		{"bad label", `{"tools":["a"],"sources":{"a":["PII data"]}}`, nil, []string{"sources.a[0]"}},
		{"empty list", `{"tools":["a"],"sources":{"a":[]}}`, nil, []string{"sources.a"}},
		{"not an object", `{"tools":["a"],"sources":["a"]}`, nil, []string{"sources"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := agent.ParseDeclaration([]byte(tc.body), now)
			if tc.badPaths == nil {
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(d.Sources, tc.want) {
					t.Fatalf("sources %v, want %v", d.Sources, tc.want)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) {
				t.Fatalf("want a validation error, got %v", err)
			}
			for _, p := range tc.badPaths {
				if !slices.ContainsFunc(ae.Details, func(fe apperr.FieldError) bool { return fe.Path == p }) {
					t.Errorf("no error at %s: %+v", p, ae.Details)
				}
			}
		})
	}
}

// TestNarrowsKeepsSources: an agent key may not drop the sources that
// make its reads label its session.
func TestNarrowsKeepsSources(t *testing.T) {
	cur := &agent.Declaration{Tools: []string{"web_fetch", "search"}, Sources: map[string][]string{"web_fetch": {"untrusted_content"}}}
	for _, tc := range []struct {
		name string
		next agent.Declaration
		want bool
	}{
		{"same", agent.Declaration{Tools: []string{"web_fetch"}, Sources: map[string][]string{"web_fetch": {"untrusted_content"}}}, true},
		{"more sources", agent.Declaration{Tools: []string{"web_fetch", "search"}, Sources: map[string][]string{"web_fetch": {"untrusted_content", "pii"}, "search": {"pii"}}}, true},
		{"source dropped", agent.Declaration{Tools: []string{"web_fetch"}}, false},
		{"tool with a source dropped", agent.Declaration{Tools: []string{"search"}}, false},
		{"source changed", agent.Declaration{Tools: []string{"web_fetch"}, Sources: map[string][]string{"web_fetch": {"pii"}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := cur.Narrows(tc.next); got != tc.want {
				t.Fatalf("Narrows = %v, want %v", got, tc.want)
			}
		})
	}
}

package tenant_test

import (
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/tenant"
)

func TestValid(t *testing.T) {
	cases := []struct {
		id   string
		want bool
	}{
		{tenant.Default, true},
		{"acme-prod", true},
		{"acme_prod", true},
		{"0", true},
		{"9lives", true},
		{"a" + strings.Repeat("b", 62), true},
		{"a" + strings.Repeat("b", 63), false},
		{"", false},
		{"-acme", false},
		{"_acme", false},
		{"Acme", false},
		{"acme.prod", false},
		{"acme*", false},
		{"acme>", false},
		{"acme prod", false},
		{"acme\n", false},
		{"acme/prod", false},
		{"ácme", false},
		{"acme'", false},
	}
	for _, tc := range cases {
		if got := tenant.Valid(tc.id); got != tc.want {
			t.Errorf("Valid(%q) = %v, want %v", tc.id, got, tc.want)
		}
	}
}

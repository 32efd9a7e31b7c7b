package risk

import (
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// FuzzParseSpan feeds the timeseries query parameters, which come from
// any caller: every input is either a bounded span or a validation error.
func FuzzParseSpan(f *testing.F) {
	for _, s := range [][4]string{
		{"", "", "", ""}, {"day", "7", "", "2026-11-20T00:00:00Z"}, {"hour", "", "24", ""}, {"week", "", "", ""},
		{"day", "0", "", ""}, {"day", "-1", "", ""}, {"hour", "", "99999999999999999999", ""}, {"day", "", "", "0001-01-01T00:00:00Z"},
		{"daily", "366", "", "9999-12-31T23:59:59Z"}, {"hourly", "x", "x", "yesterday"},
	} {
		f.Add(s[0], s[1], s[2], s[3])
	}
	now := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, interval, days, hours, to string) {
		sp, err := parseSpan(interval, days, hours, to, now)
		if err != nil {
			if apperr.KindOf(err) != apperr.KindValidation {
				t.Fatalf("not a validation error: %v", err)
			}
			return
		}
		if n := sp.last - sp.first + 1; n < 1 || n > 744 {
			t.Fatalf("%d buckets", n)
		}
		if sp.first < 0 || sp.last > int64(^uint32(0)) {
			t.Fatalf("buckets %d..%d do not fit the UInt32 column", sp.first, sp.last)
		}
	})
}

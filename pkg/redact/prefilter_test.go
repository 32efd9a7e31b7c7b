package redact

import (
	"strings"
	"testing"
)

// prefilterSeeds hold values every built-in class accepts, written the
// ways the pre-filters must let through, and look-alikes they may drop.
var prefilterSeeds = []string{
	"call +44 20 7946 0958 now", "+4915112345678", "(555) 123-4567", "555.123.4567", "tel 030-1234567",
	"ssn 123-45-6789", "123 45 6789", "sin 046-454-286", "046 454 286",
	"4111 1111 1111 1111", "4111111111111111", "GB82 WEST 1234 5698 7654 32", "12345678Z", "X1234567L",
	"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "https://crm.example.net/v1/items/482913?expand=owner",
	"2025-01-15T10:30:00.123Z", "v1.2.3.4567", "192.168.100.200", "QQ123456C", "jane@example.com", "password=hunter22",
}

// TestPrefiltersPassEveryMatch and FuzzPrefilters: wherever a built-in
// detector would replace a value, its pre-filter lets the string through
// (the pre-filters only save work; they must never hide a value).
func TestPrefiltersPassEveryMatch(t *testing.T) {
	for _, s := range prefilterSeeds {
		checkPrefilters(t, s)
	}
}

func FuzzPrefilters(f *testing.F) {
	for _, s := range prefilterSeeds {
		f.Add(s)
	}
	f.Fuzz(checkPrefilters)
}

func checkPrefilters(t *testing.T, s string) {
	sm := summarize(s)
	for _, d := range builtins() {
		if d.want(sm) {
			continue
		}
		for _, m := range d.re.FindAllStringSubmatchIndex(s, -1) {
			a, b := m[2*d.group], m[2*d.group+1]
			if a < 0 || b <= a || numeric(d.class) && (a > 0 && alnum(s[a-1]) || b < len(s) && alnum(s[b])) {
				continue
			}
			if d.valid == nil || d.valid(s[a:b]) {
				t.Fatalf("%s detector (%s) finds %q in %q, but its pre-filter drops the string", d.class, strings.TrimSpace(d.re.String()[:20]), s[a:b], s)
			}
		}
	}
}

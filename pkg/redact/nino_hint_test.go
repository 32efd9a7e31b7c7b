package redact

import "testing"

// TestNINOHint: the pre-filter must pass every string the NINO pattern can
// match, and may drop strings it cannot.
func TestNINOHint(t *testing.T) {
	for _, tc := range []struct {
		s    string
		want bool
	}{
		{"QQ123456C", true},
		{"my nino is qq 12 34 56 c, thanks", true},
		{"AB 123456 D", true},
		{"https://api.example.com/v1/items/123456?expand=owner", false},
		{"order 1234567A", false},
		{"12345C", false},
		{"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", false},
		{"QQ123456C_x", false},
		{"QQ123456C.", true},
		{"", false},
	} {
		if got := ninoHint(tc.s); got != tc.want {
			t.Errorf("ninoHint(%q) = %v, want %v", tc.s, got, tc.want)
		}
	}
}

// FuzzNINOHint: wherever the NINO detector's pattern matches, the hint
// is true.
func FuzzNINOHint(f *testing.F) {
	for _, s := range []string{"QQ123456C", "qq 12 34 56 c", "AB1234567D", "x 123456 a"} {
		f.Add(s)
	}
	var re = builtins()
	f.Fuzz(func(t *testing.T, s string) {
		for _, d := range re {
			if d.class == ClassNationalID && d.re.String()[:4] == "(?i)" && d.re.MatchString(s) && !ninoHint(s) {
				t.Fatalf("NINO pattern matches %q but the hint drops it", s)
			}
		}
	})
}

package redact

import (
	"bytes"
	"regexp"
	"strings"
)

// detector finds one class of sensitive value. The regular expressions are
// compiled once per process (see builtins); a detector runs only when its
// cheap pre-filter says the string could hold a match, which keeps the
// common case (tool names, short ids, plain prose) free of regex work.
type detector struct {
	class Class
	re    *regexp.Regexp
	// group is the submatch that holds the value (0: the whole match), so
	// that "password=hunter22" keeps its label and loses only the value.
	group int
	// valid rejects look-alikes a regex cannot rule out: a card number
	// that fails Luhn, an IBAN that fails mod-97, an SSN in a reserved
	// range, an IPv4 address that looks like a phone number.
	valid func(string) bool
	// want is the pre-filter over the string's summary.
	want func(summary) bool
}

// summary is what one pass over a string tells the pre-filters.
type summary struct {
	s      string
	digits int
	at     bool
	upper  int
	// run is the most digits in one stretch of digits and the separators
	// numbers are written with (" -.()+"): a hash or an id that mixes
	// letters into its digits has a short run, and skips the numeric
	// detectors.
	run int
	// sepRun is like run, counted only at digits that follow one of
	// "+ .-" in the same stretch: every phone number, SSN and SIN the
	// detectors accept has such a separator before its last digit, and
	// hashes and ids of bare digits have none.
	sepRun int
	// long is true when the string is long enough to hold a secret.
	long bool
	// dashy is true when the string has a '-' or '_': every match of
	// the provider-key pattern has one, or an upper-case letter.
	dashy bool
}

func summarize(s string) summary {
	sm := summary{s: s, long: len(s) >= 16}
	run, sep := 0, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= '0' && c <= '9':
			sm.digits++
			run++
			sm.run = max(sm.run, run)
			if sep {
				sm.sepRun = max(sm.sepRun, run)
			}
			continue
		case c == '@':
			sm.at = true
		case c >= 'A' && c <= 'Z':
			sm.upper++
		case c == '-' || c == '_':
			sm.dashy = true
		}
		switch c {
		case ' ', '-', '.', '+':
			sep = true
		case '(', ')':
		default:
			run, sep = 0, false
		}
	}
	return sm
}

// ninoHint reports whether s has six digits (spaces allowed between
// them) followed, after at most one space, by a letter A–D that ends a
// word: the tail every National Insurance number ends with. URLs and ids full of digits rarely
// do, and skip the case-insensitive regex.
func ninoHint(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			continue
		}
		j, digits := i, 0
		for j < len(s) && (s[j] >= '0' && s[j] <= '9' || s[j] == ' ') {
			if s[j] != ' ' {
				digits++
			}
			j++
		}
		// The letter ends a word (the pattern's \b): in a hex hash,
		// "081884c7" is not a NINO's tail.
		if digits == 6 && j < len(s) && (j+1 == len(s) || !wordByte(s[j+1])) {
			if c := s[j] | 0x20; c >= 'a' && c <= 'd' {
				return true
			}
		}
		i = j
	}
	return false
}

// wordByte reports whether c is an ASCII word character, as \b sees it.
func wordByte(c byte) bool { return alnum(c) || c == '_' }

// secretHints are substrings one of which every built-in secret pattern
// contains; strings without any skip the secret regexes.
var secretHints = []string{
	"sk-", "sk_", "rk_", "pk_", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_", "xox", "AKIA", "ASIA", "AIza", "eyJ", "-----BEGIN", "glpat-", "vgl_",
	"npm_", "hf_", "SG.",
}

func hasSecretHint(sm summary) bool {
	// Each hint has a '-', a '_' or an upper-case letter, except "xox",
	// whose pattern goes on with a '-'.
	if !sm.long || !sm.dashy && sm.upper == 0 {
		return false
	}
	for _, h := range secretHints {
		if strings.Contains(sm.s, h) {
			return true
		}
	}
	return false
}

// containsFold reports whether strings.ToLower(s) contains any of
// lowers (lower-case ASCII), without building the lower-case copy on the
// heap when s is ASCII and short (nearly always). Other strings take
// ToLower itself: a few non-ASCII letters fold to ASCII ones (U+212A to
// k, U+017F to s), and the (?i) patterns behind these pre-filters match
// them.
func containsFold(s string, lowers ...string) bool {
	var buf [256]byte
	ascii := len(s) <= len(buf)
	for i := 0; ascii && i < len(s); i++ {
		if s[i] >= 0x80 {
			ascii = false
		}
		buf[i] = asciiLower(s[i])
	}
	if !ascii {
		l := strings.ToLower(s)
		for _, w := range lowers {
			if strings.Contains(l, w) {
				return true
			}
		}
		return false
	}
	for _, w := range lowers {
		if bytes.Contains(buf[:len(s)], []byte(w)) {
			return true
		}
	}
	return false
}

// asciiLower is c lower-cased if it is an ASCII upper-case letter.
func asciiLower(c byte) byte {
	if c >= 'A' && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// builtins returns the built-in detectors in priority order: when two
// matches overlap, the earlier detector in this list wins for equal spans.
func builtins() []detector {
	return []detector{
		{
			class: ClassSecret,
			re:    regexp.MustCompile(`-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)`),
			want:  func(sm summary) bool { return strings.Contains(sm.s, "-----BEGIN") },
		},
		{
			// Provider keys with a recognisable prefix, in one pass.
			class: ClassSecret,
			re: regexp.MustCompile(`\b(?:` +
				`vgl_[A-Za-z0-9_\-]{20,}` + // Vigil API keys
				`|sk-(?:ant-|proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}` + // OpenAI, Anthropic
				`|(?:sk|rk|pk)_(?:live|test)_[A-Za-z0-9]{16,}` + // Stripe
				`|gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,}` + // GitHub
				`|glpat-[A-Za-z0-9_\-]{20,}` + // GitLab
				`|xox[abposr]-[A-Za-z0-9\-]{10,}` + // Slack
				`|(?:AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}` + // AWS access key ids
				`|AIza[0-9A-Za-z_\-]{35}` + // Google API keys
				`|npm_[A-Za-z0-9]{36}` + // npm
				`|hf_[A-Za-z0-9]{30,}` + // Hugging Face
				`|SG\.[A-Za-z0-9_\-]{16,}\.[A-Za-z0-9_\-]{16,}` + // SendGrid
				`|eyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*` + // JWT
				`)`),
			want: hasSecretHint,
		},
		{
			class: ClassSecret,
			re:    regexp.MustCompile(`(?i)\bbearer\s+([A-Za-z0-9._~+/\-]{12,}=*)`),
			group: 1,
			want:  func(sm summary) bool { return sm.long && containsFold(sm.s, "bearer") },
		},
		{
			// AWS secret access keys next to their label, and generic
			// "password=…", "api_key: …" assignments in free text.
			class: ClassSecret,
			re:    regexp.MustCompile(`(?i)(?:aws_?secret_?access_?key|secret_?access_?key|password|passwd|pwd|secret|api_?key|access_?token|auth_?token|client_?secret|private_?key)["']?\s*[:=]\s*["']?([^\s"',;&]{6,})`),
			group: 1,
			want: func(sm summary) bool {
				if len(sm.s) < 10 || strings.IndexByte(sm.s, '=') < 0 && strings.IndexByte(sm.s, ':') < 0 {
					return false
				}
				return containsFold(sm.s, "pass", "pwd", "secret", "key", "token")
			},
		},
		{
			class: ClassCard,
			re:    regexp.MustCompile(`\b\d(?:[ \-]?\d){12,18}\b`),
			valid: validCard,
			want:  func(sm summary) bool { return sm.run >= 13 },
		},
		{
			class: ClassIBAN,
			re:    regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`),
			valid: validIBAN,
			want:  func(sm summary) bool { return sm.digits >= 2 && sm.upper >= 2 && len(sm.s) >= 15 },
		},
		{
			// US Social Security number, with separators.
			class: ClassNationalID,
			re:    regexp.MustCompile(`\b\d{3}[- ]\d{2}[- ]\d{4}\b`),
			valid: validSSN,
			want:  func(sm summary) bool { return sm.sepRun >= 9 },
		},
		{
			// UK National Insurance number.
			class: ClassNationalID,
			re:    regexp.MustCompile(`(?i)\b[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b`),
			valid: validNINO,
			want:  func(sm summary) bool { return sm.run >= 6 && ninoHint(sm.s) },
		},
		{
			// Spanish DNI and NIE, with their check letter.
			class: ClassNationalID,
			re:    regexp.MustCompile(`\b[XYZ]?\d{7,8}-?[A-Z]\b`),
			valid: validDNI,
			want:  func(sm summary) bool { return sm.run >= 7 && sm.upper >= 1 },
		},
		{
			// Canadian SIN, with separators, Luhn-checked.
			class: ClassNationalID,
			re:    regexp.MustCompile(`\b\d{3}[- ]\d{3}[- ]\d{3}\b`),
			valid: func(s string) bool { return luhn(digitsOf(s)) },
			want:  func(sm summary) bool { return sm.sepRun >= 9 },
		},
		{
			class: ClassEmail,
			re:    regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9\-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,}`),
			want:  func(sm summary) bool { return sm.at },
		},
		{
			// International (+…) or grouped national numbers; validPhone
			// checks the digit count and rules out dates, times and IPs.
			class: ClassPhone,
			re:    regexp.MustCompile(`(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{2,8}){1,5}|\+\d{8,15}`),
			valid: validPhone,
			want:  func(sm summary) bool { return sm.sepRun >= 7 },
		},
	}
}

var ssnShape = regexp.MustCompile(`^\d{3}[- ]\d{2}[- ]\d{4}$`)

func digitsOf(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= '0' && c <= '9' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// luhn is the ISO/IEC 7812 check digit test.
func luhn(d string) bool {
	if len(d) < 2 {
		return false
	}
	sum, dbl := 0, false
	for i := len(d) - 1; i >= 0; i-- {
		n := int(d[i] - '0')
		if n < 0 || n > 9 {
			return false
		}
		if dbl {
			n *= 2
			if n > 9 {
				n -= 9
			}
		}
		sum += n
		dbl = !dbl
	}
	return sum%10 == 0
}

func validCard(s string) bool {
	d := digitsOf(s)
	if len(d) < 13 || len(d) > 19 || !luhn(d) {
		return false
	}
	// Mixed separators ("4111 1111-1111") are not how cards are written.
	if strings.IndexByte(s, ' ') >= 0 && strings.IndexByte(s, '-') >= 0 {
		return false
	}
	return strings.Trim(d, "0") != ""
}

// validIBAN applies ISO 13616 mod-97 to the compacted value.
func validIBAN(s string) bool {
	c := strings.ReplaceAll(s, " ", "")
	if len(c) < 15 || len(c) > 34 {
		return false
	}
	r := c[4:] + c[:4]
	rem := 0
	for i := 0; i < len(r); i++ {
		ch := r[i]
		switch {
		case ch >= '0' && ch <= '9':
			rem = (rem*10 + int(ch-'0')) % 97
		case ch >= 'A' && ch <= 'Z':
			v := int(ch-'A') + 10
			rem = (rem*100 + v) % 97
		default:
			return false
		}
	}
	return rem == 1
}

// validSSN rules out the ranges the SSA never issues.
func validSSN(s string) bool {
	d := digitsOf(s)
	if len(d) != 9 {
		return false
	}
	area, group, serial := d[:3], d[3:5], d[5:]
	if area == "000" || area == "666" || area[0] == '9' || group == "00" || serial == "0000" {
		return false
	}
	// One separator style throughout.
	return s[3] == s[6]
}

// validNINO rules out the prefixes HMRC never allocates.
func validNINO(s string) bool {
	p := strings.ToUpper(s[:2])
	switch p {
	case "BG", "GB", "KN", "NK", "NT", "TN", "ZZ":
		return false
	}
	return true
}

// validDNI checks the Spanish DNI/NIE control letter.
func validDNI(s string) bool {
	const letters = "TRWAGMYFPDXBNJZSQVHLCKE"
	c := strings.ReplaceAll(s, "-", "")
	num := c[:len(c)-1]
	switch num[0] {
	case 'X':
		num = "0" + num[1:]
	case 'Y':
		num = "1" + num[1:]
	case 'Z':
		num = "2" + num[1:]
	}
	if len(num) != 8 {
		return false
	}
	n := 0
	for i := 0; i < len(num); i++ {
		n = n*10 + int(num[i]-'0')
	}
	return letters[n%23] == c[len(c)-1]
}

// validPhone accepts 7–15 digits (E.164's maximum) written the way phone
// numbers are, and rejects dates, times, version strings and IPv4
// addresses, which the shape alone would let through.
func validPhone(s string) bool {
	d := digitsOf(s)
	intl := strings.HasPrefix(s, "+")
	if len(d) > 15 || len(d) < 7 || (!intl && len(d) < 9) {
		return false
	}
	var seps []byte
	groups := 1
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case ' ', '.', '-':
			seps = append(seps, s[i])
			groups++
		}
	}
	allDots := len(seps) > 0
	for _, c := range seps {
		if c != '.' {
			allDots = false
		}
	}
	// 192.168.100.200, 1.2.3.4567: dotted quads and versions.
	if allDots && !intl && groups >= 3 {
		return false
	}
	// The 3-2-4 shape is an SSN's, valid or not.
	if ssnShape.MatchString(s) {
		return false
	}
	// 2025-01-15 / 2025 01 15 style dates: a leading 4-digit year 19xx/20xx
	// followed by two short groups.
	if !intl && len(s) >= 10 && (strings.HasPrefix(s, "19") || strings.HasPrefix(s, "20")) && len(s) > 4 && (s[4] == '-' || s[4] == '.' || s[4] == ' ') && groups <= 3 {
		return false
	}
	return true
}

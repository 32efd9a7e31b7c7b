package api

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestSensitiveKey(t *testing.T) {
	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"hash", true}, {"Hash", true}, {"HASH", true}, {"hashes", false}, {"keyHash", false},
		{"secret", true}, {"clientSecret", true}, {"SECRETS", true}, {"webhook_secret_v2", true},
		{"password", true}, {"oldPassword", true}, {"accessToken", true}, {"tokens", true},
		{"ciphertext", true}, {"CipherText", true}, {"credential", true}, {"credentials", true},
		{"sealed", true}, {"sealedKey", true}, {"unsealed", false},
		{"apikey", true}, {"apiKey", true}, {"API_KEY", true}, {"api-key", false}, {"apiKeys", false},
		{"name", false}, {"", false}, {"revokedBy", false}, {"to", false},
		// Unicode folds these onto ASCII letters, and so does the pattern.
		{"\u212aey_to\u212aen", true}, {"\u017fecret", true}, {"ha\u017fh", true},
		// Broader than the pattern, whose dot does not cross a line break.
		{"a\nsecret", true},
		{strings.Repeat("x", 100) + "Token", true}, {strings.Repeat("x", 100), false},
	} {
		if got := sensitiveKey(tc.key); got != tc.want {
			t.Errorf("sensitiveKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

// FuzzSensitiveKey holds sensitiveKey to the pattern: never less, and
// exactly it on ASCII names without a line break.
func FuzzSensitiveKey(f *testing.F) {
	for _, s := range []string{"hash", "clientSecret", "API_KEY", "sealedBox", "name", "\u212aey", "a\nsecret", "ſecret", "PassWord", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, k string) {
		got, ref := sensitiveKey(k), sensitivePattern.MatchString(k)
		if ref && !got {
			t.Fatalf("sensitiveKey(%q) = false; the pattern matches", k)
		}
		ascii := true
		for i := 0; i < len(k); i++ {
			ascii = ascii && k[i] < utf8.RuneSelf
		}
		if ascii && !strings.Contains(k, "\n") && got != ref {
			t.Fatalf("sensitiveKey(%q) = %v, pattern %v", k, got, ref)
		}
	})
}

func TestScrub(t *testing.T) {
	var doc map[string]any
	in := `{"name":"k1","hash":"abc","apiKey":"","by":"alice","nested":{"ClientSecret":"s","ok":1,"list":[{"accessToken":"t","keep":"v"},"x"]},"sealedNote":null}`
	if err := json.Unmarshal([]byte(in), &doc); err != nil {
		t.Fatal(err)
	}
	out, err := json.Marshal(scrub(doc))
	if err != nil {
		t.Fatal(err)
	}
	// Empty and null secrets stay as they are: nothing to hide, and the
	// row shows the field was empty.
	want := `{"apiKey":"","by":"alice","hash":"[redacted]","name":"k1","nested":{"ClientSecret":"[redacted]","list":[{"accessToken":"[redacted]","keep":"v"},"x"],"ok":1},"sealedNote":null}`
	if string(out) != want {
		t.Errorf("scrub =\n%s\nwant\n%s", out, want)
	}
}

func BenchmarkSensitiveKey(b *testing.B) {
	keys := []string{"agentId", "revokedAt", "clientSecret", "arguments", "createdBy", "matchedRules", "sessionId", "amount"}
	b.Run("func", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sensitiveKey(keys[i%len(keys)])
		}
	})
	b.Run("pattern", func(b *testing.B) {
		for i := 0; b.Loop(); i++ {
			sensitivePattern.MatchString(keys[i%len(keys)])
		}
	})
}

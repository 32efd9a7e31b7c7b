package approval

import (
	"encoding/json"
	"testing"
)

// TestArgumentsDigestCanonical: the digest an SDK's redeem is compared
// with depends on the arguments' values only — not on key order,
// whitespace or how a number is written — and an absent object equals an
// empty one.
func TestArgumentsDigestCanonical(t *testing.T) {
	approved := ArgumentsDigest(map[string]any{"to": "acct-1", "amount": 50.0, "meta": map[string]any{"b": 1.0, "a": []any{"x"}}})
	tests := []struct {
		name, raw string
		same      bool
	}{
		{"same order", `{"to":"acct-1","amount":50,"meta":{"b":1,"a":["x"]}}`, true},
		{"other order and spacing", `{ "meta": {"a": ["x"], "b": 1}, "amount": 50.0, "to": "acct-1" }`, true},
		{"exponent", `{"to":"acct-1","amount":5e1,"meta":{"b":1,"a":["x"]}}`, true},
		{"other value", `{"to":"acct-2","amount":50,"meta":{"b":1,"a":["x"]}}`, false},
		{"a string number", `{"to":"acct-1","amount":"50","meta":{"b":1,"a":["x"]}}`, false},
		{"an extra key", `{"to":"acct-1","amount":50,"meta":{"b":1,"a":["x"]},"cc":"x"}`, false},
		{"nested change", `{"to":"acct-1","amount":50,"meta":{"b":1,"a":["y"]}}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var args map[string]any
			if err := json.Unmarshal([]byte(tt.raw), &args); err != nil {
				t.Fatal(err)
			}
			if got := ArgumentsDigest(args) == approved; got != tt.same {
				t.Fatalf("digest equal = %v, want %v", got, tt.same)
			}
		})
	}
	if ArgumentsDigest(nil) != ArgumentsDigest(map[string]any{}) {
		t.Fatal("no arguments and {} differ")
	}
}

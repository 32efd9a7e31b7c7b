package evidence_test

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// TestAgentManifestSignature: a manifest signature verifies with the
// ledger's verifier key over the same canonical bytes only, and the key's
// other signatures (checkpoints) cannot pass for one.
func TestAgentManifestSignature(t *testing.T) {
	keys, err := evidence.NewKeys(bytes.Repeat([]byte{1}, 32), "vigil.local/ledger")
	if err != nil {
		t.Fatal(err)
	}
	other, err := evidence.NewKeys(bytes.Repeat([]byte{2}, 32), "vigil.local/ledger")
	if err != nil {
		t.Fatal(err)
	}
	canonical := []byte(`{"description":"","framework":"","model":"m","name":"n","temperature":null,"tools":[],"version":""}`)
	sig, err := evidence.SignAgentManifest(keys.Signer, canonical)
	if err != nil {
		t.Fatal(err)
	}
	if err := evidence.VerifyAgentManifest(keys.VerifierKey, canonical, sig); err != nil {
		t.Fatalf("own signature: %v", err)
	}
	// A checkpoint signed by the same key, presented as a manifest
	// signature over its own text.
	cp, err := evidence.SignCheckpoint(keys.Signer, "vigil.local/ledger/acme", 1, evidence.EmptyRoot())
	if err != nil {
		t.Fatal(err)
	}
	n, err := note.Open(cp, note.VerifierList(mustVerifier(t, keys.VerifierKey)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(n.Sigs[0].Base64) // key hash (4 bytes), then the signature
	if err != nil || len(raw) != 68 {
		t.Fatalf("checkpoint signature %q: %v", n.Sigs[0].Base64, err)
	}
	cpSig := "ed25519:" + base64.StdEncoding.EncodeToString(raw[4:])
	if !mustVerifier(t, keys.VerifierKey).Verify([]byte(n.Text), raw[4:]) {
		t.Fatal("the checkpoint signature was not extracted")
	}
	for _, tc := range []struct {
		name, key, sig string
		data           []byte
	}{
		{"another manifest", keys.VerifierKey, sig, bytes.Replace(canonical, []byte(`"m"`), []byte(`"x"`), 1)},
		{"another key", other.VerifierKey, sig, canonical},
		{"not ed25519:", keys.VerifierKey, strings.TrimPrefix(sig, "ed25519:"), canonical},
		{"not base64", keys.VerifierKey, "ed25519:!!", canonical},
		{"a checkpoint signature", keys.VerifierKey, cpSig, []byte(n.Text)},
		{"a bad key", "vigil.local/ledger+00000000+AQ==", sig, canonical},
	} {
		if err := evidence.VerifyAgentManifest(tc.key, tc.data, tc.sig); err == nil {
			t.Errorf("%s: verified", tc.name)
		}
	}
}

func mustVerifier(t *testing.T, vkey string) note.Verifier {
	t.Helper()
	v, err := note.NewVerifier(vkey)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// BenchmarkSignAgentManifest is the ledger's work per registration
// (canonical manifest, its hash, the signature) and the verifier's.
func BenchmarkSignAgentManifest(b *testing.B) {
	keys, err := evidence.NewKeys(bytes.Repeat([]byte{1}, 32), "vigil.local/ledger")
	if err != nil {
		b.Fatal(err)
	}
	temp := 0.2
	m := agent.Manifest{Name: "claims-triage", Description: "Triages inbound insurance claims", Model: "gpt-4.1", Temperature: &temp,
		Tools: []string{"lookup_policy", "flag_for_review"}}
	var sig string
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			c, err := m.Canonical()
			if err != nil {
				b.Fatal(err)
			}
			if _, err := m.Hash(); err != nil {
				b.Fatal(err)
			}
			if sig, err = evidence.SignAgentManifest(keys.Signer, c); err != nil {
				b.Fatal(err)
			}
		}
	})
	c, _ := m.Canonical()
	sig, _ = evidence.SignAgentManifest(keys.Signer, c)
	b.Run("verify", func(b *testing.B) {
		for b.Loop() {
			c, _ := m.Canonical()
			if err := evidence.VerifyAgentManifest(keys.VerifierKey, c, sig); err != nil {
				b.Fatal(err)
			}
		}
	})
}

package policy

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
)

// Signer signs policy packs with the deployment's Ed25519 key, so a
// recorded decision can be traced to a pack the deployment vouched for.
type Signer struct {
	KeyID string
	priv  ed25519.PrivateKey
}

// NewSigner builds a signer from a 32-byte seed. The key id is the first
// 8 bytes of the SHA-256 of the public key, in hex.
func NewSigner(seed []byte) (*Signer, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("signing key seed must be %d bytes, got %d", ed25519.SeedSize, len(seed))
	}
	priv := ed25519.NewKeyFromSeed(seed)
	sum := sha256.Sum256(priv.Public().(ed25519.PublicKey))
	return &Signer{KeyID: hex.EncodeToString(sum[:8]), priv: priv}, nil
}

// NewSeed returns a fresh random seed.
func NewSeed() []byte {
	seed := make([]byte, ed25519.SeedSize)
	_, _ = rand.Read(seed)
	return seed
}

// PublicKey returns the verification key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.priv.Public().(ed25519.PublicKey) }

func packMessage(tenant, hash string) []byte {
	return []byte("vigil-policy-pack/v1\n" + tenant + "\n" + hash + "\n")
}

// SignPack signs a pack hash for a tenant; the result is base64.
func (s *Signer) SignPack(tenant, hash string) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, packMessage(tenant, hash)))
}

// VerifyPack checks a pack signature against a public key.
func VerifyPack(pub ed25519.PublicKey, tenant, hash, sig string) error {
	b, err := base64.StdEncoding.DecodeString(sig)
	if err != nil {
		return fmt.Errorf("signature is not base64: %w", err)
	}
	if !ed25519.Verify(pub, packMessage(tenant, hash), b) {
		return errors.New("pack signature does not verify")
	}
	return nil
}

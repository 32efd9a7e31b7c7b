// Package secretbox encrypts small secrets at rest (notification channel
// credentials and signing secrets) with AES-256-GCM under a key derived
// from a deployment secret, binding each ciphertext to what it belongs to
// (associated data) so a sealed value copied onto another record does not
// open.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// prefix versions the sealed format (and the key derivation).
const prefix = "v1:"

// ErrOpen is returned for any value that does not decrypt: wrong key,
// wrong associated data, or tampering.
var ErrOpen = errors.New("secretbox: cannot open sealed value")

// Box seals and opens values under one derived key.
type Box struct {
	aead cipher.AEAD
}

// New derives the sealing key from a deployment secret (at least 32
// bytes) with HKDF-SHA256; purpose separates keys derived for different
// uses from the same secret.
func New(secret []byte, purpose string) (*Box, error) {
	if len(secret) < 32 {
		return nil, errors.New("secretbox: deployment secret must be at least 32 bytes")
	}
	key, err := hkdf.Key(sha256.New, secret, nil, "vigil secretbox v1 "+purpose, 32)
	if err != nil {
		return nil, fmt.Errorf("secretbox: derive key: %w", err)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("secretbox: %w", err)
	}
	return &Box{aead: aead}, nil
}

// Seal encrypts plaintext bound to ad; the result is printable.
func (b *Box) Seal(plaintext []byte, ad string) string {
	nonce := make([]byte, b.aead.NonceSize(), b.aead.NonceSize()+len(plaintext)+b.aead.Overhead())
	_, _ = rand.Read(nonce)
	out := b.aead.Seal(nonce, nonce, plaintext, []byte(ad))
	return prefix + base64.RawStdEncoding.EncodeToString(out)
}

// Open decrypts a value Seal produced with the same ad.
func (b *Box) Open(sealed, ad string) ([]byte, error) {
	raw, ok := strings.CutPrefix(sealed, prefix)
	if !ok {
		return nil, ErrOpen
	}
	data, err := base64.RawStdEncoding.DecodeString(raw)
	if err != nil || len(data) < b.aead.NonceSize()+b.aead.Overhead() {
		return nil, ErrOpen
	}
	n := b.aead.NonceSize()
	pt, err := b.aead.Open(nil, data[:n], data[n:], []byte(ad))
	if err != nil {
		return nil, ErrOpen
	}
	return pt, nil
}

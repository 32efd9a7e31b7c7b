package evidence

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// seedInfo separates the ledger's key from every other key derived from
// the same deployment seed (the policy service signs packs with the seed
// itself): a checkpoint signature can never be replayed as a pack
// signature or the other way round.
const seedInfo = "vigil ledger checkpoint key v1"

// DeriveSeed derives the ledger's Ed25519 seed from the deployment's
// 32-byte signing seed (signing.key / --signing-key).
func DeriveSeed(deploymentSeed []byte) ([]byte, error) {
	if len(deploymentSeed) != 32 {
		return nil, errors.New("evidence: deployment seed must be 32 bytes")
	}
	return hkdf.Key(sha256.New, deploymentSeed, nil, seedInfo, 32)
}

// Keys are the ledger's checkpoint signer and its note verifier key, the
// text "<name>+<hash>+<base64 key>" that an auditor pins.
type Keys struct {
	Signer      note.Signer
	VerifierKey string
}

// NewKeys builds the note signer for name from a 32-byte Ed25519 seed.
func NewKeys(seed []byte, name string) (Keys, error) {
	if len(seed) != 32 {
		return Keys{}, errors.New("evidence: ledger seed must be 32 bytes")
	}
	// GenerateKey reads exactly the 32-byte seed from its random source.
	skey, vkey, err := note.GenerateKey(bytes.NewReader(seed), name)
	if err != nil {
		return Keys{}, fmt.Errorf("evidence: key for %q: %w", name, err)
	}
	s, err := note.NewSigner(skey)
	if err != nil {
		return Keys{}, fmt.Errorf("evidence: key for %q: %w", name, err)
	}
	return Keys{Signer: s, VerifierKey: vkey}, nil
}

// SignCheckpoint signs a C2SP tlog-checkpoint for a tree of size with root.
func SignCheckpoint(s note.Signer, origin string, size uint64, root []byte) ([]byte, error) {
	body := log.Checkpoint{Origin: origin, Size: size, Hash: root}.Marshal()
	return note.Sign(&note.Note{Text: string(body)}, s)
}

// OpenCheckpoint verifies a signed checkpoint against the verifier key and
// the expected origin, and parses it.
func OpenCheckpoint(signed []byte, origin, verifierKey string) (*log.Checkpoint, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return nil, fmt.Errorf("public key: %w", err)
	}
	cp, _, _, err := log.ParseCheckpoint(signed, origin, v)
	if err != nil {
		return nil, err
	}
	return cp, nil
}

// EmptyRoot is the root of a tree with no leaves.
func EmptyRoot() []byte { return sha256Empty[:] }

var sha256Empty = sha256.Sum256(nil)

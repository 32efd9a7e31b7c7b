package evidence

import (
	"encoding/base64"
	"errors"
	"fmt"
	"strings"

	"golang.org/x/mod/sumdb/note"
)

// AgentManifestContext prefixes the bytes an agent manifest signature
// covers. The ledger key also signs checkpoints and session manifests (both
// signed notes, whose text ends in a newline); this prefix, and canonical
// JSON never ending in one, keep a manifest signature from ever verifying
// as either, or the other way round.
const AgentManifestContext = "vigil.agent-manifest/v1\n"

// manifestSigPrefix names the algorithm in a manifest signature string.
const manifestSigPrefix = "ed25519:"

// SignAgentManifest signs the canonical bytes of an agent manifest
// (agent.Manifest.Canonical) with the ledger key: the result is
// "ed25519:" and the standard base64 of the 64-byte Ed25519 signature
// over AgentManifestContext ‖ canonical.
func SignAgentManifest(s note.Signer, canonical []byte) (string, error) {
	sig, err := s.Sign(agentManifestMessage(canonical))
	if err != nil {
		return "", fmt.Errorf("evidence: sign agent manifest: %w", err)
	}
	return manifestSigPrefix + base64.StdEncoding.EncodeToString(sig), nil
}

// VerifyAgentManifest checks signature (as SignAgentManifest writes it)
// over the canonical manifest with the ledger's note verifier key
// (`vigil ledger key`, GET /v1/ledger/key's publicKey).
func VerifyAgentManifest(verifierKey string, canonical []byte, signature string) error {
	v, err := note.NewVerifier(strings.TrimSpace(verifierKey))
	if err != nil {
		return fmt.Errorf("public key: %w", err)
	}
	b64, ok := strings.CutPrefix(signature, manifestSigPrefix)
	if !ok {
		return fmt.Errorf("manifestSignature must start with %q", manifestSigPrefix)
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return fmt.Errorf("manifestSignature is not base64: %w", err)
	}
	if !v.Verify(agentManifestMessage(canonical), sig) {
		return errors.New("manifestSignature does not verify: the manifest was changed or another key signed it")
	}
	return nil
}

func agentManifestMessage(canonical []byte) []byte {
	return append([]byte(AgentManifestContext), canonical...)
}

package stack

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
)

// Deployment secrets `vigil dev` keeps in its data directory, generated
// once (0600) when neither a flag nor the environment sets them. They are
// never written to NATS: whoever can read NATS must not thereby read the
// keys that protect what NATS holds.
const (
	// RedactionKeyFile keys redaction placeholders (ingest and policy).
	RedactionKeyFile = "redaction.key"
	// JudgeSealKeyFile seals tenants' LLM API keys (api and policy).
	JudgeSealKeyFile = "judge-seal.key"
	// NotifierKeyFile seals notification channel credentials.
	NotifierKeyFile = "notifier.key"
)

// KeyFile reads the base64 key kept in path or, when there is none yet,
// generates a 32-byte one into it (see config.KeyFile).
func KeyFile(path string) ([]byte, error) { return config.KeyFile(path, 32, false) }

// stackSecrets fills the redaction and judge sealing keys cfg leaves
// empty from the data directory's key files, sharing one key between the
// services that must agree on it.
func stackSecrets(cfg *Config) error {
	fill := func(file string, keys ...*[]byte) error {
		var have []byte
		for _, k := range keys {
			if len(*k) > 0 {
				have = *k
				break
			}
		}
		if have == nil {
			var err error
			if have, err = KeyFile(filepath.Join(cfg.DataDir, file)); err != nil {
				return err
			}
		}
		for _, k := range keys {
			if len(*k) == 0 {
				*k = have
			}
		}
		return nil
	}
	if err := fill(RedactionKeyFile, &cfg.Ingest.RedactionKey, &cfg.Policy.RedactionKey); err != nil {
		return err
	}
	return fill(JudgeSealKeyFile, &cfg.API.Judge.SealSecret, &cfg.Policy.Judge.SealSecret)
}

// refuseLegacySecrets stops a stack whose NATS still holds the keys an
// older Vigil generated there: generating new ones would orphan what the
// old ones sealed, and reading them would keep secrets next to the data.
func refuseLegacySecrets(ctx context.Context, js jetstream.JetStream, dataDir string) error {
	_, err := js.KeyValue(ctx, control.DeploymentKeysBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("check for %s: %w", control.DeploymentKeysBucket, err)
	}
	return fmt.Errorf("%w: NATS still holds deployment keys in %s (from an older Vigil); move them out once with `vigil secrets export --data-dir %s`", control.ErrNoSecret, control.DeploymentKeysBucket, dataDir)
}

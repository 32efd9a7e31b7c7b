package config

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/budget"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Settings that several binaries share are declared here, once per
// concern, so that a name means the same in every binary and in `vigil
// dev`, which runs them all on one flag set: asking twice for the same
// setting returns the one already declared.

// once declares a shared setting the first time it is asked for.
func once[T any](fs *FlagSet, key string, define func() T) T {
	if v, ok := fs.shared[key]; ok {
		return v.(T)
	}
	v := define()
	fs.shared[key] = v
	return v
}

// Streams are the settings of the streams and buckets a process creates.
type Streams struct {
	replicas *int
	dedupe   *time.Duration
}

// Streams declares --stream-replicas and --dedupe-window.
func (fs *FlagSet) Streams() *Streams {
	return once(fs, "streams", func() *Streams {
		return &Streams{
			replicas: fs.Int("stream-replicas", "VIGIL_STREAM_REPLICAS", streams.DefaultOptions.Replicas, "replicas of every stream and KV bucket this process creates (1 on one NATS node, 3 on a cluster)"),
			dedupe:   fs.Duration("dedupe-window", "VIGIL_DEDUPE_WINDOW", streams.DefaultOptions.DuplicateWindow, "how long JetStream dedupes message ids such as eventIds (older repeats are absorbed by the projections)"),
		}
	})
}

// Options are the stream options the flags describe.
func (s *Streams) Options() (streams.Options, error) {
	if *s.replicas < 1 || *s.replicas > 5 {
		return streams.Options{}, fmt.Errorf("--stream-replicas must be between 1 and 5, not %d", *s.replicas)
	}
	o := streams.DefaultOptions
	o.Replicas, o.DuplicateWindow = *s.replicas, *s.dedupe
	return o, nil
}

// MaxAgents declares --max-agents: how many agents a tenant may have.
// Ingest refuses events of new agents past it and the api registers none;
// both read the same setting.
func (fs *FlagSet) MaxAgents() *int {
	return once(fs, "max-agents", func() *int {
		return fs.Int("max-agents", "VIGIL_MAX_AGENTS", agent.DefaultMaxPerTenant, "agents a tenant may have; events and registrations of new agents past it are refused with 409 agent_limit (0: no cap; give ingest and api the same value)")
	})
}

// MetricsTenantLabels declares --metrics-tenant-labels: whether metrics
// may carry tenant ids (vigil_ledger_tree_size{tenant}). Off by default,
// since /metrics is often scraped by people who may not see every
// tenant's name.
func (fs *FlagSet) MetricsTenantLabels() *bool {
	return once(fs, "metrics-tenant-labels", func() *bool {
		return fs.BoolEnv("metrics-tenant-labels", "VIGIL_METRICS_TENANT_LABELS", false, "export per-tenant metrics (vigil_ledger_tree_size{tenant}); off keeps tenant ids out of /metrics")
	})
}

// Instance is this process's name among the replicas of its service.
type Instance struct{ id *string }

// InstanceID declares --instance-id.
func (fs *FlagSet) InstanceID() *Instance {
	return once(fs, "instance-id", func() *Instance {
		return &Instance{fs.String("instance-id", "VIGIL_INSTANCE_ID", "", "this instance's name among replicas (rate-limit gossip, risk partition leases); unique per process (default: <host name>-<pid>)")}
	})
}

// ID is the configured name, or <host name>-<pid>, which is unique per
// process on a host and per container in a deployment.
func (i *Instance) ID() string {
	if *i.id != "" {
		return *i.id
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "vigil"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}

// Secret is a base64 deployment secret given as a flag or in the
// environment (never stored in a stream or bucket by Vigil when given).
type Secret struct {
	flag, env string
	// size is the exact length of a seed, or the least length of a key.
	size  int
	exact bool
	v     *string
}

func (fs *FlagSet) secret(name, env string, size int, exact bool, usage string) *Secret {
	return once(fs, name, func() *Secret {
		return &Secret{flag: name, env: env, size: size, exact: exact, v: fs.String(name, env, "", usage)}
	})
}

// SigningKey declares --signing-key: the deployment's Ed25519 seed, which
// signs policy packs and from which the ledger derives its checkpoint key.
func (fs *FlagSet) SigningKey() *Secret {
	return fs.secret("signing-key", "VIGIL_SIGNING_KEY", 32, true, "base64 32-byte Ed25519 seed that signs policy packs; the ledger's checkpoint key derives from it (e.g. `head -c32 /dev/urandom | base64`)")
}

// RedactionKey declares --redaction-key, which keys redaction placeholders
// in ingest and the policy service.
func (fs *FlagSet) RedactionKey() *Secret {
	return fs.secret("redaction-key", "VIGIL_REDACTION_KEY", 32, false, "base64 secret (≥ 32 bytes) keying redaction placeholders; the same for ingest and the policy service; required (vigil dev keeps one in <data-dir>/redaction.key)")
}

// JudgeSealKey declares --judge-seal-key, which seals tenants' LLM API
// keys in the api and the policy service.
func (fs *FlagSet) JudgeSealKey() *Secret {
	return fs.secret("judge-seal-key", "VIGIL_JUDGE_SEAL_KEY", 32, false, "base64 secret (≥ 32 bytes) sealing tenants' LLM API keys; the same for the api and the policy service; required (vigil dev keeps one in <data-dir>/judge-seal.key)")
}

// NotifierKey declares --notifier-key, which encrypts notification channel
// credentials at rest.
func (fs *FlagSet) NotifierKey() *Secret {
	return fs.secret("notifier-key", "VIGIL_NOTIFIER_KEY", 32, false, "base64 secret (≥ 32 bytes) encrypting notification channel credentials at rest; required (vigil dev keeps one in <data-dir>/notifier.key)")
}

func (s *Secret) describe() string { return fmt.Sprintf("--%s / $%s", s.flag, s.env) }

// decode checks b64 against the secret's size rule.
func (s *Secret) decode(b64, from string) ([]byte, error) {
	return decodeKey(b64, from, s.size, s.exact)
}

// decodeKey decodes a base64 key of exactly size bytes (exact) or of at
// least size bytes; from names where it came from in the error.
func decodeKey(b64, from string, size int, exact bool) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(b64))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%s is not base64: %w", from, err)
	case exact && len(b) != size:
		return nil, fmt.Errorf("%s must be a base64 %d-byte seed, not %d bytes", from, size, len(b))
	case !exact && len(b) < size:
		return nil, fmt.Errorf("%s must be a base64 secret of at least %d bytes, not %d", from, size, len(b))
	}
	return b, nil
}

// Optional is the configured secret, or nil when none is set (`vigil dev`
// then uses one kept in its data directory).
func (s *Secret) Optional() ([]byte, error) {
	if *s.v == "" {
		return nil, nil
	}
	return s.decode(*s.v, s.describe())
}

// Required is the configured secret; unset is an error.
func (s *Secret) Required() ([]byte, error) {
	if *s.v == "" {
		return nil, fmt.Errorf("%s is required (a base64 secret, e.g. `head -c32 /dev/urandom | base64`)", s.describe())
	}
	return s.decode(*s.v, s.describe())
}

// OrFile is the configured secret or, when none is set, the one kept in
// file (see KeyFile).
func (s *Secret) OrFile(file string) ([]byte, error) {
	if *s.v != "" {
		return s.decode(*s.v, s.describe())
	}
	return KeyFile(file, s.size, s.exact)
}

// KeyFile reads the base64 key kept in file or, when there is none yet,
// generates size random bytes into it (see WriteKeyFile): `vigil dev`
// keeps its deployment keys in its data directory so they survive
// restarts. exact says the key must be exactly size bytes (a seed), else
// at least.
func KeyFile(file string, size int, exact bool) ([]byte, error) {
	if b, err := os.ReadFile(file); err == nil {
		return decodeKey(string(b), file, size, exact)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	k := make([]byte, size)
	if _, err := rand.Read(k); err != nil {
		return nil, fmt.Errorf("generate %s: %w", file, err)
	}
	if err := WriteKeyFile(file, k); err != nil {
		return nil, err
	}
	return k, nil
}

// WriteKeyFile stores k base64-encoded in path (0600), creating the
// directory (0700); an existing file is replaced atomically, so a crash
// never leaves half a key.
func WriteKeyFile(path string, k []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.WriteString(base64.StdEncoding.EncodeToString(k) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("store %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	// CreateTemp already made it 0600.
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("store %s: %w", path, err)
	}
	return nil
}

// CIDRs is a list of private networks an outbound client may reach.
type CIDRs struct {
	flag string
	v    *string
}

func (fs *FlagSet) cidrs(name, env, usage string) *CIDRs {
	return once(fs, name, func() *CIDRs { return &CIDRs{flag: name, v: fs.String(name, env, "", usage)} })
}

// JudgeAllow declares --judge-allow.
func (fs *FlagSet) JudgeAllow() *CIDRs {
	return fs.cidrs("judge-allow", "VIGIL_JUDGE_ALLOW", "CIDRs an LLM judge endpoint may be on although private, comma-separated")
}

// NotifierAllowPrivate declares --notifier-allow-private.
func (fs *FlagSet) NotifierAllowPrivate() *CIDRs {
	return fs.cidrs("notifier-allow-private", "VIGIL_NOTIFIER_ALLOW_PRIVATE", "CIDRs of private targets notification deliveries may reach (self-hosted receivers), comma-separated; cloud metadata stays refused")
}

// Prefixes parses the list.
func (c *CIDRs) Prefixes() ([]netip.Prefix, error) {
	p, err := ssrf.ParseAllowlist(*c.v)
	if err != nil {
		return nil, fmt.Errorf("--%s: %w", c.flag, err)
	}
	return p, nil
}

// BudgetPrices is the per-model price table of cost_usd budgets.
type BudgetPrices struct{ path *string }

// BudgetPrices declares --budget-prices, read by the policy service.
func (fs *FlagSet) BudgetPrices() *BudgetPrices {
	return once(fs, "budget-prices", func() *BudgetPrices {
		return &BudgetPrices{fs.String("budget-prices", "VIGIL_BUDGET_PRICES", "", `JSON file pricing GenAI tokens for cost_usd budgets, {"<model>": {"input": <USD per Mtok>, "output": <USD per Mtok>}, "default": {...}} (a model is priced by its name, the longest entry it starts with, then "default"); empty: the built-in table (docs/policies.md#budgets)`)}
	})
}

// Prices loads the table from the file given, or returns the built-in
// one when none was.
func (p *BudgetPrices) Prices() (budget.Prices, error) {
	if *p.path == "" {
		return budget.DefaultPrices(), nil
	}
	return budget.LoadPrices(*p.path)
}

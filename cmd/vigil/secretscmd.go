package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/judge"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier"
)

// The deployment secrets, by the environment variable that sets them.
const (
	envSigningKey   = "VIGIL_SIGNING_KEY"
	envRedactionKey = "VIGIL_REDACTION_KEY"
	envJudgeSealKey = "VIGIL_JUDGE_SEAL_KEY"
	envNotifierKey  = "VIGIL_NOTIFIER_KEY"
	// nextSuffix marks a rotation's new key until every record is
	// re-sealed under it, so an interrupted rotation resumes with it.
	nextSuffix = "_NEXT"
)

// secretFiles are the data directory files of `vigil dev`'s secrets.
var secretFiles = map[string]string{
	envSigningKey: "signing.key", envRedactionKey: redactionKeyFile,
	envJudgeSealKey: judgeSealKeyFile, envNotifierKey: notifierKeyFile,
}

// secretStore is where a deployment keeps its secrets: `vigil dev`'s data
// directory, or an env file (compose reads deploy/.env).
type secretStore interface {
	get(name string) (string, bool, error)
	set(name, b64 string) error
	del(name string) error
	String() string
}

type dirStore string

func (d dirStore) path(name string) string {
	base, next := strings.CutSuffix(name, nextSuffix)
	p := filepath.Join(string(d), secretFiles[base])
	if next {
		p += ".next"
	}
	return p
}

func (d dirStore) get(name string) (string, bool, error) {
	b, err := os.ReadFile(d.path(name))
	if errors.Is(err, fs.ErrNotExist) {
		return "", false, nil
	}
	return strings.TrimSpace(string(b)), err == nil, err
}

func (d dirStore) set(name, b64 string) error {
	k, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	return config.WriteKeyFile(d.path(name), k)
}

func (d dirStore) del(name string) error {
	if err := os.Remove(d.path(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

func (d dirStore) String() string { return "data directory " + string(d) }

// envFile is a docker env file: NAME=value lines, comments kept.
type envFile string

func (f envFile) lines() ([]string, error) {
	b, err := os.ReadFile(string(f))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out, sc.Err()
}

func (f envFile) get(name string) (string, bool, error) {
	lines, err := f.lines()
	for _, l := range lines {
		if v, ok := strings.CutPrefix(strings.TrimSpace(l), name+"="); ok {
			return strings.TrimSpace(v), true, nil
		}
	}
	return "", false, err
}

func (f envFile) write(name, b64 string, keep bool) error {
	lines, err := f.lines()
	if err != nil {
		return err
	}
	var out []string
	found := false
	for _, l := range lines {
		if strings.HasPrefix(strings.TrimSpace(l), name+"=") {
			found = true
			if keep {
				out = append(out, name+"="+b64)
			}
			continue
		}
		out = append(out, l)
	}
	if !found && keep {
		out = append(out, name+"="+b64)
	}
	if err := os.MkdirAll(filepath.Dir(string(f)), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(string(f), []byte(strings.Join(out, "\n")+"\n"), 0o600); err != nil {
		return err
	}
	return os.Chmod(string(f), 0o600)
}

func (f envFile) set(name, b64 string) error { return f.write(name, b64, true) }
func (f envFile) del(name string) error      { return f.write(name, "", false) }
func (f envFile) String() string             { return "env file " + string(f) }

func newKey() string {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return base64.StdEncoding.EncodeToString(k)
}

const secretsUsage = `usage: vigil secrets init|export|rotate
  init --env-file F       generate every missing deployment secret into F (compose: deploy/.env)
  export                  move keys an older Vigil kept in the NATS bucket vigil_deployment_keys
                          into the data directory (or --env-file) and delete the bucket
  rotate --secret S       re-seal channel credentials (S=notifier) or LLM API keys
                          (S=judge-seal) under a new key, then store the new key`

func runSecrets(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New(secretsUsage)
	}
	switch args[0] {
	case "init":
		return runSecretsInit(args[1:], out)
	case "export":
		return runSecretsExport(ctx, args[1:], out)
	case "rotate":
		return runSecretsRotate(ctx, args[1:], out)
	}
	return fmt.Errorf("unknown secrets command %q\n%s", args[0], secretsUsage)
}

// secretFlags are where the secrets are kept and how to reach NATS.
type secretFlags struct {
	nats    config.NATS
	dataDir *string
	envFile *string
}

func addSecretFlags(fs *config.FlagSet) secretFlags {
	return secretFlags{
		nats:    config.AddNATS(fs, ""),
		dataDir: fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "`vigil dev` data directory: where its secrets are kept (unless --env-file) and its admin NATS credential"),
		envFile: fs.String("env-file", "", "", "keep the secrets in this env file instead (compose reads deploy/.env)"),
	}
}

func (f secretFlags) store() secretStore {
	if *f.envFile != "" {
		return envFile(*f.envFile)
	}
	return dirStore(*f.dataDir)
}

func runSecretsInit(args []string, out io.Writer) error {
	fs := config.New("vigil secrets init", "Generate every missing deployment secret into an env file (0600). Existing values are kept.")
	file := fs.String("env-file", "", filepath.Join("deploy", ".env"), "env file to write")
	if err := fs.Parse(args); err != nil {
		return err
	}
	st := envFile(*file)
	for _, name := range []string{envSigningKey, envRedactionKey, envJudgeSealKey, envNotifierKey} {
		if _, ok, err := st.get(name); err != nil {
			return err
		} else if ok {
			continue
		}
		if err := st.set(name, newKey()); err != nil {
			return fmt.Errorf("write %s: %w", *file, err)
		}
		fmt.Fprintf(out, "generated %s\n", name)
	}
	fmt.Fprintf(out, "Secrets are in %s (0600). Keep a copy in your secret store: without them sealed credentials do not open.\n", *file)
	return nil
}

// legacyKeys maps the keys of control.DeploymentKeysBucket to the
// settings that replace them.
var legacyKeys = []struct{ kv, env string }{{"redaction", envRedactionKey}, {"sealing", envJudgeSealKey}}

func runSecretsExport(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil secrets export", "Move the redaction and sealing keys an older Vigil generated into the NATS KV bucket "+control.DeploymentKeysBucket+" into the data directory (or --env-file), then delete the bucket.")
	f := addSecretFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	js, closeFn, err := connectOrEmbed(f.nats, *f.dataDir)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	n, err := exportLegacySecrets(ctx, js, f.store())
	if err != nil {
		return err
	}
	if n < 0 {
		fmt.Fprintf(out, "No %s bucket: nothing to export.\n", control.DeploymentKeysBucket)
		return nil
	}
	fmt.Fprintf(out, "Moved %d keys into the %s and deleted %s.\n", n, f.store(), control.DeploymentKeysBucket)
	if *f.envFile != "" {
		fmt.Fprintf(out, "Give them to the services: %s to ingest and policy, %s to api and policy.\n", envRedactionKey, envJudgeSealKey)
	}
	return nil
}

// exportLegacySecrets moves the legacy bucket's keys into st and deletes
// the bucket; -1 means there was none. A key st already holds with a
// different value stops it before anything is deleted.
func exportLegacySecrets(ctx context.Context, js jetstream.JetStream, st secretStore) (int, error) {
	kv, err := js.KeyValue(ctx, control.DeploymentKeysBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		return -1, nil
	}
	if err != nil {
		return 0, fmt.Errorf("open %s: %w", control.DeploymentKeysBucket, err)
	}
	n := 0
	for _, k := range legacyKeys {
		e, err := kv.Get(ctx, k.kv)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return n, fmt.Errorf("read %s: %w", k.kv, err)
		}
		val := base64.StdEncoding.EncodeToString(e.Value())
		have, ok, err := st.get(k.env)
		if err != nil {
			return n, err
		}
		if ok && have != val {
			return n, fmt.Errorf("the %s already holds a different %s: the bucket is kept; reconcile by hand", st, k.env)
		}
		if !ok {
			if err := st.set(k.env, val); err != nil {
				return n, err
			}
		}
		n++
	}
	if err := js.DeleteKeyValue(ctx, control.DeploymentKeysBucket); err != nil {
		return n, fmt.Errorf("delete %s: %w", control.DeploymentKeysBucket, err)
	}
	return n, nil
}

// rotations are the secrets whose sealed records can be re-sealed.
var rotations = map[string]struct {
	env, filter string
	box         func([]byte) (*secretbox.Box, error)
	reseal      func(data []byte, old, next *secretbox.Box) ([]byte, bool, error)
	restart     string
}{
	"notifier":   {envNotifierKey, streams.AllChannelChanges, notifier.NewBox, notifier.ResealChannel, "the notifier"},
	"judge-seal": {envJudgeSealKey, streams.AllLLMConfigChanges, judge.NewBox, judge.ResealConfig, "the api and the policy service"},
}

func runSecretsRotate(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil secrets rotate", `Re-seal stored credentials under a new key: notification channel
credentials (--secret notifier) or tenants' LLM API keys (--secret judge-seal).
Stop the services that use the key first and start them with the new key
afterwards. An interrupted rotation resumes when run again.`)
	f := addSecretFlags(fs)
	which := fs.String("secret", "", "", "notifier or judge-seal")
	if err := fs.Parse(args); err != nil {
		return err
	}
	r, ok := rotations[*which]
	if !ok {
		return fmt.Errorf("--secret %q: want notifier or judge-seal", *which)
	}
	st := f.store()
	oldB64, ok, err := st.get(r.env)
	if err != nil {
		return err
	}
	if !ok {
		return fmt.Errorf("the %s holds no %s to rotate from", st, r.env)
	}
	nextB64, ok, err := st.get(r.env + nextSuffix)
	if err != nil {
		return err
	}
	if !ok {
		// Stored before any record changes, so that a crash leaves the
		// key the re-sealed records need.
		nextB64 = newKey()
		if err := st.set(r.env+nextSuffix, nextB64); err != nil {
			return err
		}
	}
	boxes := make([]*secretbox.Box, 2)
	for i, b64 := range []string{oldB64, nextB64} {
		k, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return fmt.Errorf("%s: %w", r.env, err)
		}
		if boxes[i], err = r.box(k); err != nil {
			return err
		}
	}
	js, closeFn, err := connectOrEmbed(f.nats, *f.dataDir)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	n, err := control.NewStore(js).Reseal(ctx, r.filter, func(data []byte) ([]byte, bool, error) {
		return r.reseal(data, boxes[0], boxes[1])
	})
	if err != nil {
		return fmt.Errorf("%w (after %d records; run it again to resume)", err, n)
	}
	if err := st.set(r.env, nextB64); err != nil {
		return err
	}
	if err := st.del(r.env + nextSuffix); err != nil {
		return err
	}
	fmt.Fprintf(out, "Re-sealed %d records under a new %s, now in the %s. Restart %s with it.\n", n, r.env, st, r.restart)
	return nil
}

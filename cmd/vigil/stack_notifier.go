package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/services/notifier"
)

// Environment settings of the notifier inside `vigil dev` (the standalone
// notifier binary has the same settings as flags).
const (
	// envNotifierAllowPrivate lists CIDRs deliveries may reach although
	// they are private (self-hosted receivers).
	envNotifierAllowPrivate = "VIGIL_NOTIFIER_ALLOW_PRIVATE"
)

// startNotifier wires the notifier service (services/notifier) into the
// stack: its stream, migrations, channel registry, worker and routes.
func (st *Stack) startNotifier(ctx context.Context, cfg StackConfig) error {
	nc := notifier.DefaultConfig()
	nc.Streams = cfg.API.Streams
	var err error
	if nc.SecretKey, err = notifierKey(os.Getenv(envNotifierKey), cfg.DataDir); err != nil {
		return err
	}
	if nc.AllowPrivate, err = ssrf.ParseAllowlist(os.Getenv(envNotifierAllowPrivate)); err != nil {
		return fmt.Errorf("$%s: %w", envNotifierAllowPrivate, err)
	}
	st.Notify, err = notifier.New(nc, notifier.Deps{JS: st.JS, CH: st.CH, Auth: st.Catalog, Log: st.log, Registerer: st.Reg})
	if err != nil {
		return err
	}
	if err := st.Notify.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := st.Notify.Migrate(ctx); err != nil {
		return err
	}
	if err := st.Notify.StartRegistry(ctx); err != nil {
		return err
	}
	st.workers = append(st.workers, st.Notify.Run)
	st.routes = append(st.routes, st.Notify.Routes)
	return nil
}

// notifierKey decodes the configured deployment secret or, in dev, keeps
// one in the data directory (like the pack-signing key) so channel
// credentials stay readable across restarts.
func notifierKey(configured, dataDir string) ([]byte, error) {
	if configured != "" {
		k, err := base64.StdEncoding.DecodeString(configured)
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("$%s must be at least 32 bytes, base64-encoded", envNotifierKey)
		}
		return k, nil
	}
	path := filepath.Join(dataDir, "notifier.key")
	if b, err := os.ReadFile(path); err == nil {
		k, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 32 {
			return nil, fmt.Errorf("%s is not a base64 secret of at least 32 bytes", path)
		}
		return k, nil
	}
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("store notifier key: %w", err)
	}
	return k, nil
}

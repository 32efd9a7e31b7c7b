// Command notifier runs Vigil's notification service on its own: channel
// API, signal fan-out, signed delivery with retries, dead letters.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier"
)

func main() { daemon.Main("notifier", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("notifier", "Vigil notifier: notification channels, signed deliveries with retries, dead letters.")
	common := config.AddCommon(fs)
	key := fs.String("secret-key", "VIGIL_NOTIFIER_KEY", "", "base64 deployment secret (≥ 32 bytes) that encrypts channel credentials at rest (required; e.g. `head -c32 /dev/urandom | base64`)")
	allow := fs.String("allow-private", "VIGIL_NOTIFIER_ALLOW_PRIVATE", "", "CIDRs of private targets deliveries may reach (self-hosted receivers), comma-separated; cloud metadata stays refused")
	timeout := fs.Duration("attempt-timeout", "VIGIL_NOTIFIER_ATTEMPT_TIMEOUT", notifier.DefaultConfig().AttemptTimeout, "time limit of one delivery attempt")
	attempts := fs.Int("max-attempts", "VIGIL_NOTIFIER_MAX_ATTEMPTS", notifier.DefaultConfig().Schedule.MaxAttempts, "attempts before a delivery is dead-lettered")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var err error
	cfg := notifier.DefaultConfig()
	cfg.AttemptTimeout, cfg.Schedule.MaxAttempts = *timeout, *attempts
	if cfg.SecretKey, err = base64.StdEncoding.DecodeString(*key); err != nil || len(cfg.SecretKey) < 32 {
		return errors.New("--secret-key / $VIGIL_NOTIFIER_KEY must be a base64 secret of at least 32 bytes")
	}
	if cfg.AllowPrivate, err = ssrf.ParseAllowlist(*allow); err != nil {
		return fmt.Errorf("--allow-private: %w", err)
	}
	p, err := daemon.Start(ctx, "notifier", common, daemon.ProcessOptions{ClickHouseWait: 2 * time.Minute})
	if err != nil {
		return err
	}
	defer p.Close()
	log, js, ch, reg := p.Log, p.JS, p.CH, p.Reg
	catalog := control.NewCatalog(js, log)
	svc, err := notifier.New(cfg, notifier.Deps{JS: js, CH: ch, Auth: catalog, Log: log, Registerer: reg})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	if err := natsx.WaitForStream(ctx, js, streams.Control, log); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	if err := catalog.Sync(ctx); err != nil {
		return err
	}
	if err := svc.StartRegistry(ctx); err != nil {
		return err
	}
	return p.Serve(ctx, svc.Routes, svc.Run)
}

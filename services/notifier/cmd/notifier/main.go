// Command notifier runs Vigil's notification service on its own: channel
// API, signal fan-out, signed delivery with retries, dead letters.
package main

import (
	"context"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/notifier"
)

func main() { daemon.Main("notifier", run) }

func run(ctx context.Context, args []string) error {
	fs := config.New("notifier", "Vigil notifier: notification channels, signed deliveries with retries, dead letters.")
	common, so, key, allow, oidcFlags := config.AddCommon(fs), fs.Streams(), fs.NotifierKey(), fs.NotifierAllowPrivate(), fs.OIDC()
	cfg := notifier.DefaultConfig()
	timeout := fs.Duration("attempt-timeout", "VIGIL_NOTIFIER_ATTEMPT_TIMEOUT", cfg.AttemptTimeout, "time limit of one delivery attempt")
	attempts := fs.Int("max-attempts", "VIGIL_NOTIFIER_MAX_ATTEMPTS", cfg.Schedule.MaxAttempts, "attempts before a delivery is dead-lettered")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg.AttemptTimeout, cfg.Schedule.MaxAttempts = *timeout, *attempts
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	if cfg.SecretKey, err = key.Required(); err != nil {
		return err
	}
	if cfg.AllowPrivate, err = allow.Prefixes(); err != nil {
		return err
	}
	if cfg.Streams, err = so.Options(); err != nil {
		return err
	}
	p, err := daemon.Start(ctx, "notifier", common, daemon.ProcessOptions{ClickHouse: true})
	if err != nil {
		return err
	}
	defer p.Close()
	catalog := control.NewCatalog(p.JS, p.Log, control.WithOIDC(verifier))
	svc, err := notifier.New(cfg, notifier.Deps{JS: p.JS, CH: p.CH, Auth: catalog, Log: p.Log, Registerer: p.Reg})
	if err != nil {
		return err
	}
	return p.Run(ctx, catalog.Component(), svc.Component())
}

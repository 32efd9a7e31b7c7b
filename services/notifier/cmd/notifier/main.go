// Command notifier runs Vigil's notification service on its own: channel
// API, signal fan-out, signed delivery with retries, dead letters.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "notifier:", err)
		os.Exit(1)
	}
}

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
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	cfg := notifier.DefaultConfig()
	cfg.AttemptTimeout, cfg.Schedule.MaxAttempts = *timeout, *attempts
	if cfg.SecretKey, err = base64.StdEncoding.DecodeString(*key); err != nil || len(cfg.SecretKey) < 32 {
		return errors.New("--secret-key / $VIGIL_NOTIFIER_KEY must be a base64 secret of at least 32 bytes")
	}
	if cfg.AllowPrivate, err = ssrf.ParseAllowlist(*allow); err != nil {
		return fmt.Errorf("--allow-private: %w", err)
	}
	nc, js, err := natsx.Connect(*common.NATSURL, "vigil-notifier", log)
	if err != nil {
		return err
	}
	defer nc.Drain()
	ch, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, 2*time.Minute, log)
	if err != nil {
		return err
	}
	defer ch.Close()
	reg := daemon.Registry()
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
	e, err := httpkit.NewServer(log, reg)
	if err != nil {
		return err
	}
	httpkit.HealthRoutes(e, reg, map[string]httpkit.Check{
		"nats":       natsx.Ready(nc),
		"clickhouse": func(ctx context.Context) error { return ch.Ping(ctx) },
	})
	svc.Routes(e)
	return daemon.Run(ctx, log, e, *common.HTTPAddr, svc.Run)
}

// Command api runs Vigil's HTTP API on its own: control plane, reads, and
// the CONTROL projections.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/vigilhq/vigil/pkg/approval"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ratelimit"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/services/api"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "api:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	fs := config.New("api", "Vigil api: the HTTP API, CONTROL stream owner and its projections.")
	common := config.AddCommon(fs)
	oidcFlags := config.AddOIDC(fs)
	instance := fs.String("instance-id", "VIGIL_INSTANCE_ID", "", "this instance's name in shared rate limiting (default: the host name)")
	sealKey := fs.String("judge-seal-key", "VIGIL_JUDGE_SEAL_KEY", "", "base64 secret (≥ 32 bytes) sealing tenants' LLM API keys; must equal the policy service's (default: generated once in NATS)")
	judgeAllow := fs.String("judge-allow", "VIGIL_JUDGE_ALLOW", "", "CIDRs an LLM judge endpoint may be on although private (comma-separated)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	nc, js, err := natsx.Connect(*common.NATSURL, "vigil-api", log)
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
	verifier, err := oidcFlags.Verifier()
	if err != nil {
		return err
	}
	cfg := api.DefaultConfig()
	if cfg.Judge.SealSecret, err = control.ParseSecret("--judge-seal-key / $VIGIL_JUDGE_SEAL_KEY", *sealKey); err != nil {
		return err
	}
	if cfg.Judge.Allow, err = ssrf.ParseAllowlist(*judgeAllow); err != nil {
		return err
	}
	catalog, store := control.NewCatalog(js, log, control.WithOIDC(verifier)), control.NewStore(js)
	board := approval.NewBoard(js, log)
	if *instance == "" {
		*instance, _ = os.Hostname()
	}
	limiter := ratelimit.New(nc, "api-"+*instance, func(t string) ratelimit.Limits { return catalog.Limits(t, cfg.RateLimits) }, log)
	svc, err := api.New(cfg, api.Deps{NC: nc, JS: js, CH: ch, Catalog: catalog, Board: board, Store: store, Log: log, Registerer: reg, Limiter: limiter})
	if err != nil {
		return err
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := svc.Migrate(ctx); err != nil {
		return err
	}
	if err := catalog.Run(ctx); err != nil {
		return err
	}
	if err := board.Run(ctx); err != nil {
		return err
	}
	if err := catalog.Sync(ctx); err != nil {
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
	return daemon.Run(ctx, log, e, *common.HTTPAddr, limiter.Run, svc.Run)
}

package main

import (
	"context"
	"fmt"
	"time"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	apimigrations "github.com/vigilhq/vigil/services/api/migrations"
	ingestmigrations "github.com/vigilhq/vigil/services/ingest/migrations"
)

func runMigrate(ctx context.Context, args []string) error {
	fs := config.New("vigil migrate", "Apply every service's ClickHouse migrations (idempotent).")
	common := config.AddCommon(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	conn, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, 30*time.Second, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	applied, err := chx.Migrate(ctx, conn, ingestmigrations.FS, "ingest")
	if err != nil {
		return err
	}
	more, err := chx.Migrate(ctx, conn, apimigrations.FS, "api")
	if err != nil {
		return err
	}
	fmt.Printf("applied %d migrations\n", len(applied)+len(more))
	return nil
}

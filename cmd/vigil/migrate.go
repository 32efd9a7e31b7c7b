package main

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	apimigrations "github.com/vigilhq/vigil/services/api/migrations"
	ingestmigrations "github.com/vigilhq/vigil/services/ingest/migrations"
	ledgermigrations "github.com/vigilhq/vigil/services/ledger/migrations"
	notifiermigrations "github.com/vigilhq/vigil/services/notifier/migrations"
	policymigrations "github.com/vigilhq/vigil/services/policy/migrations"
	riskmigrations "github.com/vigilhq/vigil/services/risk/migrations"
)

// schemas are every service's migrations, in dependency order: risk
// writes into the policy service's decisions table.
var schemas = []struct {
	service string
	fs      fs.FS
}{
	{"ingest", ingestmigrations.FS},
	{"api", apimigrations.FS},
	{"policy", policymigrations.FS},
	{"risk", riskmigrations.FS},
	{"ledger", ledgermigrations.FS},
	{"notifier", notifiermigrations.FS},
}

func runMigrate(ctx context.Context, args []string) error {
	fset := config.New("vigil migrate", "Apply every service's ClickHouse migrations (idempotent).")
	common := config.AddCommon(fset)
	if err := fset.Parse(args); err != nil {
		return err
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	conn, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, *common.ClickHouseWait, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	total := 0
	for _, s := range schemas {
		applied, err := chx.Migrate(ctx, conn, s.fs, s.service)
		if err != nil {
			return fmt.Errorf("%s: %w", s.service, err)
		}
		total += len(applied)
	}
	fmt.Printf("applied %d migrations\n", total)
	return nil
}

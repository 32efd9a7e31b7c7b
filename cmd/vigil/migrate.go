package main

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"slices"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/readmodel"
	apimigrations "github.com/vigilhq/vigil/services/api/migrations"
	ingestmigrations "github.com/vigilhq/vigil/services/ingest/migrations"
	ledgermigrations "github.com/vigilhq/vigil/services/ledger/migrations"
	notifiermigrations "github.com/vigilhq/vigil/services/notifier/migrations"
	policymigrations "github.com/vigilhq/vigil/services/policy/migrations"
	riskmigrations "github.com/vigilhq/vigil/services/risk/migrations"
)

// schemas are every table owner's migrations (see pkg/readmodel).
var schemas = map[string]fs.FS{
	readmodel.Ingest:   ingestmigrations.FS,
	readmodel.API:      apimigrations.FS,
	readmodel.Policy:   policymigrations.FS,
	readmodel.Risk:     riskmigrations.FS,
	readmodel.Ledger:   ledgermigrations.FS,
	readmodel.Notifier: notifiermigrations.FS,
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
	conn, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, *common.ClickHouseCluster, *common.ClickHouseWait, log)
	if err != nil {
		return err
	}
	defer conn.Close()
	total := 0
	// Owners first: the declaration says whose migrations read whose
	// tables (risk's views read the policy service's decisions).
	for _, service := range readmodel.MigrationOrder(slices.Sorted(maps.Keys(schemas))) {
		applied, err := chx.Migrate(ctx, conn, schemas[service], service)
		if err != nil {
			return fmt.Errorf("%s: %w", service, err)
		}
		total += len(applied)
	}
	fmt.Printf("applied %d migrations\n", total)
	return nil
}

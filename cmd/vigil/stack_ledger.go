package main

import (
	"context"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// startLedger wires the ledger service (services/ledger) into the stack:
// its stream, migrations, sealing worker and HTTP routes. Its checkpoint
// key derives from the deployment signing seed (signing.key), so it is
// stable across restarts of `vigil dev` and `vigil ledger key` can print
// it offline.
func (st *Stack) startLedger(ctx context.Context, cfg StackConfig) error {
	lc := ledger.DefaultConfig()
	lc.Streams = cfg.Policy.Streams
	var err error
	if lc.Seed, err = evidence.DeriveSeed(cfg.Policy.SigningSeed); err != nil {
		return err
	}
	st.Ledger, err = ledger.New(lc, ledger.Deps{JS: st.JS, CH: st.CH, Log: st.log, Registerer: st.Reg})
	if err != nil {
		return err
	}
	if err := st.Ledger.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := st.Ledger.Migrate(ctx); err != nil {
		return err
	}
	st.workers = append(st.workers, st.Ledger.Run)
	st.routes = append(st.routes, func(e *echo.Echo) { st.Ledger.Routes(e, st.Catalog) })
	return nil
}

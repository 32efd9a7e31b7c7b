package main

import (
	"context"

	"github.com/vigilhq/vigil/services/risk"
)

// startRisk wires the risk service (services/risk) into the stack: its
// streams, migrations (after the policy's: its views read the decisions
// table), its worker and its HTTP routes.
func (st *Stack) startRisk(ctx context.Context, cfg StackConfig) error {
	var err error
	st.Risk, err = risk.New(risk.DefaultConfig(), risk.Deps{NC: st.NC, JS: st.JS, CH: st.CH, Catalog: st.Catalog, Log: st.log, Registerer: st.Reg})
	if err != nil {
		return err
	}
	if err := st.Risk.EnsureStreams(ctx); err != nil {
		return err
	}
	if err := st.Risk.Migrate(ctx); err != nil {
		return err
	}
	st.workers = append(st.workers, st.Risk.Run)
	st.routes = append(st.routes, st.Risk.Routes)
	return nil
}

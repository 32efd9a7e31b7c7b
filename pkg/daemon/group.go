package daemon

import (
	"context"
	"errors"
	"sync"
)

// Worker is a background loop that returns after ctx ends and its
// in-flight work is finished. An error it returns while ctx is still live
// is a failure: it stops the group it runs in.
type Worker func(ctx context.Context) error

// Group runs workers on one context, errgroup-style: the first worker that
// fails cancels the others, and Wait reports every failure (not only the
// first), so an error that happens while stopping is not lost. A worker
// that returns context.Canceled after the group was cancelled has stopped
// cleanly; one that returns nil early has simply finished.
type Group struct {
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	errs   []error
	failed chan struct{}
	once   sync.Once
}

// NewGroup returns a group whose workers run on a child of ctx.
func NewGroup(ctx context.Context) *Group {
	gctx, cancel := context.WithCancel(ctx)
	return &Group{ctx: gctx, cancel: cancel, failed: make(chan struct{})}
}

// Go starts w in the group.
func (g *Group) Go(w Worker) {
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := w(g.ctx); err != nil && !errors.Is(err, context.Canceled) {
			g.mu.Lock()
			g.errs = append(g.errs, err)
			g.mu.Unlock()
			g.once.Do(func() { close(g.failed) })
			g.cancel()
		}
	}()
}

// Failed is closed when a worker has failed (and the group is cancelled).
func (g *Group) Failed() <-chan struct{} { return g.failed }

// Cause is the first failure, or nil.
func (g *Group) Cause() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.errs) == 0 {
		return nil
	}
	return g.errs[0]
}

// Stop cancels the group's context: every worker is asked to stop.
func (g *Group) Stop() { g.cancel() }

// Wait waits for every worker and returns their failures, joined.
func (g *Group) Wait() error {
	g.wg.Wait()
	g.cancel()
	g.mu.Lock()
	defer g.mu.Unlock()
	return errors.Join(g.errs...)
}

// RunAll runs workers as one group until ctx ends or one of them fails,
// and returns once all have stopped. Services use it for the loops inside
// their Run, so that a loop that cannot start (a consumer that cannot be
// created, say) ends Run at once instead of at shutdown.
func RunAll(ctx context.Context, workers ...Worker) error {
	g := NewGroup(ctx)
	for _, w := range workers {
		g.Go(w)
	}
	return g.Wait()
}

// Package natsx holds the small JetStream helpers every service shares:
// connecting, declaring the streams a service owns, and classifying
// publish errors.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Connect dials NATS with reconnects that never give up, logging
// disconnects, and returns the connection with a JetStream context. opts
// come after the defaults; they carry credentials and TLS (see
// natsauth.ClientOptions).
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(url, append([]nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", slog.String("error", err.Error()))
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info("nats reconnected", slog.String("url", c.ConnectedUrl()))
		}),
		// Without this, nats.go prints asynchronous errors (a write to a
		// dead server, a slow consumer) as plain text on stderr.
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			attrs := []any{slog.String("error", err.Error())}
			if sub != nil {
				attrs = append(attrs, slog.String("subject", sub.Subject))
			}
			log.Warn("nats async error", attrs...)
		}),
	}, opts...)...)
	if err != nil {
		return nil, nil, fmt.Errorf("connect nats %s: %w", url, err)
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096))
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("jetstream context: %w", err)
	}
	return nc, js, nil
}

// EnsureStreams creates or updates each stream to match its definition.
// Only the producing service calls this for its own streams.
func EnsureStreams(ctx context.Context, js jetstream.JetStream, cfgs ...jetstream.StreamConfig) error {
	for _, cfg := range cfgs {
		if _, err := js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("ensure stream %s: %w", cfg.Name, err)
		}
	}
	return nil
}

// IsWrongLastSequence reports whether a publish failed its optimistic
// concurrency check (Nats-Expected-Last-Subject-Sequence).
func IsWrongLastSequence(err error) bool {
	var apiErr *jetstream.APIError
	if !errors.As(err, &apiErr) {
		return false
	}
	return apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// LastSequence returns the stream's last sequence number, the watermark a
// reader waits for to see every write acknowledged before it asked.
func LastSequence(ctx context.Context, s jetstream.Stream) (uint64, error) {
	info, err := s.Info(ctx)
	if err != nil {
		return 0, fmt.Errorf("stream info: %w", err)
	}
	return info.State.LastSeq, nil
}

// WaitForStream blocks until stream exists. In a split deployment a
// consumer may start before the stream's owner has created it.
func WaitForStream(ctx context.Context, js jetstream.JetStream, stream string, log *slog.Logger) error {
	err := retry(ctx, func(err error) bool { return errors.Is(err, jetstream.ErrStreamNotFound) || IsTransient(err) },
		func(err error, _ int, _ time.Duration) {
			log.Info("waiting for stream", slog.String("stream", stream), slog.String("error", err.Error()))
		},
		func(ctx context.Context) error { _, err := js.Stream(ctx, stream); return err })
	if err != nil {
		return fmt.Errorf("stream %s: %w", stream, err)
	}
	return nil
}

// attemptTimeout bounds one attempt of a retried JetStream call (for
// Provision, a whole component's few streams and buckets), so that a
// request nobody answers — a cluster without a meta leader — is asked
// again rather than waited on until the caller's deadline.
var attemptTimeout = 10 * time.Second

// Provision runs op, which creates or updates the streams and KV buckets
// of what (a component), until it succeeds. Errors that pass by themselves
// (IsTransient: a fresh or degraded cluster electing its meta leader or
// placing replicas while peers catch up) are logged and retried with
// backoff until ctx ends; any other error is returned at once, as is the
// last error (joined with ctx's) when ctx ends. op must be idempotent
// (CreateOrUpdate*): an attempt cut short may have done part of its work.
// daemon.Supervisor runs every component's provisioning through it.
func Provision(ctx context.Context, log *slog.Logger, what string, op func(context.Context) error) error {
	return retry(ctx, IsTransient, func(err error, attempt int, delay time.Duration) {
		log.Warn("jetstream not ready: provisioning again", slog.String("component", what),
			slog.Int("attempt", attempt), slog.Duration("retry_in", delay), slog.String("error", err.Error()))
	}, op)
}

// retry calls op, each attempt bounded by attemptTimeout, until it
// succeeds, fails in a way retryable does not accept, or ctx ends. Before
// each new attempt it reports the failure and waits: 100 ms, doubling up
// to 5 s.
func retry(ctx context.Context, retryable func(error) bool, report func(err error, attempt int, delay time.Duration), op func(context.Context) error) error {
	delay := 100 * time.Millisecond
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, attemptTimeout)
		err := op(actx)
		cancel()
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(ctx.Err(), err)
		}
		if !retryable(err) {
			return err
		}
		report(err, attempt, delay)
		select {
		case <-time.After(delay):
			delay = min(2*delay, 5*time.Second)
		case <-ctx.Done():
			return errors.Join(ctx.Err(), err)
		}
	}
}

// transientAPIErrors are the JetStream API errors a cluster answers while
// it forms or misses a node, and stops answering once its peers are back:
// no meta leader yet, a request that reached a server no longer leader,
// no peer (or not enough resources on the peers) to place a stream's
// replicas on while peers are offline or catching up. The last two are
// also what a cluster too small for the replica count answers; Provision
// then keeps logging why it waits until its context ends.
var transientAPIErrors = []jetstream.ErrorCode{
	10005, // JSClusterNoPeersErrF: no suitable peers for placement
	10008, // JSClusterNotAvailErr: JetStream system temporarily unavailable
	10009, // JSClusterNotLeaderErr: JetStream cluster can not handle request
	10023, // JSInsufficientResourcesErr: insufficient resources
}

// IsTransient reports whether a JetStream API call failed in a way that
// passes by itself: no answer in time or no responder, as while a cluster
// elects a new leader after losing a node, or one of transientAPIErrors.
// Callers that wait for something retry these instead of failing the
// process.
func IsTransient(err error) bool {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && slices.Contains(transientAPIErrors, apiErr.ErrorCode) {
		return true
	}
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) ||
		errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoHeartbeat)
}

// Ready is a readiness probe for a NATS connection.
func Ready(nc *nats.Conn) func(context.Context) error {
	return func(context.Context) error {
		if !nc.IsConnected() {
			return fmt.Errorf("nats: %s", nc.Status())
		}
		return nil
	}
}

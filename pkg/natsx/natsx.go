// Package natsx holds the small JetStream helpers every service shares:
// connecting, declaring the streams a service owns, and classifying
// publish errors.
package natsx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	delay := 100 * time.Millisecond
	for {
		_, err := js.Stream(ctx, stream)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil || !errors.Is(err, jetstream.ErrStreamNotFound) && !IsTransient(err) {
			return fmt.Errorf("stream %s: %w", stream, err)
		}
		log.Info("waiting for stream", slog.String("stream", stream), slog.String("error", err.Error()))
		select {
		case <-time.After(delay):
			delay = min(2*delay, 5*time.Second)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// IsTransient reports whether a JetStream API call failed in a way that
// passes by itself: no answer in time or no responder, as while a
// cluster elects a new leader after losing a node. Callers that wait for
// something retry these instead of failing the process.
func IsTransient(err error) bool {
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

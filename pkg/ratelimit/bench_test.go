package ratelimit

import (
	"io"
	"log/slog"
	"strconv"
	"testing"
)

// BenchmarkAllow is the limiter's cost on every ingest and decision
// request: two bucket refills and spends under one mutex.
func BenchmarkAllow(b *testing.B) {
	l := New(nil, "bench", fixed(DefaultLimits), slog.New(slog.NewTextHandler(io.Discard, nil)))
	keys := make([]string, 64)
	for i := range keys {
		keys[i] = "key-" + strconv.Itoa(i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		l.Allow(Ingest, "acme", keys[i%len(keys)], 1)
		i++
	}
}

func BenchmarkAllowParallel(b *testing.B) {
	l := New(nil, "bench", fixed(DefaultLimits), slog.New(slog.NewTextHandler(io.Discard, nil)))
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Allow(Decisions, "acme", "key", 1)
		}
	})
}

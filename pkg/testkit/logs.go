package testkit

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
)

// logsCap bounds what Logs keeps: a long test keeps its tail.
const logsCap = 4 << 20

// Logs collects log output written from many goroutines (services under
// test log from their workers), keeping the last few MiB.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write implements io.Writer.
func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.buf.Len() > logsCap {
		l.buf.Reset()
		l.buf.WriteString("…(earlier logs dropped)\n")
	}
	return l.buf.Write(p)
}

// String is everything kept so far.
func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Logger returns a text logger at level writing into new Logs, which are
// printed only if the test fails, so a green run stays quiet and a red
// one explains itself.
func Logger(t testing.TB, level slog.Level) (*slog.Logger, *Logs) {
	l := &Logs{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs:\n%s", l.String())
		}
	})
	return slog.New(slog.NewTextHandler(l, &slog.HandlerOptions{Level: level})), l
}

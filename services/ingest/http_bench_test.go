package ingest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/natstest"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/ingest"
)

// benchServer is the real ingest handler stack (echo with Vigil's
// middleware, API-key auth against the CONTROL catalog) over real HTTP on
// loopback, publishing to an embedded JetStream with a file store.
type benchServer struct {
	url    string
	token  string
	client *http.Client
}

func startBenchServer(b testing.TB) *benchServer {
	b.Helper()
	return startServer(b, natstest.Start(b), nil)
}

// startServer is startBenchServer on env, with the publishing contexts
// pubs (Deps.Publish; nil: the service's own).
func startServer(b testing.TB, env *natstest.Env, pubs []jetstream.JetStream) *benchServer {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	b.Cleanup(cancel)
	log := slog.New(slog.DiscardHandler)
	if err := natsx.EnsureStreams(ctx, env.JS, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		b.Fatal(err)
	}
	cat := control.NewCatalog(env.JS, log)
	if err := cat.Run(ctx); err != nil {
		b.Fatal(err)
	}
	// A key bound to the events' agent, as agent keys are: every event
	// pays the binding check.
	_, token, err := control.NewStore(env.JS).IssueKey(ctx, control.KeySpec{Tenant: "bench", Role: auth.RoleAgent, Name: "bench", By: "bench", Agents: []string{"agent-03.support-bot"}})
	if err != nil {
		b.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	ic := ingest.DefaultConfig()
	ic.RedactionKey = make([]byte, 32)
	svc, err := ingest.New(ic, ingest.Deps{JS: env.JS, Publish: pubs, Auth: cat, Log: log, Registerer: reg, Agents: cat})
	if err != nil {
		b.Fatal(err)
	}
	if err := svc.EnsureStreams(ctx); err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(ctx); err != nil {
		b.Fatal(err)
	}
	e, err := httpkit.NewServer(log, reg)
	if err != nil {
		b.Fatal(err)
	}
	svc.Routes(e)
	srv := httptest.NewServer(e)
	b.Cleanup(srv.Close)
	tr := &http.Transport{MaxIdleConnsPerHost: 256, DisableCompression: true}
	b.Cleanup(tr.CloseIdleConnections)
	s := &benchServer{url: srv.URL, token: token, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
	// The first request also waits for the catalog to learn the key.
	if err := s.post("/v1/events", benchEvent(newBenchIDs()), wantAccepted); err != nil {
		b.Fatal(err)
	}
	return s
}

// post sends body and fails unless the response is a 202 containing want.
func (s *benchServer) post(path string, body []byte, want string) error {
	req, err := http.NewRequest(http.MethodPost, s.url+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+s.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	out, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusAccepted || !bytes.Contains(out, []byte(want)) {
		return fmt.Errorf("%s: HTTP %d: %s", path, resp.StatusCode, out)
	}
	return nil
}

const (
	wantAccepted = `"status":"accepted"`
	wantBatch100 = `"accepted":100,"duplicates":0,"rejected":0,"failed":0`
)

// benchIDs hands out unique UUID-shaped (version 4 layout) event ids:
// a random per-run prefix and a counter, so generating them costs next to
// nothing inside the timed loop.
type benchIDs struct {
	prefix string
	n      atomic.Uint64
}

func newBenchIDs() *benchIDs {
	var r [4]byte
	if _, err := rand.Read(r[:]); err != nil {
		panic(err)
	}
	return &benchIDs{prefix: hex.EncodeToString(r[:])}
}

func (ids *benchIDs) next() string {
	var c [8]byte
	binary.BigEndian.PutUint64(c[:], ids.n.Add(1))
	h := hex.EncodeToString(c[:])
	return ids.prefix + "-" + h[0:4] + "-4" + h[4:7] + "-8" + h[7:10] + "-" + h[10:16] + "000000"
}

// benchEvent returns a typical tool-call event with a payload of about
// 300 bytes and a fresh eventId.
func benchEvent(ids *benchIDs) []byte {
	return fmt.Appendf(nil, `{"eventId":%q,"agentId":"agent-03.support-bot","sessionId":"sess-03-0007","sourceTimestamp":%q,"category":"tool_api","schemaVersion":"1.0","payload":{"toolName":"http_request","argumentsHash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08","responseStatus":200,"durationMs":412,"model":"claude-3-5-sonnet","inputTokens":1834,"outputTokens":211,"target":"https://crm.internal.example.net/v1/items/482913?expand=owner","tags":["env:prod","team:support"]}}`,
		ids.next(), time.Now().UTC().Format(time.RFC3339Nano))
}

func benchBatch(ids *benchIDs, n int) []byte {
	var buf bytes.Buffer
	buf.WriteString(`{"events":[`)
	for i := range n {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(benchEvent(ids))
	}
	buf.WriteString(`]}`)
	return buf.Bytes()
}

// BenchmarkPostEvent is one event per request, one request at a time:
// the latency of an acknowledged (durably stored) event.
func BenchmarkPostEvent(b *testing.B) {
	s := startBenchServer(b)
	ids := newBenchIDs()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.post("/v1/events", benchEvent(ids), wantAccepted); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkPostEventParallel runs GOMAXPROCS×8 concurrent clients.
func BenchmarkPostEventParallel(b *testing.B) {
	s := startBenchServer(b)
	ids := newBenchIDs()
	b.SetParallelism(8)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := s.post("/v1/events", benchEvent(ids), wantAccepted); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPostBatch100 is 100 events per request; ns/op is per batch and
// events/s is reported alongside.
func BenchmarkPostBatch100(b *testing.B) {
	s := startBenchServer(b)
	ids := newBenchIDs()
	b.ReportAllocs()
	for b.Loop() {
		if err := s.post("/v1/events/batch", benchBatch(ids, 100), wantBatch100); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(100*b.N)/b.Elapsed().Seconds(), "events/s")
}

package natsauth_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
)

// benchServer is an embedded server in one of the three modes `vigil
// bench --nats` compares, with a way to connect as a service.
type benchServer struct {
	url   string
	creds string
	tls   natsauth.TLSFiles
	open  bool
}

func startBenchServer(b *testing.B, mode string) *benchServer {
	b.Helper()
	dir := b.TempDir()
	bs := &benchServer{creds: filepath.Join(dir, "creds"), open: mode == "open"}
	o := natsx.EmbeddedOptions{Port: -1, StoreDir: filepath.Join(dir, "js")}
	if !bs.open {
		users, err := natsauth.Init(bs.creds)
		if err != nil {
			b.Fatal(err)
		}
		if o.Users, err = natsauth.ServerUsers(users); err != nil {
			b.Fatal(err)
		}
	}
	if mode == "tls" {
		ca, err := natsauth.NewCA(filepath.Join(dir, "tls"), "bench", time.Hour)
		if err != nil {
			b.Fatal(err)
		}
		f, err := ca.Issue("nats", true)
		if err != nil {
			b.Fatal(err)
		}
		if o.TLS, err = natsauth.ServerTLS(natsauth.TLSFiles{Cert: f.Cert, Key: f.Key}); err != nil {
			b.Fatal(err)
		}
		bs.tls = natsauth.TLSFiles{CA: ca.File}
	}
	srv, err := natsx.StartEmbedded(o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	bs.url = srv.ClientURL()
	return bs
}

func (bs *benchServer) connect(b *testing.B, user string) (*nats.Conn, jetstream.JetStream) {
	b.Helper()
	var cred natsauth.Credential
	if !bs.open {
		cred = natsauth.FileCredential(natsauth.SeedFile(bs.creds, user))
	}
	opts, err := natsauth.ClientOptions(cred, bs.tls)
	if err != nil {
		b.Fatal(err)
	}
	nc, js, err := natsx.Connect(bs.url, user, discard, opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc, js
}

var benchModes = []string{"open", "auth", "tls"}

// BenchmarkPublish is one event published to INGEST and acknowledged, as
// ingest's single-event path does, per NATS mode: what authentication
// (permission checks on the server) and TLS add to the hop.
func BenchmarkPublish(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode, func(b *testing.B) {
			bs := startBenchServer(b, mode)
			_, js := bs.connect(b, streams.ServiceIngest)
			ctx := context.Background()
			if err := natsx.EnsureStreams(ctx, js, streams.IngestConfig(streams.DefaultOptions)); err != nil {
				b.Fatal(err)
			}
			payload := make([]byte, 536) // the ingest benchmark's mean event
			subject := streams.EventReceivedSubject("bench", "agent")
			b.ResetTimer()
			for b.Loop() {
				if _, err := js.Publish(ctx, subject, payload); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkRequestReply is one decision-sized request from the api to the
// policy responder and its reply, per NATS mode.
func BenchmarkRequestReply(b *testing.B) {
	for _, mode := range benchModes {
		b.Run(mode, func(b *testing.B) {
			bs := startBenchServer(b, mode)
			pnc, _ := bs.connect(b, streams.ServicePolicy)
			reply := make([]byte, 300)
			if _, err := pnc.QueueSubscribe(streams.EvaluateRPC, "vigil-policy", func(m *nats.Msg) { _ = m.Respond(reply) }); err != nil {
				b.Fatal(err)
			}
			if err := pnc.Flush(); err != nil {
				b.Fatal(err)
			}
			anc, _ := bs.connect(b, streams.ServiceAPI)
			req := make([]byte, 400)
			b.ResetTimer()
			for b.Loop() {
				if _, err := anc.Request(streams.EvaluateRPC, req, 5*time.Second); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

package main

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vigilhq/vigil/services/ingest"
)

// TestStackIngestPublishConnections: the stack opens ingest's publishing
// connections (Config.PublishConns) as the ingest NATS user, like the
// service's own connection, and none more. (They are among the
// connections Close drains, by connectAs.)
func TestStackIngestPublishConnections(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ic := ingest.DefaultConfig()
	ic.PublishConns = 3
	st, err := StartStack(ctx, StackConfig{
		DataDir: t.TempDir(), NATSHost: "127.0.0.1", NATSPort: -1,
		Ingest: ic, API: benchAPIConfig(), Log: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cz, err := st.NATS.Connz(&server.ConnzOptions{Username: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]string{} // connection name → authorized user
	var ingestConns []*server.ConnInfo
	for _, c := range cz.Conns {
		if c.Name == "vigil-dev-ingest" {
			ingestConns = append(ingestConns, c)
		}
		users[c.Name] = c.AuthorizedUser
	}
	if len(ingestConns) != 3 {
		t.Fatalf("%d connections named vigil-dev-ingest, want 3 (PublishConns)", len(ingestConns))
	}
	for _, c := range ingestConns {
		if c.AuthorizedUser == "" || c.AuthorizedUser != ingestConns[0].AuthorizedUser || c.AuthorizedUser == users["vigil-dev"] {
			t.Errorf("ingest connection %d authenticated as %q; want the ingest user (the first is %q, admin %q)",
				c.Cid, c.AuthorizedUser, ingestConns[0].AuthorizedUser, users["vigil-dev"])
		}
	}
}

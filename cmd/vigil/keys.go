package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
)

func runKeysCreate(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil keys create", "Create an API key. The key is printed once and stored only as a hash.")
	natsCfg := config.AddNATS(fs, "")
	dataDir := fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "`vigil dev` data directory: its admin credential (creds/admin.nk) is used unless --nats-creds is given, and it is opened directly when no NATS server answers")
	ten := fs.String("tenant", "", tenant.Default, "tenant the key belongs to")
	roleName := fs.String("role", "", "owner", "role: owner, admin, member, viewer or agent")
	name := fs.String("name", "", "", "a label for the key")
	asJSON := fs.Bool("json", false, "print the key as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if !tenant.Valid(*ten) {
		return fmt.Errorf("--tenant %q: must match ^[a-z0-9][a-z0-9_-]{0,62}$", *ten)
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("--role: %w", err)
	}
	js, closeFn, err := connectOrEmbed(natsCfg, *dataDir)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := natsx.EnsureStreams(ctx, js, streams.ControlConfig(streams.DefaultOptions)); err != nil {
		return err
	}
	rec, token, err := control.NewStore(js).CreateKey(ctx, *ten, role, *name, "vigil keys create")
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(map[string]any{"id": rec.ID, "tenant": rec.Tenant, "role": rec.Role, "name": rec.Name, "key": token})
	}
	fmt.Fprintf(out, "Created %s key %s for tenant %q. Store it now; it is not shown again:\n\n    %s\n\n", rec.Role, rec.ID, rec.Tenant, token)
	return nil
}

// connectOrEmbed reaches a running Vigil over NATS as n says, with the
// admin credential of dataDir when n names none; failing that, it opens
// the dev data directory with a private embedded server, so keys can be
// created before the first `vigil dev` or while it is stopped. Without a
// credential a Vigil NATS server refuses the CLI: minting keys takes the
// admin seed (0600 in the data directory, or --nats-creds).
func connectOrEmbed(n config.NATS, dataDir string) (jetstream.JetStream, func(), error) {
	log := slog.New(slog.DiscardHandler)
	admin := natsauth.SeedFile(CredsDir(dataDir), natsauth.Admin)
	if *n.Creds == "" && *n.NKey == "" {
		if _, err := os.Stat(admin); err == nil {
			*n.Creds = admin
		}
	}
	nc, js, err := daemon.ConnectNATS(n, "vigil-cli", log)
	if err == nil {
		return js, nc.Close, nil
	}
	if errors.Is(err, nats.ErrAuthorization) {
		return nil, nil, fmt.Errorf("%w: pass the admin credential with --nats-creds (vigil dev keeps it in <data-dir>/creds/admin.nk; `vigil nats init` writes creds/admin.nk)", err)
	}
	if !errors.Is(err, nats.ErrNoServers) {
		return nil, nil, err
	}
	if _, err := os.Stat(dataDir); err != nil {
		return nil, nil, fmt.Errorf("no NATS at %s and no data directory %s: start `vigil dev` first or pass --nats-url", *n.URL, dataDir)
	}
	srv, local, err := startLocalNATS(StackConfig{DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1})
	if err != nil {
		return nil, nil, err
	}
	nc, js, err = local.connect(natsauth.Admin, "vigil-cli", log)
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	return js, func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() }, nil
}

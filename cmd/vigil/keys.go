package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/cmd/vigil/stack"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/control"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/pkg/natsauth"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/tenant"
)

// keysTarget is where the keys commands write: a running Vigil's NATS, or
// its data directory, and the tenant.
type keysTarget struct {
	nats    config.NATS
	dataDir *string
	tenant  *string
}

func keysFlags(fs *config.FlagSet) keysTarget {
	return keysTarget{
		nats:    config.AddNATS(fs, ""),
		dataDir: fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "`vigil dev` data directory: its admin credential (creds/admin.nk) is used unless --nats-creds is given, and it is opened directly when no NATS server answers"),
		tenant:  fs.String("tenant", "", tenant.Default, "tenant the key belongs to"),
	}
}

// open checks the tenant and reaches CONTROL, with a deadline on ctx;
// done releases both.
func (k keysTarget) open(ctx context.Context) (context.Context, jetstream.JetStream, func(), error) {
	if !tenant.Valid(*k.tenant) {
		return nil, nil, nil, fmt.Errorf("--tenant %q: must match ^[a-z0-9][a-z0-9_-]{0,62}$", *k.tenant)
	}
	js, closeFn, err := connectOrEmbed(k.nats, *k.dataDir)
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	return ctx, js, func() { cancel(); closeFn() }, nil
}

func runKeysCreate(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil keys create", "Create an API key. The key is printed once and stored only as a hash.")
	target := keysFlags(fs)
	roleName := fs.String("role", "", "owner", "role: owner, admin, member, viewer or agent")
	name := fs.String("name", "", "", "a label for the key")
	var agents agentList
	fs.Var(&agents, "agent", "for --role agent: the agent id the key acts as (repeat the flag or give a comma list for several)")
	asJSON := fs.Bool("json", false, "print the key as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	role, err := auth.ParseRole(*roleName)
	if err != nil {
		return fmt.Errorf("--role: %w", err)
	}
	bound, err := auth.Binding(role, agents)
	if err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	ctx, js, done, err := target.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	if err := ensureControl(ctx, js); err != nil {
		return err
	}
	rec, token, err := control.NewStore(js).IssueKey(ctx, control.KeySpec{Tenant: *target.tenant, Role: role, Name: *name, By: "vigil keys create", Agents: bound})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(out).Encode(map[string]any{"id": rec.ID, "tenant": rec.Tenant, "role": rec.Role, "name": rec.Name, "agents": rec.Agents, "key": token})
	}
	fmt.Fprintf(out, "Created %s key %s for tenant %q%s. Store it now; it is not shown again:\n\n    %s\n\n", rec.Role, rec.ID, rec.Tenant, boundTo(rec.Agents), token)
	return nil
}

func boundTo(agents []string) string {
	if len(agents) == 0 {
		return ""
	}
	return ", bound to agent " + strings.Join(agents, ", ")
}

// agentList collects --agent flags, each one id or a comma list.
type agentList []string

func (l *agentList) String() string { return strings.Join(*l, ",") }

func (l *agentList) Set(v string) error {
	for _, id := range strings.Split(v, ",") {
		if id = strings.TrimSpace(id); id != "" {
			*l = append(*l, id)
		}
	}
	return nil
}

// runKeysBind binds an existing agent key to its agents: the migration
// for agent keys created before keys were bound (docs/security.md). The
// HTTP form is POST /v1/keys/:id/bind.
func runKeysBind(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil keys bind", "Bind an agent key to the agent(s) it acts as, replacing any earlier binding.")
	target := keysFlags(fs)
	id := fs.String("id", "", "", "the key's id (the 16 hex digits after vgl_)")
	var agents agentList
	fs.Var(&agents, "agent", "agent id the key acts as (repeat the flag or give a comma list for several)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, js, done, err := target.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	store := control.NewStore(js)
	k, rev, err := store.Key(ctx, *target.tenant, *id)
	if err != nil {
		return fmt.Errorf("key %q in tenant %q: %w", *id, *target.tenant, err)
	}
	bound, err := auth.Binding(k.Role, agents)
	if err != nil {
		return fmt.Errorf("--agent: %w", err)
	}
	if _, err := store.BindKey(ctx, k, bound, "vigil keys bind", rev); err != nil {
		return err
	}
	fmt.Fprintf(out, "Key %s is now bound to agent %s.\n", k.ID, strings.Join(bound, ", "))
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
	srv, local, err := stack.StartNATS(StackConfig{DataDir: dataDir, NATSHost: "127.0.0.1", NATSPort: -1})
	if err != nil {
		return nil, nil, err
	}
	nc, js, err = local.Connect(natsauth.Admin, "vigil-cli", log)
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	return js, func() { nc.Close(); srv.Shutdown(); srv.WaitForShutdown() }, nil
}

// ensureControl creates CONTROL when it is missing (keys made in a data
// directory before Vigil's first start) and otherwise leaves it alone: the
// api owns it, and its replicas and duplicate window are the deployment's
// settings, which the CLI's defaults (one replica) would overwrite.
func ensureControl(ctx context.Context, js jetstream.JetStream) error {
	cfg := streams.ControlConfig(streams.DefaultOptions)
	_, err := js.Stream(ctx, cfg.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return natsx.EnsureStreams(ctx, js, cfg)
	}
	if err != nil {
		return fmt.Errorf("stream %s: %w", cfg.Name, err)
	}
	return nil
}

// Command vigil is Vigil's single binary: `vigil dev` runs every service in
// one process with an embedded NATS server, and the other subcommands are
// the operator's CLI.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

const usage = `vigil — governance control plane for AI agents

Usage:
  vigil dev                 run every service in one process (embedded NATS)
  vigil keys create         create an API key (shown once; needs the NATS admin credential);
                            --role agent --agent A binds it to its agent
  vigil keys bind           bind an existing agent key to its agent(s)
  vigil nats init           generate NATS credentials and server config for compose
  vigil secrets init|export|rotate
                            generate deployment secrets, move them out of NATS, re-seal under a new key
  vigil migrate             apply ClickHouse migrations
  vigil bench ingest|otlp|decide|freshness|ledger|notify
                            measure a hot path end to end on this machine
  vigil chaos               the fault suite: kill -9, ClickHouse and NATS node outages under load
  vigil policy test|apply|replay
                            test policies offline, apply a directory, replay history
  vigil ledger key|audit    print the ledger's verifier key; audit logs against projections
  vigil gateway             the front door: one base URL over separately deployed services (docs/gateway.md)
  vigil mcp-proxy           MCP gateway: pinned tools, every tools/call a Vigil decision (docs/mcp.md)
  vigil verify BUNDLE       verify an evidence bundle offline
  vigil verify manifest     verify an agent's signed manifest (manifestSignature)
  vigil version             print the version

Run "vigil <command> --help" for a command's flags.
`

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "vigil:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		fmt.Print(usage)
		return nil
	}
	switch args[0] {
	case "dev":
		return runDev(ctx, args[1:])
	case "keys":
		switch {
		case len(args) >= 2 && args[1] == "create":
			return runKeysCreate(ctx, args[2:], os.Stdout)
		case len(args) >= 2 && args[1] == "bind":
			return runKeysBind(ctx, args[2:], os.Stdout)
		}
		return errors.New(`usage: vigil keys create --tenant T --role R [--agent A] | vigil keys bind --tenant T --id K --agent A`)
	case "secrets":
		return runSecrets(ctx, args[1:], os.Stdout)
	case "nats":
		return runNATS(ctx, args[1:], os.Stdout)
	case "migrate":
		return runMigrate(ctx, args[1:])
	case "gateway":
		return runGateway(ctx, args[1:], os.Stdout)
	case "mcp-proxy":
		return runMCPProxy(ctx, args[1:], os.Stdin, os.Stdout, os.Stderr)
	case "bench":
		return runBench(ctx, args[1:], os.Stdout)
	case "chaos":
		return runChaos(ctx, args[1:], os.Stdout)
	case "policy":
		return runPolicy(ctx, args[1:], os.Stdout)
	case "ledger":
		return runLedger(ctx, args[1:], os.Stdout)
	case "verify":
		return runVerify(ctx, args[1:], os.Stdin, os.Stdout)
	case "version":
		fmt.Println(version)
		return nil
	case "help", "-h", "--help":
		fmt.Print(usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n\n%s", args[0], usage)
}

package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/daemon"
	"github.com/vigilhq/vigil/services/ledger"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// runLedger is `vigil ledger key|audit`.
func runLedger(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: vigil ledger key|audit [flags]")
	}
	switch args[0] {
	case "key":
		return runLedgerKey(args[1:], out)
	case "audit":
		return runLedgerAudit(ctx, args[1:], out)
	}
	return fmt.Errorf("unknown ledger command %q (want key or audit)", args[0])
}

// ledgerKeyFlags are how the CLI finds the ledger's key: the deployment
// signing seed the ledger derives it from, or a pinned verifier key.
type ledgerKeyFlags struct {
	signingKey      *config.Secret
	dataDir, origin *string
}

func addLedgerKeyFlags(fs *config.FlagSet) ledgerKeyFlags {
	return ledgerKeyFlags{
		signingKey: fs.SigningKey(),
		dataDir:    fs.String("data-dir", "VIGIL_DATA_DIR", "./.vigil", "vigil dev's data directory, holding signing.key"),
		origin:     fs.String("origin", "VIGIL_LEDGER_ORIGIN", ledger.DefaultConfig().Origin, "the ledger's origin prefix and key name"),
	}
}

// verifierKey derives the ledger's note verifier key. Unlike `vigil dev`,
// it never creates a signing key.
func (f ledgerKeyFlags) verifierKey() (string, error) {
	file := filepath.Join(*f.dataDir, "signing.key")
	seed, err := f.signingKey.Optional()
	if err == nil && seed == nil {
		if _, err := os.Stat(file); err != nil {
			return "", fmt.Errorf("no --signing-key and no %s: %w", file, err)
		}
		seed, err = f.signingKey.OrFile(file)
	}
	if err != nil {
		return "", err
	}
	ls, err := evidence.DeriveSeed(seed)
	if err != nil {
		return "", err
	}
	k, err := evidence.NewKeys(ls, *f.origin)
	if err != nil {
		return "", err
	}
	return k.VerifierKey, nil
}

func runLedgerKey(args []string, out io.Writer) error {
	fs := config.New("vigil ledger key", "Print the ledger's checkpoint verifier key (C2SP signed-note format), for auditors to pin.")
	kf := addLedgerKeyFlags(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	vkey, err := kf.verifierKey()
	if err != nil {
		return err
	}
	fmt.Fprintln(out, vkey)
	return nil
}

func runLedgerAudit(ctx context.Context, args []string, out io.Writer) error {
	fs := config.New("vigil ledger audit", "Recompute every tenant's log from the ledger tables and the events and decisions projections; report what changed, was removed or inserted.")
	common := config.AddCommon(fs)
	kf := addLedgerKeyFlags(fs)
	pinned := fs.String("key", "VIGIL_LEDGER_KEY", "", "the ledger's verifier key (default: derived from the signing key)")
	tenant := fs.String("tenant", "VIGIL_TENANT", "", "audit only this tenant (default: every tenant with a log)")
	asJSON := fs.String("format", "VIGIL_AUDIT_FORMAT", "text", "output: text or json")
	if err := fs.Parse(args); err != nil {
		return err
	}
	vkey := *pinned
	if vkey == "" {
		var err error
		if vkey, err = kf.verifierKey(); err != nil {
			return fmt.Errorf("%w (or pass --key)", err)
		}
	}
	log, err := daemon.Logger(*common.LogLevel, *common.LogFormat)
	if err != nil {
		return err
	}
	ch, err := daemon.OpenClickHouse(ctx, *common.ClickHouseDSN, *common.ClickHouseCluster, *common.ClickHouseWait, log)
	if err != nil {
		return err
	}
	defer ch.Close()
	tenants := []string{*tenant}
	if *tenant == "" {
		if tenants, err = ledger.AuditTenants(ctx, ch); err != nil {
			return fmt.Errorf("list ledgers: %w", err)
		}
	}
	var reports []ledger.AuditReport
	problems := 0
	for _, t := range tenants {
		rep, err := ledger.Audit(ctx, ch, t, ledger.AuditOptions{VerifierKey: vkey, Origin: *kf.origin})
		if err != nil {
			return err
		}
		reports = append(reports, rep)
		problems += len(rep.Problems)
	}
	if *asJSON == "json" {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(reports); err != nil {
			return err
		}
	} else {
		for _, r := range reports {
			status := "ok"
			if len(r.Problems) > 0 {
				status = fmt.Sprintf("%d problems", len(r.Problems))
			}
			fmt.Fprintf(out, "%s: %d leaves, %d events and %d decisions checked, %d not yet sealed: %s\n", r.Tenant, r.TreeSize, r.Events, r.Decisions, r.Pending, status)
			for _, p := range r.Problems {
				fmt.Fprintf(out, "  %s\n", p)
			}
		}
	}
	if problems > 0 {
		return fmt.Errorf("audit found %d problems", problems)
	}
	return nil
}

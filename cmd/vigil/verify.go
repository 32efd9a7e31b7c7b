package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// runVerify is `vigil verify BUNDLE`: it checks an evidence bundle
// offline, with no server, and lists everything that fails.
func runVerify(args []string, stdin io.Reader, out io.Writer) error {
	fs := config.New("vigil verify", "Verify an evidence bundle offline: signatures, every record's bytes and inclusion proof, and the signed record count.\n\nUsage: vigil verify [--key VKEY] BUNDLE.json   (\"-\" reads stdin)")
	key := fs.String("key", "VIGIL_LEDGER_KEY", "", "the ledger's verifier key to trust (from `vigil ledger key`); default: the key inside the bundle, which proves integrity but not origin")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: vigil verify [--key VKEY] BUNDLE.json")
	}
	var data []byte
	var err error
	if path := fs.Arg(0); path == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 1<<30))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return err
	}
	var b evidence.Bundle
	if err := json.Unmarshal(data, &b); err != nil {
		return fmt.Errorf("%s is not an evidence bundle: %w", fs.Arg(0), err)
	}
	rep := evidence.Verify(b, *key)
	if !rep.OK() {
		fmt.Fprintf(out, "FAIL: %s (tenant %s, session %s): %d problems\n", fs.Arg(0), b.Tenant, b.SessionID, len(rep.Problems))
		for _, p := range rep.Problems {
			fmt.Fprintf(out, "  - %s\n", p)
		}
		return fmt.Errorf("evidence bundle does not verify (%d problems)", len(rep.Problems))
	}
	trust := "the key in the bundle (pass --key to pin the ledger's key)"
	if *key != "" {
		trust = "the pinned key"
	}
	fmt.Fprintf(out, "OK: %d records of session %s (tenant %s) are in %s at tree size %d, signed by %s; the signed record count matches\n",
		rep.Records, b.SessionID, b.Tenant, b.Origin, rep.TreeSize, trust)
	return nil
}

package main

import (
	"bytes"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/config"
)

// TestDevHelpListsEverySetting: every deployment setting of the services
// `vigil dev` runs is a flag with its environment variable, so --help
// shows it (the notifier's key and private networks used to be read from
// the environment only).
func TestDevHelpListsEverySetting(t *testing.T) {
	fset := config.New("vigil dev", "test")
	var out bytes.Buffer
	fset.SetOutput(&out)
	addDevFlags(fset)
	if err := fset.Parse([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
	for _, want := range []string{
		"--notifier-key  $VIGIL_NOTIFIER_KEY", "--notifier-allow-private  $VIGIL_NOTIFIER_ALLOW_PRIVATE",
		"--signing-key  $VIGIL_SIGNING_KEY", "--redaction-key  $VIGIL_REDACTION_KEY", "--judge-seal-key  $VIGIL_JUDGE_SEAL_KEY",
		"--judge-allow  $VIGIL_JUDGE_ALLOW", "--stream-replicas  $VIGIL_STREAM_REPLICAS", "--dedupe-window  $VIGIL_DEDUPE_WINDOW",
		"--clickhouse-wait  $VIGIL_CLICKHOUSE_WAIT",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
}

// TestNoHiddenSettings: no code outside pkg/config (and the test kit)
// reads the environment, so no setting can hide from --help.
func TestNoHiddenSettings(t *testing.T) {
	root := filepath.Join("..", "..")
	read := regexp.MustCompile(`os\.(Getenv|LookupEnv|Environ)\(`)
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		if d.IsDir() && (strings.HasPrefix(d.Name(), ".") && rel != "." || rel == filepath.Join("pkg", "config") || rel == filepath.Join("pkg", "chtest")) {
			return filepath.SkipDir
		}
		if d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if read.Match(b) {
			t.Errorf("%s reads the environment directly: declare the setting in pkg/config", rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

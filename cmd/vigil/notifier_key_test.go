package main

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"testing"
)

func TestNotifierKey(t *testing.T) {
	dir := t.TempDir()
	first, err := notifierKey("", dir)
	if err != nil || len(first) != 32 {
		t.Fatalf("generated key: %d bytes, %v", len(first), err)
	}
	info, err := os.Stat(filepath.Join(dir, "notifier.key"))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v", err, info.Mode())
	}
	again, err := notifierKey("", dir)
	if err != nil || !bytes.Equal(first, again) {
		t.Fatal("a restart on the same data dir got another key: stored credentials would not decrypt")
	}
	configured := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 40))
	if k, err := notifierKey(configured, dir); err != nil || len(k) != 40 {
		t.Fatalf("configured key: %d bytes, %v", len(k), err)
	}
	for _, bad := range []string{"not base64!", base64.StdEncoding.EncodeToString(make([]byte, 16))} {
		if _, err := notifierKey(bad, dir); err == nil {
			t.Errorf("configured %q accepted", bad)
		}
	}
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "notifier.key"), []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := notifierKey("", corrupt); err == nil {
		t.Error("corrupt key file accepted")
	}
}

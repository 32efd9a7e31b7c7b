package secretbox_test

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/secretbox"
)

func newBox(t *testing.T, seed byte, purpose string) *secretbox.Box {
	t.Helper()
	b, err := secretbox.New(bytes.Repeat([]byte{seed}, 32), purpose)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSealOpen(t *testing.T) {
	box := newBox(t, 1, "channels")
	secret := []byte("whsec_supersecretvalue")
	sealed := box.Seal(secret, "acme/ch_1")
	if strings.Contains(sealed, "supersecret") {
		t.Fatal("sealed value contains the plaintext")
	}
	if sealed == box.Seal(secret, "acme/ch_1") {
		t.Fatal("two seals of the same value are equal (nonce reuse)")
	}
	got, err := box.Open(sealed, "acme/ch_1")
	if err != nil || !bytes.Equal(got, secret) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	tampered := []byte(sealed)
	tampered[len(tampered)-3] ^= 1
	cases := []struct {
		name   string
		box    *secretbox.Box
		sealed string
		ad     string
	}{
		{"other record", box, sealed, "acme/ch_2"},
		{"other tenant", box, sealed, "evil/ch_1"},
		{"other key", newBox(t, 2, "channels"), sealed, "acme/ch_1"},
		{"other purpose", newBox(t, 1, "other"), sealed, "acme/ch_1"},
		{"tampered", box, string(tampered), "acme/ch_1"},
		{"no prefix", box, strings.TrimPrefix(sealed, "v1:"), "acme/ch_1"},
		{"not base64", box, "v1:!!!", "acme/ch_1"},
		{"short", box, "v1:AAAA", "acme/ch_1"},
		{"empty", box, "", "acme/ch_1"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := c.box.Open(c.sealed, c.ad); !errors.Is(err, secretbox.ErrOpen) {
				t.Fatalf("Open = %v, want ErrOpen", err)
			}
		})
	}
}

func TestNewRejectsShortSecret(t *testing.T) {
	if _, err := secretbox.New(make([]byte, 31), "x"); err == nil {
		t.Fatal("31-byte secret accepted")
	}
}

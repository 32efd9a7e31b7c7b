package ledger

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// cloneBundle deep-copies a bundle through JSON, as a file would.
func cloneBundle(t *testing.T, b evidence.Bundle) evidence.Bundle {
	t.Helper()
	data, err := json.MarshalIndent(b, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	var out evidence.Bundle
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEvidenceBundleDetectsTampering(t *testing.T) {
	e := newEnv(t)
	r := e.start()
	for i := range 3 {
		e.event("acme", "s-1", i)
	}
	e.decision("acme", "s-1", "sha256:aa")
	e.event("acme", "s-2", 0)
	r.waitSize(t, "acme", 5)
	b, err := r.svc.Evidence(testCtx(t), "acme", "s-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Records) != 4 || b.RecordCount != 4 || !slices.Equal(b.PolicyPackHashes, []string{"sha256:aa"}) {
		t.Fatalf("bundle: %d records, count %d, packs %v", len(b.Records), b.RecordCount, b.PolicyPackHashes)
	}
	if rep := evidence.Verify(cloneBundle(t, b), r.svc.VerifierKey()); !rep.OK() {
		t.Fatalf("untouched bundle fails: %v", rep.Problems)
	}
	other, err := evidence.NewKeys(bytes.Repeat([]byte{9}, 32), "vigil.local/ledger")
	if err != nil {
		t.Fatal(err)
	}
	setRecord := func(b *evidence.Bundle, i int, from, to string) {
		c, err := evidence.Canonicalize(b.Records[i].Record)
		if err != nil {
			panic(err)
		}
		s := string(c)
		if !strings.Contains(s, from) {
			panic("record has no " + from + ": " + s)
		}
		b.Records[i].Record = json.RawMessage(strings.Replace(s, from, to, 1))
	}
	cases := []struct {
		name   string
		tamper func(b *evidence.Bundle)
		key    string
		want   string
	}{
		{"record bytes changed", func(b *evidence.Bundle) { setRecord(b, 0, `"n":0`, `"n":1`) }, "", "record bytes changed"},
		{"record moved to another session", func(b *evidence.Bundle) { setRecord(b, 1, `"session":"s-1"`, `"session":"s-9"`) }, "", "not this bundle's"},
		{"record removed", func(b *evidence.Bundle) { b.Records = b.Records[1:] }, "", "count mismatch: 4 records committed for the session, bundle holds 3"},
		{"record removed and count lowered", func(b *evidence.Bundle) { b.Records = b.Records[1:]; b.RecordCount = 3 }, "", "manifest commits 4 records"},
		{"record duplicated", func(b *evidence.Bundle) { b.Records = append(b.Records, b.Records[0]) }, "", "appears twice"},
		{"leaf hash replaced", func(b *evidence.Bundle) {
			b.Records[2].LeafHash = b.Records[1].LeafHash
		}, "", "record bytes changed"},
		{"order swapped", func(b *evidence.Bundle) {
			b.Records[0].LedgerIndex, b.Records[1].LedgerIndex = b.Records[1].LedgerIndex, b.Records[0].LedgerIndex
		}, "", "bad proof"},
		{"proof truncated", func(b *evidence.Bundle) { b.Records[0].InclusionProof = b.Records[0].InclusionProof[1:] }, "", "bad proof"},
		{"checkpoint altered", func(b *evidence.Bundle) {
			b.Checkpoint = strings.Replace(b.Checkpoint, "\n5\n", "\n6\n", 1)
		}, "", "checkpoint: bad signature"},
		{"signed by another key", func(b *evidence.Bundle) {}, other.VerifierKey, "not the trusted key"},
		{"manifest altered", func(b *evidence.Bundle) { b.Manifest = strings.Replace(b.Manifest, "\n4\n", "\n3\n", 1) }, "", "manifest: bad signature"},
		{"policy pack hash dropped", func(b *evidence.Bundle) { b.PolicyPackHashes = nil }, "", "policy pack hashes"},
		{"tree size claimed larger", func(b *evidence.Bundle) { b.TreeSize++ }, "", "signed tree size 5"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb := cloneBundle(t, b)
			tc.tamper(&tb)
			key := r.svc.VerifierKey()
			if tc.key != "" {
				key = tc.key
			}
			rep := evidence.Verify(tb, key)
			if rep.OK() {
				t.Fatal("tampered bundle verified")
			}
			joined := strings.Join(rep.Problems, "\n")
			if !strings.Contains(joined, tc.want) {
				t.Fatalf("problems do not say %q:\n%s", tc.want, joined)
			}
		})
	}
}

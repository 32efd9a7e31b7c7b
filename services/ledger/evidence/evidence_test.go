package evidence_test

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/services/ledger/evidence"
)

func TestCanonicalize(t *testing.T) {
	cases := []struct{ in, want string }{
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{` { "z" : [ 3 , {"y":1,"x":2} ] , "a" : null } `, `{"a":null,"z":[3,{"x":2,"y":1}]}`},
		{`{"n":1.50,"m":1e3,"k":-0}`, `{"k":-0,"m":1e3,"n":1.50}`},
		{`"<a & b>"`, `"<a & b>"`},
		{`"\u00e9\n\u2028"`, "\"é\\n\\u2028\""},
		{`{"é":1,"e":2,"E":3}`, `{"E":3,"e":2,"é":1}`},
		{`true`, `true`},
	}
	for _, tc := range cases {
		got, err := evidence.Canonicalize([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("Canonicalize(%s) = %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{``, `{`, `{"a":1} {"b":2}`, `{"a":}`, `[1,]`} {
		if got, err := evidence.Canonicalize([]byte(bad)); err == nil {
			t.Errorf("Canonicalize(%q) = %s, want an error", bad, got)
		}
	}
}

func TestEnvelope(t *testing.T) {
	e := evidence.Envelope{Kind: evidence.KindEvent, Tenant: "acme", ID: "e1", Session: "s1", Record: []byte(`{"z":1, "a":"<x>"}`)}
	c, err := e.Canonical()
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"e1","kind":"event","record":{"a":"<x>","z":1},"session":"s1","tenant":"acme","v":1}`
	if string(c) != want {
		t.Fatalf("canonical\n%s\nwant\n%s", c, want)
	}
	back, err := evidence.ParseCanonical(c)
	if err != nil || back.Key() != "event:e1" || back.Session != "s1" {
		t.Fatalf("ParseCanonical: %+v, %v", back, err)
	}
	// The leaf hash is RFC 6962's over SHA-256 of the canonical bytes.
	if !bytes.Equal(evidence.LeafHash(c), rfc6962.DefaultHasher.HashLeaf(evidence.RecordDigest(c))) {
		t.Fatal("leaf hash is not the RFC 6962 leaf hash of the record digest")
	}
	for _, bad := range []string{
		`{"id":"e1","kind":"event","record":{"z":1,"a":"<x>"},"session":"s1","tenant":"acme","v":1}`, // unsorted
		`{"id":"e1", "kind":"event","record":{},"session":"s1","tenant":"acme","v":1}`,               // spaces
		`{"id":"e1","kind":"event","record":{},"session":"s1","tenant":"acme","v":2}`,                // version
		`{"id":"","kind":"event","record":{},"session":"s1","tenant":"acme","v":1}`,                  // no id
	} {
		if _, err := evidence.ParseCanonical([]byte(bad)); err == nil {
			t.Errorf("ParseCanonical accepted %s", bad)
		}
	}
}

func TestKeysAndCheckpoints(t *testing.T) {
	seed := bytes.Repeat([]byte{1}, 32)
	ls, err := evidence.DeriveSeed(seed)
	if err != nil || bytes.Equal(ls, seed) {
		t.Fatalf("DeriveSeed: %x, %v", ls, err)
	}
	k1, err := evidence.NewKeys(ls, "vigil.test/ledger")
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := evidence.NewKeys(ls, "vigil.test/ledger")
	if k1.VerifierKey != k2.VerifierKey || !strings.HasPrefix(k1.VerifierKey, "vigil.test/ledger+") {
		t.Fatalf("keys are not deterministic: %s %s", k1.VerifierKey, k2.VerifierKey)
	}
	root := bytes.Repeat([]byte{0xab}, 32)
	cp, err := evidence.SignCheckpoint(k1.Signer, "vigil.test/ledger/acme", 42, root)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := evidence.NewKeys(bytes.Repeat([]byte{2}, 32), "vigil.test/ledger")
	cases := []struct {
		name, origin, key string
		note              []byte
		ok                bool
	}{
		{"valid", "vigil.test/ledger/acme", k1.VerifierKey, cp, true},
		{"other tenant's origin", "vigil.test/ledger/beta", k1.VerifierKey, cp, false},
		{"other key", "vigil.test/ledger/acme", other.VerifierKey, cp, false},
		{"altered size", "vigil.test/ledger/acme", k1.VerifierKey, bytes.Replace(cp, []byte("\n42\n"), []byte("\n43\n"), 1), false},
		{"bad key text", "vigil.test/ledger/acme", "nonsense", cp, false},
	}
	for _, tc := range cases {
		got, err := evidence.OpenCheckpoint(tc.note, tc.origin, tc.key)
		if (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
		if tc.ok && (got.Size != 42 || !bytes.Equal(got.Hash, root)) {
			t.Errorf("%s: parsed %+v", tc.name, got)
		}
	}
}

// bundle builds a valid two-record bundle over a tree of five leaves.
func bundle(t testing.TB) (evidence.Bundle, string) {
	k, err := evidence.NewKeys(bytes.Repeat([]byte{3}, 32), "vigil.test/ledger")
	if err != nil {
		t.Fatal(err)
	}
	var leaves [][]byte
	var canon [][]byte
	for i := range 5 {
		session := "other"
		if i == 1 || i == 3 {
			session = "s1"
		}
		e := evidence.Envelope{Kind: evidence.KindDecision, Tenant: "acme", ID: "d" + string(rune('0'+i)), Session: session,
			Record: []byte(`{"result":{"packHash":"sha256:p1"}}`)}
		c, _ := e.Canonical()
		canon, leaves = append(canon, c), append(leaves, evidence.LeafHash(c))
	}
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, l := range leaves {
		_ = rng.Append(l, nil)
	}
	root, _ := rng.GetRootHash(nil)
	origin := "vigil.test/ledger/acme"
	cp, _ := evidence.SignCheckpoint(k.Signer, origin, 5, root)
	b := evidence.Bundle{Format: evidence.BundleFormat, Tenant: "acme", SessionID: "s1", Origin: origin, PublicKey: k.VerifierKey,
		Checkpoint: string(cp), TreeSize: 5, RootHash: evidence.HashString(root), RecordCount: 2, PolicyPackHashes: []string{"sha256:p1"}, GeneratedAt: time.Unix(0, 0)}
	for _, i := range []uint64{1, 3} {
		p := inclusion(t, leaves, i)
		b.Records = append(b.Records, evidence.BundleRecord{LedgerIndex: i, Kind: evidence.KindDecision, ID: "d" + string(rune('0'+i)),
			LeafHash: evidence.HashString(leaves[i]), Record: canon[i], InclusionProof: evidence.EncodeProof(p)})
	}
	m, _ := evidence.SignManifest(k.Signer, evidence.Manifest{Origin: origin, Session: "s1", Count: 2, TreeSize: 5,
		Digest: evidence.ManifestDigest([]uint64{1, 3}, [][]byte{leaves[1], leaves[3]})})
	b.Manifest = string(m)
	return b, k.VerifierKey
}

// inclusion computes a proof the slow way, from all leaves.
func inclusion(t testing.TB, leaves [][]byte, i uint64) [][]byte {
	nodes, err := proof.Inclusion(i, uint64(len(leaves)))
	if err != nil {
		t.Fatal(err)
	}
	hashes := make([][]byte, len(nodes.IDs))
	for k, id := range nodes.IDs {
		begin, end := id.Coverage()
		rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(begin)
		for _, l := range leaves[begin:end] {
			_ = rng.Append(l, nil)
		}
		hashes[k] = rng.Hashes()[0]
	}
	p, err := nodes.Rehash(hashes, rfc6962.DefaultHasher.HashChildren)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestVerifyBundle(t *testing.T) {
	b, key := bundle(t)
	if rep := evidence.Verify(b, key); !rep.OK() || rep.Records != 2 || rep.TreeSize != 5 {
		t.Fatalf("valid bundle: %+v", rep)
	}
	if rep := evidence.Verify(b, ""); !rep.OK() {
		t.Fatalf("valid bundle with its own key: %+v", rep)
	}
	b.Records = b.Records[:1]
	if rep := evidence.Verify(b, key); rep.OK() {
		t.Fatal("bundle with a record removed verified")
	}
}

func FuzzCanonicalize(f *testing.F) {
	for _, s := range []string{`{"b":1,"a":[1,2,{"d":"x","c":null}]}`, `"\u2028<>&"`, `1e400`, `{"a":1.000}`, `[]`, `{}`, `"\ud800"`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := evidence.Canonicalize(data)
		if err != nil {
			return
		}
		again, err := evidence.Canonicalize(c)
		if err != nil || !bytes.Equal(c, again) {
			t.Fatalf("not a fixed point: %q → %q → %q (%v)", data, c, again, err)
		}
	})
}

func FuzzVerify(f *testing.F) {
	b, key := bundle(f)
	valid, _ := json.Marshal(b)
	f.Add(valid)
	f.Add(bytes.Replace(valid, []byte(`"ledgerIndex":1`), []byte(`"ledgerIndex":99999999999`), 1))
	f.Add([]byte(`{"format":"vigil.evidence/v1","records":[{"record":{},"inclusionProof":["sha256:00"]}]}`))
	f.Add([]byte(`{}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var b evidence.Bundle
		if json.Unmarshal(data, &b) != nil {
			return
		}
		rep := evidence.Verify(b, key)
		if rep.OK() && !bytes.Equal(data, valid) {
			// Anything that verifies must carry the same signed content.
			if b.TreeSize != 5 || len(b.Records) != 2 {
				t.Fatalf("a different bundle verified: %s", data)
			}
		}
	})
}

package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

// BundleFormat identifies the evidence bundle layout.
const BundleFormat = "vigil.evidence/v1"

// manifestHeader starts the text of a session manifest note.
const manifestHeader = "vigil.ledger/session-manifest/v1"

// Bundle is a session's self-contained evidence: every record the ledger
// committed for the session, each with its inclusion proof against one
// signed checkpoint, and a signed manifest that fixes how many records
// there are, so a removed record is detectable.
type Bundle struct {
	Format    string `json:"format"`
	Tenant    string `json:"tenant"`
	SessionID string `json:"sessionId"`
	// Origin names the tenant's log, the first line of its checkpoints.
	Origin string `json:"origin"`
	// PublicKey is the ledger's note verifier key. An auditor should pin
	// it (vigil verify --key) rather than trust the copy in the bundle.
	PublicKey string `json:"publicKey"`
	// Checkpoint is the signed note every proof is relative to.
	Checkpoint string `json:"checkpoint"`
	TreeSize   uint64 `json:"treeSize"`
	RootHash   string `json:"rootHash"`
	// RecordCount is the number of records committed for the session up
	// to TreeSize; Manifest is the ledger's signature over it.
	RecordCount      int            `json:"recordCount"`
	Manifest         string         `json:"manifest"`
	PolicyPackHashes []string       `json:"policyPackHashes"`
	Records          []BundleRecord `json:"records"`
	GeneratedAt      time.Time      `json:"generatedAt"`
}

// BundleRecord is one committed record with its proof.
type BundleRecord struct {
	LedgerIndex uint64 `json:"ledgerIndex"`
	Kind        string `json:"kind"`
	ID          string `json:"id"`
	LeafHash    string `json:"leafHash"`
	// Record is the canonical envelope as JSON; its canonical bytes hash
	// to LeafHash.
	Record         json.RawMessage `json:"record"`
	InclusionProof []string        `json:"inclusionProof"`
}

// Manifest is what a session manifest note commits to.
type Manifest struct {
	Origin   string
	Session  string
	Count    int
	TreeSize uint64
	// Digest is SHA-256 over (8-byte big-endian index || leaf hash) of
	// the session's leaves in index order.
	Digest []byte
}

// ManifestDigest computes Manifest.Digest.
func ManifestDigest(indices []uint64, leaves [][]byte) []byte {
	type pair struct {
		i    uint64
		leaf []byte
	}
	ps := make([]pair, len(indices))
	for k := range indices {
		ps[k] = pair{indices[k], leaves[k]}
	}
	slices.SortFunc(ps, func(a, b pair) int { return cmpU64(a.i, b.i) })
	h := sha256.New()
	var b [8]byte
	for _, p := range ps {
		binary.BigEndian.PutUint64(b[:], p.i)
		h.Write(b[:])
		h.Write(p.leaf)
	}
	return h.Sum(nil)
}

func cmpU64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// SignManifest signs a session manifest.
func SignManifest(s note.Signer, m Manifest) ([]byte, error) {
	if strings.ContainsAny(m.Session, "\n") || strings.ContainsAny(m.Origin, "\n") {
		return nil, errors.New("evidence: session and origin must be single lines")
	}
	text := fmt.Sprintf("%s\n%s\n%s\n%d\n%d\n%s\n", manifestHeader, m.Origin, m.Session, m.Count, m.TreeSize, base64.StdEncoding.EncodeToString(m.Digest))
	return note.Sign(&note.Note{Text: text}, s)
}

// OpenManifest verifies and parses a signed session manifest.
func OpenManifest(signed []byte, verifierKey string) (Manifest, error) {
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return Manifest{}, fmt.Errorf("public key: %w", err)
	}
	n, err := note.Open(signed, note.VerifierList(v))
	if err != nil {
		return Manifest{}, err
	}
	l := strings.Split(n.Text, "\n")
	if len(l) != 7 || l[0] != manifestHeader || l[6] != "" {
		return Manifest{}, errors.New("not a session manifest")
	}
	m := Manifest{Origin: l[1], Session: l[2]}
	if m.Count, err = strconv.Atoi(l[3]); err != nil || m.Count < 0 {
		return Manifest{}, errors.New("manifest: bad count")
	}
	if m.TreeSize, err = strconv.ParseUint(l[4], 10, 64); err != nil {
		return Manifest{}, errors.New("manifest: bad tree size")
	}
	if m.Digest, err = base64.StdEncoding.DecodeString(l[5]); err != nil || len(m.Digest) != sha256.Size {
		return Manifest{}, errors.New("manifest: bad digest")
	}
	return m, nil
}

// EncodeProof renders proof hashes for JSON.
func EncodeProof(p [][]byte) []string {
	out := make([]string, len(p))
	for i, h := range p {
		out[i] = HashString(h)
	}
	return out
}

// DecodeProof parses EncodeProof's output.
func DecodeProof(p []string) ([][]byte, error) {
	out := make([][]byte, len(p))
	for i, s := range p {
		h, err := ParseHash(s)
		if err != nil {
			return nil, err
		}
		out[i] = h
	}
	return out, nil
}

// Report is the outcome of verifying a bundle: OK when Problems is empty.
type Report struct {
	Records  int
	TreeSize uint64
	Problems []string
}

// OK reports whether the bundle verified.
func (r Report) OK() bool { return len(r.Problems) == 0 }

// Verify checks a bundle offline. trustedKey, when set, is the verifier
// key the auditor pinned; otherwise the bundle's own key is used (which
// proves integrity but not origin). Every problem found is listed, not
// just the first.
func Verify(b Bundle, trustedKey string) Report {
	r := Report{Records: len(b.Records), TreeSize: b.TreeSize}
	fail := func(format string, args ...any) { r.Problems = append(r.Problems, fmt.Sprintf(format, args...)) }
	if b.Format != BundleFormat {
		fail("format is %q, want %q", b.Format, BundleFormat)
	}
	key := b.PublicKey
	if trustedKey != "" {
		if trustedKey != b.PublicKey {
			fail("public key: the bundle names %q, not the trusted key", b.PublicKey)
		}
		key = trustedKey
	}
	cp, err := OpenCheckpoint([]byte(b.Checkpoint), b.Origin, key)
	if err != nil {
		fail("checkpoint: bad signature or origin: %v", err)
		return r
	}
	if cp.Size != b.TreeSize {
		fail("checkpoint: signed tree size %d, bundle says %d", cp.Size, b.TreeSize)
	}
	if rh, err := ParseHash(b.RootHash); err != nil || !bytes.Equal(rh, cp.Hash) {
		fail("checkpoint: signed root %s, bundle says %s", HashString(cp.Hash), b.RootHash)
	}
	r.TreeSize = cp.Size

	m, err := OpenManifest([]byte(b.Manifest), key)
	manifestOK := err == nil
	if !manifestOK {
		fail("manifest: bad signature or format: %v", err)
	} else {
		if m.Origin != b.Origin || m.Session != b.SessionID {
			fail("manifest: signed for %s session %q, bundle is %s session %q", m.Origin, m.Session, b.Origin, b.SessionID)
		}
		if m.TreeSize != cp.Size {
			fail("manifest: signed at tree size %d, checkpoint is %d", m.TreeSize, cp.Size)
		}
		if m.Count != b.RecordCount {
			fail("count mismatch: manifest commits %d records, bundle says recordCount %d", m.Count, b.RecordCount)
		}
		if m.Count != len(b.Records) {
			fail("count mismatch: %d records committed for the session, bundle holds %d (records removed or added)", m.Count, len(b.Records))
		}
	}

	seen := map[uint64]bool{}
	var indices []uint64
	var leaves [][]byte
	packs := map[string]bool{}
	for _, rec := range b.Records {
		name := fmt.Sprintf("record %s:%s (ledger index %d)", rec.Kind, rec.ID, rec.LedgerIndex)
		if seen[rec.LedgerIndex] {
			fail("%s: ledger index appears twice", name)
		}
		seen[rec.LedgerIndex] = true
		canon, err := Canonicalize(rec.Record)
		if err != nil {
			fail("%s: record is not valid JSON: %v", name, err)
			continue
		}
		env, err := ParseCanonical(canon)
		if err != nil {
			fail("%s: %v", name, err)
			continue
		}
		if env.Kind != rec.Kind || env.ID != rec.ID {
			fail("%s: record bytes changed: it is %s:%s", name, env.Kind, env.ID)
		}
		if env.Tenant != b.Tenant || env.Session != b.SessionID {
			fail("%s: belongs to tenant %q session %q, not this bundle's", name, env.Tenant, env.Session)
		}
		leaf := LeafHash(canon)
		claimed, err := ParseHash(rec.LeafHash)
		if err != nil || !bytes.Equal(claimed, leaf) {
			fail("%s: record bytes changed: they hash to leaf %s, the bundle says %s", name, HashString(leaf), rec.LeafHash)
		}
		p, err := DecodeProof(rec.InclusionProof)
		if err != nil {
			fail("%s: bad proof: %v", name, err)
			continue
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, rec.LedgerIndex, cp.Size, leaf, p, cp.Hash); err != nil {
			fail("%s: bad proof: not included in the checkpoint at this index: %v", name, err)
		}
		indices, leaves = append(indices, rec.LedgerIndex), append(leaves, leaf)
		if env.Kind == KindDecision {
			var d struct {
				Result struct {
					PackHash string `json:"packHash"`
				} `json:"result"`
			}
			if json.Unmarshal(env.Record, &d) == nil && d.Result.PackHash != "" {
				packs[d.Result.PackHash] = true
			}
		}
	}
	if manifestOK && !bytes.Equal(ManifestDigest(indices, leaves), m.Digest) {
		fail("manifest: the records differ from those the ledger signed for the session (removed, replaced or reordered)")
	}
	want := make([]string, 0, len(packs))
	for p := range packs {
		want = append(want, p)
	}
	slices.Sort(want)
	got := slices.Clone(b.PolicyPackHashes)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		fail("policy pack hashes: bundle lists %v, its decisions used %v", got, want)
	}
	return r
}

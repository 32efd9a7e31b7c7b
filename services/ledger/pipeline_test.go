package ledger

import (
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/vigilhq/vigil/pkg/chtest"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// A batch staged on top of one that is not committed yet extends its
// tree and skips its records; when the first one fails, both are thrown
// away and sealed again from the committed state, each record once.
func TestStagedBatchesAbortAndReplay(t *testing.T) {
	db := chtest.New(t)
	svc := newService(t, db)
	ctx := testCtx(t)
	var ref reference
	first := synthetic(t, "acme", 0, 100)
	if err := svc.appendTenant(ctx, "acme", first, time.Now()); err != nil {
		t.Fatal(err)
	}
	ref.add(first)

	a := synthetic(t, "acme", 100, 50)
	b := append(synthetic(t, "acme", 150, 30), a[7], first[3]) // a redelivery of a staged and of a committed record
	wa, err := svc.stageTenant(ctx, "acme", pointers(a), time.Now())
	if err != nil || wa == nil || len(wa.rows) != 50 || wa.rows[0].idx != 100 {
		t.Fatalf("stage a: %+v %v", wa, err)
	}
	wb, err := svc.stageTenant(ctx, "acme", pointers(b), time.Now())
	if err != nil || wb == nil || len(wb.rows) != 30 || wb.rows[0].idx != 150 || wb.next.size != 180 {
		t.Fatalf("stage b on a: %+v %v", wb, err)
	}
	// Readers still see the committed tree.
	if cp, _ := svc.LatestCheckpoint(ctx, "acme"); cp.TreeSize != 100 {
		t.Fatalf("readers see size %d before any commit", cp.TreeSize)
	}
	// b's rows land, a's never do (its inserts failed): abort, replay.
	if err := svc.store.writeData(ctx, "acme", wb.version, wb.rows, wb.tiles); err != nil {
		t.Fatal(err)
	}
	svc.abort(nil)
	if len(svc.heads) != 0 || len(svc.staging) != 0 {
		t.Fatalf("abort left %d heads, %d staging sets", len(svc.heads), len(svc.staging))
	}
	// Replayed in another order, as a redelivery would bring them.
	if err := svc.appendTenant(ctx, "acme", append(synthetic(t, "acme", 150, 30), synthetic(t, "acme", 100, 50)...), time.Now()); err != nil {
		t.Fatal(err)
	}
	ref.add(synthetic(t, "acme", 100, 50))
	ref.add(synthetic(t, "acme", 150, 30))
	cp, _ := svc.LatestCheckpoint(ctx, "acme")
	if cp.TreeSize != 180 || cp.RootHash != evidence.HashString(ref.root(180)) {
		t.Fatalf("after replay: size %d root %s, want 180 %x", cp.TreeSize, cp.RootHash, ref.root(180))
	}
	root := ref.root(180)
	for i := range uint64(180) {
		p, st, err := svc.InclusionProof(ctx, "acme", i)
		if err != nil {
			t.Fatal(err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, st.size, ref.leaves[i], p, root); err != nil {
			t.Fatalf("inclusion of %d: %v", i, err)
		}
	}
	l, err := svc.Lineage(ctx, "acme", "s-3")
	if err != nil {
		t.Fatal(err)
	}
	checkLineage(t, svc, "acme", l)
	// A fresh process (nothing in memory) agrees.
	svc2 := newService(t, db)
	if cp2, _ := svc2.LatestCheckpoint(ctx, "acme"); cp2 != cp {
		t.Fatalf("restarted: %+v, want %+v", cp2, cp)
	}
	l2, err := svc2.Lineage(ctx, "acme", "s-3")
	if err != nil || len(l2.Records) != len(l.Records) {
		t.Fatalf("restarted lineage: %d records (%v), want %d", len(l2.Records), err, len(l.Records))
	}
	checkLineage(t, svc2, "acme", l2)
}

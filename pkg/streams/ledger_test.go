package streams_test

import (
	"testing"

	"github.com/nats-io/nats-server/v2/server"

	"github.com/vigilhq/vigil/pkg/streams"
)

func TestLedgerStream(t *testing.T) {
	o := streams.DefaultOptions
	l := streams.LedgerConfig(o)
	subj := streams.CheckpointSubject("acme")
	if subj != "ledger.v1.checkpoint_signed.acme.log" || !server.IsValidPublishSubject(subj) {
		t.Fatalf("checkpoint subject %q", subj)
	}
	if !server.SubjectMatchesFilter(subj, streams.AllCheckpoints) || !server.SubjectMatchesFilter(subj, l.Subjects[0]) {
		t.Fatalf("%q is not captured by LEDGER", subj)
	}
	others := []string{"ingest.v1.>", "control.v1.>", "policy.v1.>", "guardian.v1.>", "risk.v1.>", "rpc.>"}
	for _, o := range others {
		if server.SubjectsCollide(l.Subjects[0], o) {
			t.Errorf("LEDGER %q overlaps %q", l.Subjects[0], o)
		}
	}
	if l.MaxAge != 0 || !l.AllowDirect {
		t.Errorf("LEDGER must keep every checkpoint and allow direct gets: %+v", l)
	}
}

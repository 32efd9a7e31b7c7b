package streams

import "github.com/nats-io/nats.go/jetstream"

// Ledger stream and its subjects, owned by services/ledger.
//
// A checkpoint message is a JSON object with "tenant", "origin",
// "treeSize", "rootHash" ("sha256:<hex>"), "checkpoint" (the C2SP signed
// note, verbatim) and "at" (RFC 3339). Its Nats-Msg-Id is
// "<tenant>/<treeSize>", so a republished checkpoint is deduplicated.
const (
	Ledger = "LEDGER"
	// CheckpointSigned is a signed checkpoint of a tenant's log, published
	// after every integrated batch.
	CheckpointSigned = "checkpoint_signed"
	// AllCheckpoints filters every checkpoint of every tenant.
	AllCheckpoints = "ledger.v1." + CheckpointSigned + ".>"
)

// CheckpointSubject holds a tenant's checkpoints; its last message is the
// tenant's latest checkpoint.
func CheckpointSubject(tenant string) string {
	return subject("ledger", CheckpointSigned, tenant, "log")
}

// LedgerConfig defines the LEDGER stream, owned by services/ledger. Every
// checkpoint is kept: together they let anyone check that the log only
// ever grew.
func LedgerConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Ledger, "Signed checkpoints of every tenant's Merkle log", "ledger")
	sc.AllowDirect = true
	return sc
}

package streams

// What each service may do on NATS. NATS is inside the trust boundary but
// not trusted blindly: every service connects with its own credential and
// the server enforces the access declared here (pkg/natsauth turns it into
// subject permissions), so a compromised notifier cannot mint API keys on
// CONTROL or answer policy decisions. The table is the single place that
// says who produces and who consumes what; it names streams, buckets and
// subjects defined in this package only.

// KV buckets. Each is a JetStream stream named KV_<bucket> whose subjects
// are $KV.<bucket>.>.
const (
	// KeyUsageBucket holds each API key's last use (pkg/control).
	KeyUsageBucket = "key_usage"
	// IdempotencyBucket holds Idempotency-Key responses (pkg/idempotency).
	IdempotencyBucket = "IDEMPOTENCY"
	// RiskLeaseBucket holds the risk service's partition leases.
	RiskLeaseBucket = "risk_leases"
	// RiskCheckpointBucket holds the risk service's partition checkpoints.
	RiskCheckpointBucket = "risk_checkpoints"
	// SessionLabelsBucket holds each session's data-flow labels
	// (services/policy).
	SessionLabelsBucket = "session_labels"
	// ConsoleSessionsBucket holds the web console's signed-in sessions
	// (services/api/console), so that every api instance serves them.
	ConsoleSessionsBucket = "console_sessions"
)

// RateLimitGossip carries rate-limit spending between instances. It is
// plain NATS, not JetStream: spending reports are useful for a moment only.
const RateLimitGossip = "ratelimit.v1.spent"

// Service names: the NATS user each service connects as.
const (
	ServiceIngest   = "ingest"
	ServiceAPI      = "api"
	ServicePolicy   = "policy"
	ServiceGuardian = "guardian"
	ServiceRisk     = "risk"
	ServiceLedger   = "ledger"
	ServiceNotifier = "notifier"
)

// Access is what one service does on NATS.
type Access struct {
	// Service is the NATS user name.
	Service string
	// Owns lists the streams the service creates and publishes to.
	Owns []string
	// Writes lists subject filters the service publishes to on streams it
	// does not own (notification channels live on CONTROL).
	Writes []string
	// Reads lists streams the service consumes or reads messages of.
	Reads []string
	// Watches lists streams whose consumers' progress (consumer and stream
	// info, nothing else) the service reads: a read waiting on a
	// consistency token watches the projector that must pass it.
	Watches []string
	// Buckets lists the KV buckets the service creates, reads and writes.
	Buckets []string
	// Serves lists request/reply subjects (filters) the service answers.
	Serves []string
	// Calls lists request/reply subjects (filters) the service requests.
	Calls []string
	// Gossip lists plain subjects the service both publishes and
	// subscribes to.
	Gossip []string
}

// riskRPC covers every per-partition subject of the risk service.
const riskRPC = RiskRPCPrefix + ">"

// Accesses is the access of every service. A service that serves HTTP
// authenticates keys (the CONTROL catalog) and therefore reads CONTROL.
func Accesses() []Access {
	return []Access{
		{
			Service: ServiceIngest, Owns: []string{Ingest}, Reads: []string{Control},
			Buckets: []string{KeyUsageBucket}, Gossip: []string{RateLimitGossip},
		},
		{
			Service: ServiceAPI, Owns: []string{Control},
			Reads:   []string{Ingest, Policy, Guardian, Budgets},
			Buckets: []string{KeyUsageBucket, IdempotencyBucket, ConsoleSessionsBucket},
			Calls:   []string{EvaluateRPC, DecideRPC, RedeemRPC, SignManifestRPC}, Gossip: []string{RateLimitGossip},
		},
		{
			Service: ServicePolicy, Owns: []string{Policy, Budgets}, Reads: []string{Ingest, Control, Risk},
			Buckets: []string{SessionLabelsBucket},
			Serves:  []string{EvaluateRPC},
		},
		{
			Service: ServiceGuardian, Owns: []string{Guardian}, Reads: []string{Policy},
			Serves: []string{DecideRPC, RedeemRPC},
		},
		{
			Service: ServiceRisk, Owns: []string{Risk}, Reads: []string{Policy, Control},
			// Risk reads wait for the policy service's event verdicts.
			Watches: []string{Ingest},
			Buckets: []string{RiskLeaseBucket, RiskCheckpointBucket},
			// Partition owners answer, and any instance's HTTP routes ask.
			Serves: []string{riskRPC}, Calls: []string{riskRPC},
		},
		{
			Service: ServiceLedger, Owns: []string{Ledger}, Reads: []string{Ingest, Control, Policy, Guardian, Risk},
			// It holds the deployment key: it signs agent manifests.
			Serves: []string{SignManifestRPC},
		},
		{
			Service: ServiceNotifier, Owns: []string{Notifier}, Writes: []string{AllChannelChanges},
			Reads:   []string{Control, Policy, Guardian, Risk},
			Buckets: []string{IdempotencyBucket},
		},
	}
}

// StreamSubjects returns the subjects of the named stream as its owner
// defines them, or nil for a name this package does not define.
func StreamSubjects(name string) []string {
	cfgs := map[string]func(Options) []string{
		Ingest:   func(o Options) []string { return IngestConfig(o).Subjects },
		Control:  func(o Options) []string { return ControlConfig(o).Subjects },
		Policy:   func(o Options) []string { return PolicyConfig(o).Subjects },
		Budgets:  func(o Options) []string { return BudgetsConfig(o).Subjects },
		Guardian: func(o Options) []string { return GuardianConfig(o).Subjects },
		Risk:     func(o Options) []string { return RiskConfig(o).Subjects },
		Ledger:   func(o Options) []string { return LedgerConfig(o).Subjects },
		Notifier: func(o Options) []string { return NotifierConfig(o).Subjects },
	}
	f, ok := cfgs[name]
	if !ok {
		return nil
	}
	return f(DefaultOptions)
}

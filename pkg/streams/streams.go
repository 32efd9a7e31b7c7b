// Package streams is the single place where Vigil's JetStream streams and
// subjects are defined. Subjects follow
// <subsystem>.v1.<event_name>.<tenant>.<entity>; request/reply subjects live
// under rpc.<service>.v1.<verb>, which no stream captures.
package streams

import (
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream names, one per producing service.
const (
	Ingest  = "INGEST"
	Control = "CONTROL"
)

// Event names, past-tense facts.
const (
	// EventReceived is an accepted agent event (payload: event.Record).
	EventReceived = "event_received"
	// AgentChanged carries the full state of an agent after a change
	// (payload: agent.Change). One subject per agent, so the last message
	// on it is the agent's current state.
	AgentChanged = "agent_changed"
	// KeyChanged carries the full state of an API key after a change
	// (payload: auth.KeyRecord).
	KeyChanged = "key_changed"
)

// Token encodes an identifier as one NATS subject token. Identifiers made
// only of letters, digits, '_' and '-' are used verbatim, which keeps
// subjects readable; anything else is "~" + unpadded base64url, which is
// reversible and cannot collide with a verbatim token. The empty id is
// "~", since a subject token may not be empty.
func Token(id string) string {
	if id == "" {
		return "~"
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "~" + base64.RawURLEncoding.EncodeToString([]byte(id))
		}
	}
	return id
}

// Untoken reverses Token.
func Untoken(tok string) (string, error) {
	if !strings.HasPrefix(tok, "~") {
		return tok, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok[1:])
	return string(b), err
}

func subject(subsystem, name, tenant, entity string) string {
	return subsystem + ".v1." + name + "." + tenant + "." + Token(entity)
}

// EventReceivedSubject is where an accepted event of agentID is published.
func EventReceivedSubject(tenant, agentID string) string {
	return subject("ingest", EventReceived, tenant, agentID)
}

// AgentSubject is the subject holding agentID's state history.
func AgentSubject(tenant, agentID string) string {
	return subject("control", AgentChanged, tenant, agentID)
}

// KeySubject is the subject holding an API key's state history.
func KeySubject(tenant, keyID string) string { return subject("control", KeyChanged, tenant, keyID) }

// EventsProjector is the durable consumer that projects INGEST into the
// ClickHouse events table (owned by services/ingest); every event at or
// below its ack floor can be read from the table.
const EventsProjector = "ingest-events-projector"

// AllEventsReceived filters every accepted event of every tenant.
const AllEventsReceived = "ingest.v1." + EventReceived + ".>"

// AllAgentChanges filters every agent change of every tenant.
const AllAgentChanges = "control.v1." + AgentChanged + ".>"

// AllKeyChanges filters every key change of every tenant.
const AllKeyChanges = "control.v1." + KeyChanged + ".>"

// Options tune stream definitions per deployment.
type Options struct {
	// Replicas is 1 on a single node, 3 on a NATS cluster.
	Replicas int
	// DuplicateWindow is how long JetStream remembers message ids for
	// dedupe. Repeats older than this are absorbed by the idempotent
	// projections instead.
	DuplicateWindow time.Duration
	// IngestMaxAge bounds how long raw events stay replayable.
	IngestMaxAge time.Duration
}

// DefaultOptions suit one node.
var DefaultOptions = Options{Replicas: 1, DuplicateWindow: 10 * time.Minute, IngestMaxAge: 30 * 24 * time.Hour}

func (o Options) withDefaults() Options {
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = DefaultOptions.DuplicateWindow
	}
	if o.IngestMaxAge <= 0 {
		o.IngestMaxAge = DefaultOptions.IngestMaxAge
	}
	return o
}

// base is what every Vigil stream shares: file storage, limits retention,
// all subjects of its subsystem, and the deployment's dedupe window and
// replicas. o must have its defaults applied.
func (o Options) base(name, description, subsystem string) jetstream.StreamConfig {
	return jetstream.StreamConfig{
		Name:        name,
		Description: description,
		Subjects:    []string{subsystem + ".v1.>"},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		Duplicates:  o.DuplicateWindow,
		Replicas:    o.Replicas,
	}
}

// IngestConfig defines the INGEST stream, owned by services/ingest.
func IngestConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Ingest, "Accepted agent events", "ingest")
	sc.MaxAge = o.IngestMaxAge
	sc.Discard = jetstream.DiscardOld
	return sc
}

// ControlConfig defines the CONTROL stream, owned by services/api. Control
// state is kept forever: it is small and it is the audit trail.
func ControlConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Control, "Control-plane state changes: agents, keys, and later policies, channels, settings", "control")
	sc.AllowDirect = true
	return sc
}

// Policy stream and its subjects, owned by services/policy.
const (
	Policy = "POLICY"
	// DecisionRecorded is a decision the policy service made (payload:
	// policy.DecisionRecord), recorded before it is returned.
	DecisionRecorded = "decision_recorded"
	// AllDecisions filters every recorded decision of every tenant.
	AllDecisions = "policy.v1." + DecisionRecorded + ".>"
	// DecisionRejected is a decision request refused before deciding
	// because it violated a policy's declared inputs (payload:
	// policy.RejectedRequest). Nothing was decided; the audit log shows it.
	DecisionRejected = "decision_rejected"
	// AllRejections filters every rejected decision request.
	AllRejections = "policy.v1." + DecisionRejected + ".>"
)

// DecisionSubject is where a decision about agentID with outcome (allow,
// warn, require_approval, block) is recorded:
// policy.v1.decision_recorded.<tenant>.<agent>.<outcome>.<shard>.
//
// The outcome is in the subject so that a consumer acting on some
// outcomes only (guardian intake, the notifier, the judge) filters on it
// and the server never delivers it the others (DecisionsWithOutcome).
// The shard (DecisionShard, 0–15) is in it so that a risk partition,
// which owns a fixed set of agents, filters on the shards holding them
// and the server never delivers it the other partitions' decisions
// (DecisionsOfPartition).
//
// Two older forms stay on POLICY until they age out, and every filter
// here still matches them: <tenant>.<agent> (LegacyDecisions, before the
// outcome) and <tenant>.<agent>.<outcome> (OutcomeDecisions, before the
// shard).
func DecisionSubject(tenant, agentID, outcome string) string {
	// One concatenation: one allocation per decision recorded.
	return "policy.v1." + DecisionRecorded + "." + tenant + "." + Token(agentID) + "." + Token(outcome) + "." + shardTokens[DecisionShard(tenant, agentID)]
}

// DecisionShards is how many shards decisions are spread over by agent.
// A risk partition count that divides it gets exactly its own decisions
// from the server; any other count gets a superset (DecisionsOfPartition).
const DecisionShards = 16

var shardTokens = func() (t [DecisionShards]string) {
	for i := range t {
		t[i] = strconv.Itoa(i)
	}
	return t
}()

// AgentHash is the FNV-1a hash of "tenant/agentID": what places an agent
// in its decision shard (hash mod DecisionShards) and its risk partition
// (hash mod the partition count), so that the two agree for every count.
func AgentHash(tenant, agentID string) uint32 {
	// Inlined FNV-1a (hash/fnv's, without the allocation of its hasher):
	// it runs on every decision recorded.
	const offset, prime = 2166136261, 16777619
	h := uint32(offset)
	for i := 0; i < len(tenant); i++ {
		h = (h ^ uint32(tenant[i])) * prime
	}
	h = (h ^ '/') * prime
	for i := 0; i < len(agentID); i++ {
		h = (h ^ uint32(agentID[i])) * prime
	}
	return h
}

// DecisionShard is the shard of the decisions about agentID: AgentHash
// modulo DecisionShards. agentID is the id as given to DecisionSubject
// (before Token), which is what ParseDecisionSubject's agent token
// untokens to.
func DecisionShard(tenant, agentID string) int {
	return int(AgentHash(tenant, agentID) % DecisionShards)
}

// LegacyDecisions filters the decisions recorded before the outcome was a
// token of their subject (policy.v1.decision_recorded.<tenant>.<agent>).
// It matches no decision recorded since.
const LegacyDecisions = "policy.v1." + DecisionRecorded + ".*.*"

// OutcomeDecisions filters the decisions recorded after the outcome and
// before the shard was a token of their subject
// (policy.v1.decision_recorded.<tenant>.<agent>.<outcome>). It matches no
// decision recorded since.
const OutcomeDecisions = "policy.v1." + DecisionRecorded + ".*.*.*"

// DecisionsWithOutcome filters the recorded decisions of every tenant
// with one of outcomes, in the current form and in the form before the
// shard, plus every decision recorded before the outcome was in the
// subject (LegacyDecisions: a consumer tells those by their Vigil-Outcome
// header or by decoding them). The filters do not overlap (each form has
// its own number of tokens), as a consumer's FilterSubjects must not.
func DecisionsWithOutcome(outcomes ...string) []string {
	fs := []string{LegacyDecisions}
	for _, o := range outcomes {
		fs = append(fs, "policy.v1."+DecisionRecorded+".*.*."+Token(o), "policy.v1."+DecisionRecorded+".*.*."+Token(o)+".*")
	}
	return fs
}

// DecisionsOfPartition filters the decisions that risk partition idx of n
// (the owner of the agents whose AgentHash mod n is idx) must read: the
// shards that can hold its agents, and every decision recorded before the
// shard was in the subject (LegacyDecisions, OutcomeDecisions: the
// partition tells its own from their agent token). With g = gcd(n,
// DecisionShards) the shards are those s with s mod g = idx mod g: when n
// divides DecisionShards (1, 2, 4, 8, 16 partitions) they hold exactly
// the partition's agents; otherwise they hold its agents and some of
// other partitions' (all of them when g is 1), which it passes over as
// before. The filters do not overlap.
func DecisionsOfPartition(idx, n int) []string {
	g := gcd(n, DecisionShards)
	if g <= 1 {
		return []string{AllDecisions}
	}
	fs := []string{LegacyDecisions, OutcomeDecisions}
	for s := idx % g; s < DecisionShards; s += g {
		fs = append(fs, "policy.v1."+DecisionRecorded+".*.*.*."+shardTokens[s])
	}
	return fs
}

func gcd(a, b int) int {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

// ParseDecisionSubject reads a recorded decision's subject: its tenant
// token, its agent token (still a Token: see Untoken) and its outcome (""
// on a decision recorded before the outcome was in the subject). The
// shard token, when there is one, is checked for form only: the agent
// determines it. ok is false for any other subject.
func ParseDecisionSubject(subj string) (tenant, agentTok, outcome string, ok bool) {
	rest, ok := strings.CutPrefix(subj, "policy.v1."+DecisionRecorded+".")
	if !ok {
		return "", "", "", false
	}
	tenant, rest, ok = strings.Cut(rest, ".")
	if !ok || tenant == "" {
		return "", "", "", false
	}
	agentTok, rest, hasOutcome := strings.Cut(rest, ".")
	if agentTok == "" {
		return "", "", "", false
	}
	if !hasOutcome {
		return tenant, agentTok, "", true
	}
	outcome, shard, hasShard := strings.Cut(rest, ".")
	if outcome == "" || hasShard && !validShard(shard) {
		return "", "", "", false
	}
	return tenant, agentTok, outcome, true
}

// validShard reports whether tok is a shard token: 0 to DecisionShards-1
// in decimal, without leading zeros.
func validShard(tok string) bool {
	n, err := strconv.Atoi(tok)
	return err == nil && n >= 0 && n < DecisionShards && shardTokens[n] == tok
}

// RejectionSubject is where a refused decision request of agentID is
// recorded.
func RejectionSubject(tenant, agentID string) string {
	return subject("policy", DecisionRejected, tenant, agentID)
}

// TenantDecisions filters every recorded decision of one tenant.
func TenantDecisions(tenant string) string {
	return "policy.v1." + DecisionRecorded + "." + tenant + ".>"
}

// HeaderDecisionID carries the decision id on every recorded decision, so
// a reader can find a decision on POLICY from its headers alone (the
// message id is the event's for event verdicts).
const HeaderDecisionID = "Vigil-Decision-Id"

// HeaderOutcome carries a recorded decision's outcome (allow, warn,
// require_approval, block), so a consumer that acts on some outcomes only
// (guardian intake, notifier) passes over the rest without decoding the
// record. Decisions recorded before it existed lack it and are decoded.
const HeaderOutcome = "Vigil-Outcome"

// DecisionsProjector is the durable consumer that projects recorded
// decisions into ClickHouse (owned by services/policy). Every decision at
// or below its ack floor is in the decisions table, which is what lets a
// reader tell "not projected yet" from "unknown".
const DecisionsProjector = "policy-decisions-projector"

// EventVerdicts is the policy service's durable consumer that judges every
// ingested event and records the verdict on POLICY before acking it: at
// or below its ack floor every event of INGEST has its verdict on POLICY.
const EventVerdicts = "policy-event-verdicts"

// Control-plane facts about policies, owned by services/api.
const (
	// PolicyChanged carries a policy's full state after a change.
	PolicyChanged = "policy_changed"
	// OrgPolicyChanged carries a tenant's org allow/block list.
	OrgPolicyChanged = "org_policy_changed"
	// VerdictTriaged carries a human's triage of one decision.
	VerdictTriaged = "verdict_triaged"
)

// PolicySubject holds a policy's version history.
func PolicySubject(tenant, id string) string { return subject("control", PolicyChanged, tenant, id) }

// OrgPolicySubject holds a tenant's org policy history.
func OrgPolicySubject(tenant string) string {
	return subject("control", OrgPolicyChanged, tenant, "org")
}

// TriageSubject holds a decision's triage history.
func TriageSubject(tenant, decisionID string) string {
	return subject("control", VerdictTriaged, tenant, decisionID)
}

// AllTriage filters every triage of every tenant.
const AllTriage = "control.v1." + VerdictTriaged + ".>"

// EvaluateRPC is the request/reply subject of the policy service.
const EvaluateRPC = "rpc.policy.v1.evaluate"

// SignManifestRPC is the ledger's request/reply subject that signs an
// agent manifest with the ledger key.
const SignManifestRPC = "rpc.ledger.v1.sign_manifest"

// PolicyConfig defines the POLICY stream, owned by services/policy.
func PolicyConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Policy, "Decisions and verdicts, recorded before they are returned", "policy")
	sc.MaxAge = o.IngestMaxAge
	return sc
}

// Guardian stream and its subjects, owned by services/guardian.
const (
	Guardian = "GUARDIAN"
	// ApprovalChanged carries a pending action's full state after a change
	// (payload: approval.Change); one subject per action, so its last
	// message is its state and decisions are compare-and-set.
	ApprovalChanged = "approval_changed"
	// AllApprovals filters every pending action of every tenant.
	AllApprovals = "guardian.v1." + ApprovalChanged + ".>"
	// DecideRPC is the guardian's request/reply subject for decisions.
	DecideRPC = "rpc.guardian.v1.decide"
	// RedeemRPC is the guardian's request/reply subject for redeeming an
	// approved decision.
	RedeemRPC = "rpc.guardian.v1.redeem"
)

// ApprovalSubject holds a pending action's history.
func ApprovalSubject(tenant, id string) string {
	return subject("guardian", ApprovalChanged, tenant, id)
}

// GuardianConfig defines the GUARDIAN stream, owned by services/guardian.
// It keeps every approval's history: it is audit evidence.
func GuardianConfig(o Options) jetstream.StreamConfig {
	o = o.withDefaults()
	sc := o.base(Guardian, "Pending actions: requested, resolved, expired, rerouted", "guardian")
	sc.AllowDirect = true
	return sc
}

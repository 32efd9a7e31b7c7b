package policy

import (
	"time"

	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
)

// EvaluateEndpoint is the policy service's decision RPC: the api calls it,
// the policy service handles it, both through this one definition. The
// policy service records the decision only while its caller still waits,
// so a caller that gave up ("no decision was made") is telling the truth.
var EvaluateEndpoint = rpc.Endpoint[EvaluateRequest, DecisionRecord]{
	Name: "evaluate", Subject: streams.EvaluateRPC,
	Service: "policy service", NotDone: "no decision was made",
	MaxWait: 10 * time.Second,
	// A decision waits for POLICY's ack before it answers: one at a time,
	// that wait queues every decision behind it (issue 16's p99). Each
	// decision is independent (budgets count through the KV's own
	// dedupe, event verdicts already decide concurrently).
	Instances: 16,
}

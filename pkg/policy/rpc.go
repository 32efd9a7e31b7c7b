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
}

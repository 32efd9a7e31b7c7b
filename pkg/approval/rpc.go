package approval

import (
	"time"

	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
)

// DecideEndpoint is the guardian's RPC that approves, rejects or reroutes
// a pending action; the api calls it, the guardian handles it, both
// through this one definition.
var DecideEndpoint = rpc.Endpoint[DecideRequest, Action]{
	Name: "decide", Subject: streams.DecideRPC,
	Service: "guardian service", NotDone: "the action was not decided",
	MaxWait: 10 * time.Second,
}

// RedeemEndpoint is the guardian's RPC that redeems an approved decision
// exactly once (compare-and-set on the action's subject).
var RedeemEndpoint = rpc.Endpoint[RedeemRequest, Action]{
	Name: "redeem", Subject: streams.RedeemRPC,
	Service: "guardian service", NotDone: "the decision was not redeemed",
	MaxWait: 10 * time.Second,
}

package agent

import (
	"time"

	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/pkg/streams"
)

// SignRequest asks the ledger to sign a manifest.
type SignRequest struct {
	Manifest Manifest `json:"manifest"`
}

// SignResponse is the manifest's hash and the ledger key's signature over
// its canonical bytes, both computed by the ledger.
type SignResponse struct {
	ManifestHash      string `json:"manifestHash"`
	ManifestSignature string `json:"manifestSignature"`
}

// SignEndpoint is the ledger's manifest-signing RPC. The deployment key
// stays in the ledger: the api asks it to sign each registered or
// changed manifest before recording the agent, and only the api may ask
// (streams.Accesses).
var SignEndpoint = rpc.Endpoint[SignRequest, SignResponse]{
	Name: "sign_manifest", Subject: streams.SignManifestRPC,
	Service: "ledger service", NotDone: "the agent was not recorded",
	MaxWait: 5 * time.Second,
}

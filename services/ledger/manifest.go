package ledger

import (
	"context"

	"github.com/nats-io/nats.go/micro"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/rpc"
	"github.com/vigilhq/vigil/services/ledger/evidence"
)

// SignManifest hashes and signs an agent manifest with the ledger key
// (the key GET /v1/ledger/key publishes). The ledger computes the
// canonical bytes itself; the caller compares the hash with its own.
func (s *Service) SignManifest(_ context.Context, req agent.SignRequest) (agent.SignResponse, error) {
	canonical, err := req.Manifest.Canonical()
	if err != nil {
		return agent.SignResponse{}, err
	}
	hash, err := req.Manifest.Hash()
	if err != nil {
		return agent.SignResponse{}, err
	}
	sig, err := evidence.SignAgentManifest(s.keys.Signer, canonical)
	if err != nil {
		return agent.SignResponse{}, err
	}
	return agent.SignResponse{ManifestHash: hash, ManifestSignature: sig}, nil
}

// startRPC serves the manifest-signing endpoint until ctx ends.
func (s *Service) startRPC(ctx context.Context) error {
	srv, err := rpc.Serve(s.deps.JS.Conn(), "vigil-ledger", "Agent manifest signatures with the ledger key", func(svc micro.Service) error {
		return agent.SignEndpoint.Handle(svc, s.log, s.SignManifest)
	})
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		_ = srv.Stop()
	}()
	return nil
}

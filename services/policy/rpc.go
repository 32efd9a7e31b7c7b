package policy

import (
	"github.com/nats-io/nats.go/micro"

	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/rpc"
)

func (s *Service) serveRPC() (micro.Service, error) {
	srv, err := rpc.Serve(s.deps.NC, "vigil-policy", "Policy decisions", func(svc micro.Service) error {
		return rules.EvaluateEndpoint.Handle(svc, s.log, s.Decide)
	}, rpc.Tracing(s.deps.Tracer))
	if err == nil && s.deps.Local != nil {
		// Callers in this process (the api of an all-in-one) decide here
		// without the NATS round trip; the same Decide, the same state.
		s.unlocal = rules.EvaluateEndpoint.HandleLocal(s.deps.Local, s.log, s.deps.Tracer, s.Decide)
	}
	return srv, err
}

// stopRPC stops answering decision requests, in process and over NATS;
// in-flight requests finish.
func (s *Service) stopRPC(srv micro.Service) error {
	if s.unlocal != nil {
		s.unlocal()
	}
	return srv.Stop()
}

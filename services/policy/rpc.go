package policy

import (
	"github.com/nats-io/nats.go/micro"

	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/rpc"
)

func (s *Service) serveRPC() (micro.Service, error) {
	return rpc.Serve(s.deps.NC, "vigil-policy", "Policy decisions", func(svc micro.Service) error {
		return rules.EvaluateEndpoint.Handle(svc, s.log, s.Decide)
	}, rpc.Tracing(s.deps.Tracer))
}

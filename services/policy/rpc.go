package policy

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"

	"github.com/nats-io/nats.go/micro"

	"github.com/vigilhq/vigil/pkg/apperr"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// RPC error codes carried in the Nats-Service-Error-Code header.
const (
	RPCBadRequest  = "400"
	RPCUnavailable = "503"
	RPCInternal    = "500"
)

func (s *Service) serveRPC() (micro.Service, error) {
	srv, err := micro.AddService(s.deps.NC, micro.Config{
		Name: "vigil-policy", Version: "1.0.0", Description: "Policy decisions",
		QueueGroup: "vigil-policy",
	})
	if err != nil {
		return nil, err
	}
	err = srv.AddEndpoint("evaluate", micro.HandlerFunc(s.handleEvaluate), micro.WithEndpointSubject(streams.EvaluateRPC))
	if err != nil {
		_ = srv.Stop()
		return nil, err
	}
	return srv, nil
}

func (s *Service) handleEvaluate(r micro.Request) {
	var req rules.EvaluateRequest
	if err := json.Unmarshal(r.Data(), &req); err != nil {
		_ = r.Error(RPCBadRequest, "request is not a valid EvaluateRequest", nil)
		return
	}
	rec, err := s.Decide(context.Background(), req)
	if err != nil {
		code := RPCInternal
		switch apperr.KindOf(err) {
		case apperr.KindValidation:
			code = RPCBadRequest
		case apperr.KindUnavailable:
			code = RPCUnavailable
		}
		if code == RPCInternal {
			s.log.Error("decide", slog.String("error", err.Error()))
		}
		// A validation error's field details travel as the body, so the
		// api answers with the same details the policy service found.
		var body []byte
		if ae := (*apperr.Error)(nil); errors.As(err, &ae) && code == RPCBadRequest && len(ae.Details) > 0 {
			body, _ = json.Marshal(ae.Details)
		}
		_ = r.Error(code, err.Error(), body)
		return
	}
	if err := r.RespondJSON(rec); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("reply", slog.String("error", err.Error()))
	}
}

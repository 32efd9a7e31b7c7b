package ingest

import (
	"bytes"
	"compress/gzip"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/event"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/services/ingest/internal/otelspan"
)

// errUnsupportedMedia is a body in an encoding or compression OTLP/HTTP
// does not define: 415.
type errUnsupportedMedia struct{ msg string }

func (e errUnsupportedMedia) Error() string { return e.msg }

// otlpEncoding is the body encoding of an OTLP request, from its
// Content-Type.
func otlpEncoding(h http.Header) (string, error) {
	mt, _, err := mime.ParseMediaType(h.Get(echo.HeaderContentType))
	if err == nil && (mt == otelspan.Protobuf || mt == otelspan.JSON) {
		return mt, nil
	}
	return "", errUnsupportedMedia{fmt.Sprintf("Content-Type must be %s or %s", otelspan.Protobuf, otelspan.JSON)}
}

// otlpErrors answers every error of the OTLP route (those of the
// authentication and permission middleware too) the way OTLP/HTTP
// clients expect: the status code of Vigil's envelope for the same error,
// Retry-After on 429 and 503 (which exporters retry), and a
// google.rpc.Status body in the request's encoding (protobuf unless the
// request was JSON) in place of the envelope.
func (s *Service) otlpErrors(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		err := next(c)
		if err == nil || c.Response().Committed {
			return err
		}
		enc := otelspan.Protobuf
		if e, err := otlpEncoding(c.Request().Header); err == nil {
			enc = e
		}
		var (
			ae     *apperr.Error
			um     errUnsupportedMedia
			status int
			msg    string
		)
		switch {
		case errors.As(err, &um):
			status, msg = http.StatusUnsupportedMediaType, um.msg
		case errors.As(err, &ae):
			status, msg = httpkit.StatusOf(ae.Kind), ae.Message
			for _, d := range ae.Details {
				msg += "; " + d.Error()
			}
			if ae.RetryAfter > 0 {
				c.Response().Header().Set("Retry-After", strconv.Itoa(max(1, int(ae.RetryAfter.Seconds()+0.999))))
			}
		default:
			var he *echo.HTTPError
			if errors.As(err, &he) {
				status, msg = he.Code, http.StatusText(he.Code)
			} else {
				status, msg = http.StatusInternalServerError, "internal error"
			}
		}
		if status >= 500 {
			s.log.Error("otlp traces request failed", slog.Int("status", status), slog.String("error", err.Error()))
		}
		return s.otlpAnswer(c, enc, status, &rpcstatus.Status{Code: int32(rpcCode(status)), Message: msg})
	}
}

// rpcCode is the gRPC code OTLP pairs with an HTTP status.
func rpcCode(status int) code.Code {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return code.Code_INVALID_ARGUMENT
	case http.StatusUnauthorized:
		return code.Code_UNAUTHENTICATED
	case http.StatusForbidden:
		return code.Code_PERMISSION_DENIED
	case http.StatusNotFound:
		return code.Code_NOT_FOUND
	case http.StatusRequestEntityTooLarge:
		return code.Code_OUT_OF_RANGE
	case http.StatusTooManyRequests:
		return code.Code_RESOURCE_EXHAUSTED
	case http.StatusServiceUnavailable:
		return code.Code_UNAVAILABLE
	}
	return code.Code_INTERNAL
}

func (s *Service) otlpAnswer(c echo.Context, enc string, status int, m proto.Message) error {
	body, err := otelspan.Encode(enc, m)
	if err != nil {
		return fmt.Errorf("otlp: encode response: %w", err)
	}
	return c.Blob(status, enc, body)
}

// readOTLPBody reads the body, inflating gzip, with the batch size limit
// applying to both the compressed and the inflated bytes.
func (s *Service) readOTLPBody(c echo.Context) ([]byte, error) {
	body, err := httpkit.ReadBody(c, s.cfg.MaxBatchBodyBytes)
	if err != nil {
		return nil, err
	}
	switch ce := strings.ToLower(strings.TrimSpace(c.Request().Header.Get(echo.HeaderContentEncoding))); ce {
	case "", "identity":
		return body, nil
	case "gzip":
		zr, err := gzip.NewReader(bytes.NewReader(body))
		if err != nil {
			return nil, apperr.Validation("body is not valid gzip: " + err.Error())
		}
		out, err := io.ReadAll(io.LimitReader(zr, s.cfg.MaxBatchBodyBytes+1))
		if err != nil {
			return nil, apperr.Validation("body is not valid gzip: " + err.Error())
		}
		if int64(len(out)) > s.cfg.MaxBatchBodyBytes {
			return nil, apperr.TooLarge(fmt.Sprintf("inflated request body must be at most %d bytes", s.cfg.MaxBatchBodyBytes))
		}
		return out, nil
	default:
		return nil, errUnsupportedMedia{fmt.Sprintf("Content-Encoding %q is not supported (use gzip or none)", ce)}
	}
}

// maxRejectMessages bounds the reasons listed in partialSuccess.errorMessage.
const maxRejectMessages = 5

// postTraces is the OTLP/HTTP trace receiver: every span becomes one
// event, stored through the same path as a batch of events.
func (s *Service) postTraces(c echo.Context) error {
	enc, err := otlpEncoding(c.Request().Header)
	if err != nil {
		return err
	}
	body, err := s.readOTLPBody(c)
	if err != nil {
		return err
	}
	req, err := otelspan.Decode(enc, body)
	if err != nil {
		return apperr.Validation("bad OTLP export request: " + err.Error())
	}
	n := otelspan.Spans(req)
	if n > s.cfg.MaxBatch {
		return apperr.TooLarge(fmt.Sprintf("an export request holds at most %d spans (this one has %d): lower the exporter's batch size", s.cfg.MaxBatch, n))
	}
	out := &coltrace.ExportTraceServiceResponse{}
	if n == 0 {
		return s.otlpAnswer(c, enc, http.StatusOK, out)
	}
	def, err := defaultAgent(httpkit.Principal(c), c.Request().Header)
	if err != nil {
		return err
	}
	items := make([]item, 0, n)
	otelspan.Each(req, func(path string, sp otelspan.Span) {
		raw, err := otelspan.Event(sp, def)
		if err != nil {
			var me *otelspan.MappingError
			if errors.As(err, &me) {
				err = apperr.Validation(me.Msg)
			}
		}
		items = append(items, item{ev: event.NewItem(raw), err: err, path: path})
	})
	resp, err := s.storeItems(c, items)
	if err != nil {
		return err
	}
	if resp.Failed > 0 {
		// Retrying the whole request is safe: the stored spans come back
		// as duplicates of themselves.
		return apperr.Unavailable(fmt.Sprintf("%d of %d spans were not stored; retry", resp.Failed, n), time.Second, nil)
	}
	if resp.Rejected > 0 {
		var msgs []string
		for i, r := range resp.Results {
			if r.Status != StatusRejected || len(msgs) == maxRejectMessages {
				continue
			}
			m := items[i].path + " " + r.Error.Message
			for _, d := range r.Error.Details {
				m += " (" + d.Path + ": " + d.Message + ")"
			}
			msgs = append(msgs, m)
		}
		msg := fmt.Sprintf("%d of %d spans rejected: %s", resp.Rejected, n, strings.Join(msgs, "; "))
		if resp.Rejected > len(msgs) {
			msg += "; …"
		}
		out.PartialSuccess = &coltrace.ExportTracePartialSuccess{RejectedSpans: int64(resp.Rejected), ErrorMessage: msg}
	}
	return s.otlpAnswer(c, enc, http.StatusOK, out)
}

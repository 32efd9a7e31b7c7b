// Package httpkit is the echo (v4) kit every Vigil HTTP service shares:
// server construction, the one error envelope, bearer-key authentication
// with tenant checks, role checks, and cursor pagination.
package httpkit

import (
	"errors"
	"log/slog"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Body is the error envelope. It satisfies all three upstream APIs at once:
// Kaplaix clients read error.code / error.message / error.details, KLA and
// Kaizen clients read the top-level code and message.
type Body struct {
	Error     Detail `json:"error"`
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"requestId,omitempty"`
}

// Detail is the Kaplaix-style inner error.
type Detail struct {
	Code    string              `json:"code"`
	Message string              `json:"message"`
	Details []apperr.FieldError `json:"details"`
}

type mapping struct {
	status int
	code   string // Kaplaix style, inside "error"
	short  string // KLA style, top level
}

var mappings = map[apperr.Kind]mapping{
	apperr.KindValidation:      {http.StatusBadRequest, "VALIDATION_ERROR", "invalid_request"},
	apperr.KindUnauthenticated: {http.StatusUnauthorized, "AUTHENTICATION_FAILED", "unauthorized"},
	apperr.KindForbidden:       {http.StatusForbidden, "FORBIDDEN", "forbidden"},
	apperr.KindNotFound:        {http.StatusNotFound, "NOT_FOUND", "not_found"},
	apperr.KindConflict:        {http.StatusConflict, "CONFLICT", "conflict"},
	apperr.KindTooLarge:        {http.StatusRequestEntityTooLarge, "PAYLOAD_TOO_LARGE", "payload_too_large"},
	apperr.KindRateLimited:     {http.StatusTooManyRequests, "RATE_LIMITED", "rate_limited"},
	// KLA documents one code for every 5xx, internal_error; Vigil's finer
	// one (unavailable: retry, nothing is lost) stays in error.code and
	// in details[].code.
	apperr.KindUnavailable: {http.StatusServiceUnavailable, "SERVICE_UNAVAILABLE", "internal_error"},
	apperr.KindInternal:    {http.StatusInternalServerError, "INTERNAL_ERROR", "internal_error"},
}

// fromStatus maps echo's own errors (unknown route, wrong method, body
// too large) onto a kind.
func fromStatus(status int) apperr.Kind {
	switch status {
	case http.StatusBadRequest, http.StatusUnsupportedMediaType:
		return apperr.KindValidation
	case http.StatusUnauthorized:
		return apperr.KindUnauthenticated
	case http.StatusForbidden:
		return apperr.KindForbidden
	case http.StatusNotFound:
		return apperr.KindNotFound
	case http.StatusMethodNotAllowed:
		return apperr.KindNotFound
	case http.StatusRequestEntityTooLarge:
		return apperr.KindTooLarge
	case http.StatusTooManyRequests:
		return apperr.KindRateLimited
	case http.StatusServiceUnavailable:
		return apperr.KindUnavailable
	}
	return apperr.KindInternal
}

// StatusOf is the HTTP status errors of kind k are answered with. The
// envelope's mapping is the one mapping; receivers that must answer in
// another protocol's body (OTLP's google.rpc.Status) read it here.
func StatusOf(k apperr.Kind) int { return mappings[k].status }

// DetailOf renders an error as the inner envelope, for per-item results.
func DetailOf(e *apperr.Error) Detail {
	det := e.Details
	if det == nil {
		det = []apperr.FieldError{}
	}
	return Detail{Code: mappings[e.Kind].code, Message: e.Message, Details: det}
}

// ErrorHandler renders every error returned by a handler in the envelope.
// It is the only place where errors become status codes. Server errors
// are logged at ERROR, except expected unavailability (503), which is
// logged once when it starts (NewServer also logs when it ends).
func ErrorHandler(log *slog.Logger) echo.HTTPErrorHandler {
	return errorHandler(log, newOutages(log))
}

func errorHandler(log *slog.Logger, down *outages) echo.HTTPErrorHandler {
	return func(err error, c echo.Context) {
		if c.Response().Committed {
			return
		}
		var (
			ae   *apperr.Error
			he   *echo.HTTPError
			kind = apperr.KindInternal
			msg  = "internal error"
			det  []apperr.FieldError
		)
		switch {
		case errors.As(err, &ae):
			kind, msg, det = ae.Kind, ae.Message, ae.Details
			if ae.RetryAfter > 0 {
				secs := int(ae.RetryAfter.Seconds() + 0.999)
				c.Response().Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			}
		case errors.As(err, &he):
			kind = fromStatus(he.Code)
			msg = http.StatusText(he.Code)
			if s, ok := he.Message.(string); ok && s != "" {
				msg = s
			}
		}
		m := mappings[kind]
		if he != nil && ae == nil && he.Code == http.StatusMethodNotAllowed {
			m.status = he.Code
		}
		switch {
		case kind == apperr.KindUnavailable:
			var cause error
			if ae != nil {
				cause = ae.Err
			}
			down.failed(metricRoute(c), msg, cause)
		case m.status >= 500:
			log.Error("request failed", slog.String("method", c.Request().Method),
				slog.String("path", c.Path()), slog.String("error", err.Error()))
		}
		if det == nil {
			det = []apperr.FieldError{}
		}
		if kind == apperr.KindUnavailable {
			det = append(det, apperr.FieldError{Path: "", Code: "unavailable", Message: "temporarily unavailable; retry after Retry-After"})
		}
		body := Body{
			Error: Detail{Code: m.code, Message: msg, Details: det},
			Code:  m.short, Message: msg,
			RequestID: c.Response().Header().Get(echo.HeaderXRequestID),
		}
		if c.Request().Method == http.MethodHead {
			_ = c.NoContent(m.status)
			return
		}
		_ = c.JSON(m.status, body)
	}
}

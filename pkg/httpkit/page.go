package httpkit

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/vigilhq/vigil/pkg/apperr"
)

// Page is the list envelope: Kaplaix's nextCursor (null on the last page)
// plus hasMore for clients that prefer a boolean.
type Page[T any] struct {
	Data       []T     `json:"data"`
	NextCursor *string `json:"nextCursor"`
	HasMore    bool    `json:"hasMore"`
}

// NewPage builds a page; next is encoded as the cursor when more follow.
func NewPage[T any](data []T, more bool, next any) Page[T] {
	if data == nil {
		data = []T{}
	}
	p := Page[T]{Data: data, HasMore: more}
	if more {
		s := EncodeCursor(next)
		p.NextCursor = &s
	}
	return p
}

// EncodeCursor makes an opaque cursor from a position.
func EncodeCursor(v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor reads the "cursor" query parameter into v; absent leaves v
// untouched. A cursor that does not decode is a validation error.
func DecodeCursor(c echo.Context, v any) error {
	s := c.QueryParam("cursor")
	if s == "" {
		return nil
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err == nil {
		err = json.Unmarshal(b, v)
	}
	if err != nil {
		return apperr.Validation("cursor is not valid", apperr.FieldError{Path: "cursor", Code: "invalid_format", Message: "cursor must be a nextCursor value returned by this endpoint"})
	}
	return nil
}

// Limit parses the "limit" query parameter: a positive integer, clamped
// to max (the upstream APIs document no maximum, so a client asking for
// more gets a full page rather than an error; hasMore and nextCursor say
// there is more). Not an integer, or below 1, is a validation error.
func Limit(c echo.Context, def, max int) (int, error) {
	s := c.QueryParam("limit")
	if s == "" {
		return def, nil
	}
	n, err := strconv.Atoi(s)
	if errors.Is(err, strconv.ErrRange) && n > 0 {
		err = nil // beyond int: clamped like any other large limit
	}
	if err == nil && n > max {
		return max, nil
	}
	if err != nil || n < 1 {
		return 0, apperr.Validation("limit is out of range", apperr.FieldError{Path: "limit", Code: "out_of_range", Message: fmt.Sprintf("limit must be an integer from 1 to %d", max)})
	}
	return n, nil
}

// bodyPresize is the largest declared Content-Length ReadBody allocates
// for up front; a larger body grows as it arrives, so that a client that
// announces a large body and sends none ties up no memory.
const bodyPresize = 1 << 20

// ReadBody reads at most max bytes of the request body. A body of a
// declared length (up to bodyPresize) is read into one buffer of that
// size, not grown from 512 bytes by doubling: ingest reads a batch body
// per request, and the growth (copies and zeroing) cost as much CPU as
// splitting the batch.
func ReadBody(c echo.Context, max int64) ([]byte, error) {
	r := http.MaxBytesReader(c.Response(), c.Request().Body, max)
	b, err := readAll(r, min(c.Request().ContentLength, max, bodyPresize))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, apperr.TooLarge(fmt.Sprintf("request body must be at most %d bytes", max))
		}
		return nil, apperr.Validation("could not read request body")
	}
	return b, nil
}

// readAll is io.ReadAll starting with a buffer of size+1 bytes (room to
// see the end of a body of the declared size without growing).
func readAll(r io.Reader, size int64) ([]byte, error) {
	if size <= 0 {
		return io.ReadAll(r)
	}
	b := make([]byte, 0, size+1)
	for {
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			return b, nil
		}
		if err != nil {
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // let append pick the growth
		}
	}
}

// DecodeJSON reads a JSON object of at most max bytes into v, rejecting
// unknown fields and trailing data with a validation error that names the
// problem.
func DecodeJSON(c echo.Context, max int64, v any) error {
	body, err := ReadBody(c, max)
	if err != nil {
		return err
	}
	return decodeStrict(body, v)
}

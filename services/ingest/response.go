package ingest

import (
	"strconv"

	"github.com/labstack/echo/v4"
)

// writeBatch answers resp with status code. A batch of stored events
// (no result carries an error) is encoded by hand into the bytes echo's
// encoding/json serializer writes (response_test.go checks it): encoding
// a hundred results by reflection cost as much as a tenth of the batch's
// CPU. Anything else, and ?pretty, goes through c.JSON.
func writeBatch(c echo.Context, code int, resp BatchResponse) error {
	if !pretty(c) {
		if buf, ok := resp.appendJSON(make([]byte, 0, 80+100*len(resp.Results))); ok {
			return c.JSONBlob(code, buf)
		}
	}
	return c.JSON(code, resp)
}

// pretty reports whether echo's c.JSON would indent the answer (?pretty,
// or debug mode). A request without a query string (every SDK's) skips
// parsing one: c.QueryParams builds a map even for none.
func pretty(c echo.Context) bool {
	if c.Echo().Debug {
		return true
	}
	if c.Request().URL.RawQuery == "" {
		return false
	}
	_, ok := c.QueryParams()["pretty"]
	return ok
}

// appendJSON appends resp as json.Encoder writes it (a trailing newline
// included); ok is false, and dst unusable, when a result carries an
// error or an event id that is not plain ASCII.
func (resp *BatchResponse) appendJSON(dst []byte) (_ []byte, ok bool) {
	dst = append(dst, `{"accepted":`...)
	dst = strconv.AppendInt(dst, int64(resp.Accepted), 10)
	dst = append(dst, `,"duplicates":`...)
	dst = strconv.AppendInt(dst, int64(resp.Duplicates), 10)
	dst = append(dst, `,"rejected":`...)
	dst = strconv.AppendInt(dst, int64(resp.Rejected), 10)
	dst = append(dst, `,"failed":`...)
	dst = strconv.AppendInt(dst, int64(resp.Failed), 10)
	if resp.Results == nil {
		return append(dst, ",\"results\":null}\n"...), true
	}
	dst = append(dst, `,"results":[`...)
	for i := range resp.Results {
		if i > 0 {
			dst = append(dst, ',')
		}
		if dst, ok = resp.Results[i].appendJSON(dst); !ok {
			return nil, false
		}
	}
	return append(dst, "]}\n"...), true
}

// writeResult answers r with status code, encoded by hand as writeBatch
// does (a single event's answer went through reflection otherwise).
func writeResult(c echo.Context, code int, r *Result) error {
	if !pretty(c) {
		if buf, ok := r.appendJSON(make([]byte, 0, 128)); ok {
			return c.JSONBlob(code, append(buf, '\n'))
		}
	}
	return c.JSON(code, r)
}

// appendJSON appends r as json.Marshal writes it; ok is false, and dst
// unusable, when r carries an error or an event id that is not plain
// ASCII.
func (r *Result) appendJSON(dst []byte) (_ []byte, ok bool) {
	if r.Error != nil || !plainASCII(r.EventID) || !plainASCII(r.Status) {
		return nil, false
	}
	dst = append(dst, `{"index":`...)
	dst = strconv.AppendInt(dst, int64(r.Index), 10)
	if r.EventID != "" {
		dst = append(dst, `,"eventId":"`...)
		dst = append(dst, r.EventID...)
		dst = append(dst, '"')
	}
	dst = append(dst, `,"status":"`...)
	dst = append(dst, r.Status...)
	dst = append(dst, `","accepted":`...)
	dst = strconv.AppendBool(dst, r.Accepted)
	dst = append(dst, `,"duplicate":`...)
	dst = strconv.AppendBool(dst, r.Duplicate)
	if r.Sequence != 0 {
		dst = append(dst, `,"sequence":`...)
		dst = strconv.AppendUint(dst, r.Sequence, 10)
	}
	return append(dst, '}'), true
}

// plainASCII reports whether encoding/json writes s as is between quotes.
func plainASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			return false
		}
	}
	return true
}

// Package idempotency makes POST retries safe: the first request with an
// Idempotency-Key is processed and its response stored (in a JetStream
// key-value bucket, shared by every replica, for 24 hours); a replay with
// the same key and body gets the stored response, the same key with a
// different body gets 409.
package idempotency

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/httpkit"
)

// Bucket is the key-value bucket holding stored responses.
const Bucket = "IDEMPOTENCY"

// Header is the request header clients send.
const Header = "Idempotency-Key"

// TTL is how long a key is remembered.
const TTL = 24 * time.Hour

// Store keeps idempotency records.
type Store struct{ kv jetstream.KeyValue }

// Open creates or binds the bucket.
func Open(ctx context.Context, js jetstream.JetStream, replicas int) (*Store, error) {
	kv, err := js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: Bucket, Description: "Idempotency-Key responses", TTL: TTL, History: 1,
		Storage: jetstream.FileStorage, Replicas: max(replicas, 1), MaxValueSize: 1 << 20,
	})
	if err != nil {
		return nil, fmt.Errorf("idempotency bucket: %w", err)
	}
	return &Store{kv: kv}, nil
}

type entry struct {
	BodyHash string `json:"bodyHash"`
	Done     bool   `json:"done"`
	Status   int    `json:"status,omitempty"`
	Type     string `json:"type,omitempty"`
	Body     []byte `json:"body,omitempty"`
}

func kvKey(tenant, route, key string) string {
	sum := sha256.Sum256([]byte(route + "\x00" + key))
	return tenant + "." + hex.EncodeToString(sum[:16])
}

// Middleware applies idempotency to the routes it wraps; it must run
// after authentication (keys are scoped to the caller's tenant).
func (s *Store) Middleware() echo.MiddlewareFunc {
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			key := c.Request().Header.Get(Header)
			if key == "" {
				return next(c)
			}
			if len(key) > 255 {
				return apperr.Validation("Idempotency-Key is too long", apperr.FieldError{Path: Header, Code: "too_long", Message: "at most 255 characters"})
			}
			body, err := io.ReadAll(io.LimitReader(c.Request().Body, 8<<20))
			if err != nil {
				return apperr.Validation("could not read request body")
			}
			c.Request().Body = io.NopCloser(bytes.NewReader(body))
			sum := sha256.Sum256(body)
			hash := hex.EncodeToString(sum[:])
			ctx := c.Request().Context()
			k := kvKey(httpkit.Principal(c).Tenant, c.Request().Method+" "+c.Path(), key)

			pending, _ := json.Marshal(entry{BodyHash: hash})
			rev, err := s.kv.Create(ctx, k, pending)
			if errors.Is(err, jetstream.ErrKeyExists) {
				return replay(c, s.kv, ctx, k, hash)
			}
			if err != nil {
				return apperr.Unavailable("idempotency store unavailable", time.Second, err)
			}

			rec := &recorder{ResponseWriter: c.Response().Writer}
			c.Response().Writer = rec
			herr := next(c)
			if herr != nil {
				// Errors are rendered by the central handler; a failed
				// request may be retried with the same key.
				_ = s.kv.Delete(context.WithoutCancel(ctx), k, jetstream.LastRevision(rev))
				return herr
			}
			status := c.Response().Status
			if status >= 500 {
				_ = s.kv.Delete(context.WithoutCancel(ctx), k, jetstream.LastRevision(rev))
				return nil
			}
			done, _ := json.Marshal(entry{BodyHash: hash, Done: true, Status: status, Type: c.Response().Header().Get(echo.HeaderContentType), Body: rec.buf.Bytes()})
			_, _ = s.kv.Update(context.WithoutCancel(ctx), k, done, rev)
			return nil
		}
	}
}

func replay(c echo.Context, kv jetstream.KeyValue, ctx context.Context, k, hash string) error {
	got, err := kv.Get(ctx, k)
	if err != nil {
		return apperr.Unavailable("idempotency store unavailable", time.Second, err)
	}
	var e entry
	if err := json.Unmarshal(got.Value(), &e); err != nil {
		return fmt.Errorf("idempotency record: %w", err)
	}
	if e.BodyHash != hash {
		return apperr.Conflict("Idempotency-Key was already used with a different request body")
	}
	if !e.Done {
		return apperr.Conflict("a request with this Idempotency-Key is still in progress; retry shortly")
	}
	c.Response().Header().Set("Idempotent-Replayed", "true")
	return c.Blob(e.Status, e.Type, e.Body)
}

type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

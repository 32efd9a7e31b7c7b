// Package idempotency makes POST retries safe: the first request with an
// Idempotency-Key is processed and its response stored (in a JetStream
// key-value bucket, shared by every replica, for 24 hours); a replay with
// the same key and body gets the stored response, the same key with a
// different body gets 409.
//
// A record belongs to one caller: it is keyed by tenant, principal (API
// key id or member), method, concrete request path, acting agent
// (X-Agent-Id) and the Idempotency-Key, so another principal sending the
// same key starts a request of its own instead of receiving someone else's
// response. Routes whose responses carry a secret (key creation) use
// Sealed: the stored body is encrypted under a key derived from the
// caller's bearer credential, which the server never stores, so neither a
// reader of the bucket nor anyone but the credential that made the request
// can recover it.
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
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Bucket is the key-value bucket holding stored responses.
const Bucket = streams.IdempotencyBucket

// Header is the request header clients send.
const Header = "Idempotency-Key"

// AgentHeader names the agent a request acts as; it is part of a record's
// scope so one key acting for two agents keeps two records.
const AgentHeader = "X-Agent-Id"

// TTL is how long a key is remembered.
const TTL = 24 * time.Hour

// ErrSealedElsewhere is the cause of the 409 answered when a sealed
// response is replayed with another credential of the same principal
// (a refreshed sign-in token): the secret it holds is not shown again.
var ErrSealedElsewhere = errors.New("idempotency: stored response is sealed to another credential")

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
	// Sealed holds the body encrypted to the caller's credential instead
	// of Body, for routes whose responses carry secrets.
	Sealed string `json:"sealed,omitempty"`
}

// scope is everything a record belongs to, besides its tenant.
func scope(c echo.Context, key string) string {
	p := httpkit.Principal(c)
	r := c.Request()
	return strings.Join([]string{p.Actor(), r.Method, r.URL.EscapedPath(), r.Header.Get(AgentHeader), key}, "\x00")
}

// kvKey hashes the scope so that no caller-chosen text reaches a subject.
func kvKey(tenant, scope string) string {
	sum := sha256.Sum256([]byte(scope))
	return tenant + "." + hex.EncodeToString(sum[:])
}

// credentialBox derives the sealing box from the bearer credential of the
// request; the credential is never stored, so only a request presenting
// it again opens what was sealed.
func credentialBox(c echo.Context) (*secretbox.Box, error) {
	cred := c.Request().Header.Get(echo.HeaderAuthorization)
	if cred == "" {
		return nil, errors.New("idempotency: no credential to seal to")
	}
	sum := sha256.Sum256([]byte(cred))
	return secretbox.New(sum[:], "idempotency response")
}

// Middleware applies idempotency to the routes it wraps; it must run
// after authentication (records are scoped to the caller).
func (s *Store) Middleware() echo.MiddlewareFunc { return s.middleware(false) }

// Sealed is Middleware for routes whose responses carry a secret: the
// stored response is sealed to the caller's credential (see the package
// comment).
func (s *Store) Sealed() echo.MiddlewareFunc { return s.middleware(true) }

func (s *Store) middleware(sealed bool) echo.MiddlewareFunc {
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
			k := kvKey(httpkit.Principal(c).Tenant, scope(c, key))
			var box *secretbox.Box
			if sealed {
				if box, err = credentialBox(c); err != nil {
					return fmt.Errorf("idempotency: %w", err)
				}
			}

			pending, _ := json.Marshal(entry{BodyHash: hash})
			rev, err := s.kv.Create(ctx, k, pending)
			if errors.Is(err, jetstream.ErrKeyExists) {
				return replay(ctx, c, s.kv, k, hash, box)
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
			done := entry{BodyHash: hash, Done: true, Status: status, Type: c.Response().Header().Get(echo.HeaderContentType)}
			if box != nil {
				done.Sealed = box.Seal(rec.buf.Bytes(), k)
			} else {
				done.Body = rec.buf.Bytes()
			}
			raw, _ := json.Marshal(done)
			_, _ = s.kv.Update(context.WithoutCancel(ctx), k, raw, rev)
			return nil
		}
	}
}

func replay(ctx context.Context, c echo.Context, kv jetstream.KeyValue, k, hash string, box *secretbox.Box) error {
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
	body := e.Body
	if e.Sealed != "" {
		if box == nil {
			return fmt.Errorf("idempotency record %s is sealed but the route is not: %w", k, ErrSealedElsewhere)
		}
		if body, err = box.Open(e.Sealed, k); err != nil {
			ce := apperr.Conflict("this Idempotency-Key was used with another credential; the response held a secret shown only to the credential that made the request (list and revoke what it created if it was lost)")
			ce.Err = ErrSealedElsewhere
			return ce
		}
	}
	c.Response().Header().Set("Idempotent-Replayed", "true")
	return c.Blob(e.Status, e.Type, body)
}

type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

// Package webhook signs and verifies webhook requests per the Standard
// Webhooks specification (https://www.standardwebhooks.com): the
// webhook-id, webhook-timestamp and webhook-signature headers, where a
// signature is "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "."
// + body)) and the key is the base64 part of a "whsec_" secret. It also
// produces the two compatibility headers Vigil sends for receivers written
// against other governance products: "t=<unix>,v1=<hex>" and
// "t=<unix>,sha256=<hex>", both over "<unix>.<body>" and keyed with the
// secret string itself. Every header binds the timestamp (a captured
// delivery cannot be replayed later) and, during a rotation, carries one
// signature per secret, so a receiver still holding the previous secret
// keeps verifying whichever header it reads.
package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Header names of the Standard Webhooks spec and of the compatibility
// signatures.
const (
	HeaderID        = "webhook-id"
	HeaderTimestamp = "webhook-timestamp"
	HeaderSignature = "webhook-signature"
	// HeaderTimedSignature carries "t=<unix>,v1=<hex>".
	HeaderTimedSignature = "X-Vigil-Signature"
	// HeaderBodySignature carries "t=<unix>,sha256=<hex>".
	HeaderBodySignature = "X-Vigil-Signature-256"
)

// SecretPrefix starts every signing secret.
const SecretPrefix = "whsec_"

// DefaultTolerance is how far a timestamp may be from now and still verify.
const DefaultTolerance = 5 * time.Minute

// Errors returned by Verify.
var (
	ErrMissingHeaders   = errors.New("webhook: missing webhook-id, webhook-timestamp or webhook-signature")
	ErrInvalidTimestamp = errors.New("webhook: timestamp is not a unix time")
	ErrTimestampRange   = errors.New("webhook: timestamp outside the tolerance")
	ErrNoMatch          = errors.New("webhook: no signature matches")
	ErrInvalidSecret    = errors.New("webhook: secret must be whsec_ followed by base64")
)

// NewSecret returns a fresh signing secret: whsec_ + 32 random bytes.
func NewSecret() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return SecretPrefix + base64.StdEncoding.EncodeToString(b[:])
}

// Key decodes a secret to its HMAC key. A secret without the whsec_ prefix
// is accepted as base64 too, as the spec allows.
func Key(secret string) ([]byte, error) {
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, SecretPrefix))
	if err != nil || len(k) == 0 {
		return nil, ErrInvalidSecret
	}
	return k, nil
}

// Sign returns the "v1,<base64>" signature of one message.
func Sign(key []byte, id string, ts time.Time, body []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(id))
	m.Write([]byte{'.'})
	m.Write([]byte(strconv.FormatInt(ts.Unix(), 10)))
	m.Write([]byte{'.'})
	m.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// TimedSignature returns the "t=<unix>,v1=<hex>[,v1=<hex>…]" compatibility
// signature, one v1 per secret.
func TimedSignature(secrets []string, ts time.Time, body []byte) string {
	return compatSignature("v1", secrets, ts, body)
}

// BodySignature returns the "t=<unix>,sha256=<hex>[,sha256=<hex>…]"
// compatibility signature, one sha256 per secret. Despite the header's
// history it signs the timestamp too: a body-only signature could be
// replayed forever.
func BodySignature(secrets []string, ts time.Time, body []byte) string {
	return compatSignature("sha256", secrets, ts, body)
}

func compatSignature(scheme string, secrets []string, ts time.Time, body []byte) string {
	t := strconv.FormatInt(ts.Unix(), 10)
	var b strings.Builder
	b.WriteString("t=" + t)
	for _, s := range secrets {
		b.WriteString("," + scheme + "=" + compatMAC(s, t, body))
	}
	return b.String()
}

func compatMAC(secret, ts string, body []byte) string {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// SetHeaders signs body with every secret in secrets (the current one
// first; during a rotation also the previous one, so receivers can switch
// over without a gap) and sets all signature headers on h, each carrying
// one signature per secret.
func SetHeaders(h http.Header, secrets []string, id string, ts time.Time, body []byte) error {
	if len(secrets) == 0 {
		return ErrInvalidSecret
	}
	sigs := make([]string, 0, len(secrets))
	for _, s := range secrets {
		k, err := Key(s)
		if err != nil {
			return err
		}
		sigs = append(sigs, Sign(k, id, ts, body))
	}
	h.Set(HeaderID, id)
	h.Set(HeaderTimestamp, strconv.FormatInt(ts.Unix(), 10))
	h.Set(HeaderSignature, strings.Join(sigs, " "))
	h.Set(HeaderTimedSignature, TimedSignature(secrets, ts, body))
	h.Set(HeaderBodySignature, BodySignature(secrets, ts, body))
	return nil
}

// VerifyCompat checks one compatibility header (HeaderTimedSignature or
// HeaderBodySignature) the way a receiver of it should: its t= timestamp
// within tolerance of now and one of its signatures matching secret.
func VerifyCompat(header, secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	scheme := "v1"
	switch http.CanonicalHeaderKey(header) {
	case http.CanonicalHeaderKey(HeaderTimedSignature):
	case http.CanonicalHeaderKey(HeaderBodySignature):
		scheme = "sha256"
	default:
		return fmt.Errorf("webhook: %q is not a compatibility signature header", header)
	}
	v := h.Get(header)
	if v == "" {
		return ErrMissingHeaders
	}
	var tsStr string
	var sigs []string
	for _, part := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			tsStr = val
		case scheme:
			sigs = append(sigs, val)
		}
	}
	if tsStr == "" || len(sigs) == 0 {
		return ErrMissingHeaders
	}
	if _, err := checkTimestamp(tsStr, now, tolerance); err != nil {
		return err
	}
	want := compatMAC(secret, tsStr, body)
	for _, s := range sigs {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrNoMatch
}

// Verify checks a received webhook the way the spec tells receivers to:
// the timestamp is within tolerance of now and one of the space-separated
// v1 signatures matches (compared in constant time).
func Verify(secret string, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	key, err := Key(secret)
	if err != nil {
		return err
	}
	id, tsStr, sigs := h.Get(HeaderID), h.Get(HeaderTimestamp), h.Get(HeaderSignature)
	if id == "" || tsStr == "" || sigs == "" {
		return ErrMissingHeaders
	}
	ts, err := checkTimestamp(tsStr, now, tolerance)
	if err != nil {
		return err
	}
	want := Sign(key, id, ts, body)
	for _, s := range strings.Fields(sigs) {
		if hmac.Equal([]byte(s), []byte(want)) {
			return nil
		}
	}
	return ErrNoMatch
}

// checkTimestamp parses unix seconds and requires them within tolerance of
// now.
func checkTimestamp(tsStr string, now time.Time, tolerance time.Duration) (time.Time, error) {
	sec, err := strconv.ParseInt(tsStr, 10, 64)
	if err != nil {
		return time.Time{}, ErrInvalidTimestamp
	}
	ts := time.Unix(sec, 0)
	if d := now.Sub(ts); d > tolerance || d < -tolerance {
		return ts, fmt.Errorf("%w: %s", ErrTimestampRange, ts.UTC().Format(time.RFC3339))
	}
	return ts, nil
}

package webhook_test

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vigilhq/vigil/pkg/webhook"
)

// The example from the Standard Webhooks specification's test vectors.
const (
	specSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	specID     = "msg_p5jXN8AQM9LWM0D4loKWxJek"
	specTS     = 1614265330
	specBody   = `{"test": 2432232314}`
	specSig    = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
)

func TestSignMatchesSpecVector(t *testing.T) {
	k, err := webhook.Key(specSecret)
	if err != nil {
		t.Fatal(err)
	}
	if got := webhook.Sign(k, specID, time.Unix(specTS, 0), []byte(specBody)); got != specSig {
		t.Fatalf("signature %q, want %q", got, specSig)
	}
}

func TestVerify(t *testing.T) {
	ts := time.Unix(specTS, 0)
	other := webhook.NewSecret()
	otherKey, _ := webhook.Key(other)
	header := func(id, tsv, sig string) http.Header {
		h := http.Header{}
		if id != "" {
			h.Set(webhook.HeaderID, id)
		}
		if tsv != "" {
			h.Set(webhook.HeaderTimestamp, tsv)
		}
		if sig != "" {
			h.Set(webhook.HeaderSignature, sig)
		}
		return h
	}
	cases := []struct {
		name   string
		secret string
		h      http.Header
		body   string
		now    time.Time
		want   error
	}{
		{"valid", specSecret, header(specID, "1614265330", specSig), specBody, ts, nil},
		{"valid among several", specSecret, header(specID, "1614265330", webhook.Sign(otherKey, specID, ts, []byte(specBody))+" "+specSig), specBody, ts, nil},
		{"tampered body", specSecret, header(specID, "1614265330", specSig), specBody + " ", ts, webhook.ErrNoMatch},
		{"other id", specSecret, header("msg_other", "1614265330", specSig), specBody, ts, webhook.ErrNoMatch},
		{"wrong secret", other, header(specID, "1614265330", specSig), specBody, ts, webhook.ErrNoMatch},
		{"too old", specSecret, header(specID, "1614265330", specSig), specBody, ts.Add(6 * time.Minute), webhook.ErrTimestampRange},
		{"too new", specSecret, header(specID, "1614265330", specSig), specBody, ts.Add(-6 * time.Minute), webhook.ErrTimestampRange},
		{"bad timestamp", specSecret, header(specID, "yesterday", specSig), specBody, ts, webhook.ErrInvalidTimestamp},
		{"missing id", specSecret, header("", "1614265330", specSig), specBody, ts, webhook.ErrMissingHeaders},
		{"missing signature", specSecret, header(specID, "1614265330", ""), specBody, ts, webhook.ErrMissingHeaders},
		{"bad secret", "whsec_***", header(specID, "1614265330", specSig), specBody, ts, webhook.ErrInvalidSecret},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := webhook.Verify(c.secret, c.h, []byte(c.body), c.now, webhook.DefaultTolerance)
			if !errors.Is(err, c.want) {
				t.Fatalf("Verify = %v, want %v", err, c.want)
			}
		})
	}
}

func TestSetHeadersRoundTrip(t *testing.T) {
	cur, prev := webhook.NewSecret(), webhook.NewSecret()
	body := []byte(`{"type":"verdict.block"}`)
	now := time.Now()
	h := http.Header{}
	if err := webhook.SetHeaders(h, []string{cur, prev}, "dlv_1", now, body); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{cur, prev} {
		if err := webhook.Verify(s, h, body, now, webhook.DefaultTolerance); err != nil {
			t.Fatalf("verify with %s: %v", s[:10], err)
		}
	}
	if n := len(strings.Fields(h.Get(webhook.HeaderSignature))); n != 2 {
		t.Fatalf("%d signatures, want 2", n)
	}
	// Compatibility headers, recomputed independently: both sign the
	// timestamp and carry one signature per secret.
	tsStr := h.Get(webhook.HeaderTimestamp)
	mac := func(secret string) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(tsStr + "." + string(body)))
		return hex.EncodeToString(m.Sum(nil))
	}
	if got, want := h.Get(webhook.HeaderBodySignature), "t="+tsStr+",sha256="+mac(cur)+",sha256="+mac(prev); got != want {
		t.Fatalf("body signature %q, want %q", got, want)
	}
	if got, want := h.Get(webhook.HeaderTimedSignature), "t="+tsStr+",v1="+mac(cur)+",v1="+mac(prev); got != want {
		t.Fatalf("timed signature %q, want %q", got, want)
	}
	if err := webhook.SetHeaders(http.Header{}, nil, "x", now, body); !errors.Is(err, webhook.ErrInvalidSecret) {
		t.Fatalf("no secrets: %v", err)
	}
}

// TestCompatHeaders: each compatibility header verifies with the current
// and, during a rotation, the previous secret, and a captured delivery
// replayed after the tolerance (or with its timestamp moved) fails.
func TestCompatHeaders(t *testing.T) {
	cur, prev, stranger := webhook.NewSecret(), webhook.NewSecret(), webhook.NewSecret()
	body := []byte(`{"type":"verdict.block"}`)
	sent := time.Unix(1_800_000_000, 0)
	h := http.Header{}
	if err := webhook.SetHeaders(h, []string{cur, prev}, "dlv_1", sent, body); err != nil {
		t.Fatal(err)
	}
	retimed := h.Clone()
	for _, name := range []string{webhook.HeaderTimedSignature, webhook.HeaderBodySignature} {
		retimed.Set(name, strings.Replace(h.Get(name), "t=1800000000", "t=1800000600", 1))
	}
	cases := []struct {
		name   string
		secret string
		h      http.Header
		body   string
		now    time.Time
		want   error
	}{
		{"current secret", cur, h, string(body), sent, nil},
		{"previous secret during rotation", prev, h, string(body), sent, nil},
		{"unrelated secret", stranger, h, string(body), sent, webhook.ErrNoMatch},
		{"tampered body", cur, h, string(body) + " ", sent, webhook.ErrNoMatch},
		{"replayed ten minutes later", cur, h, string(body), sent.Add(10 * time.Minute), webhook.ErrTimestampRange},
		{"timestamp moved forward to replay", cur, retimed, string(body), sent.Add(10 * time.Minute), webhook.ErrNoMatch},
		{"header missing", cur, http.Header{}, string(body), sent, webhook.ErrMissingHeaders},
	}
	for _, header := range []string{webhook.HeaderTimedSignature, webhook.HeaderBodySignature} {
		for _, c := range cases {
			t.Run(header+"/"+c.name, func(t *testing.T) {
				err := webhook.VerifyCompat(header, c.secret, c.h, []byte(c.body), c.now, webhook.DefaultTolerance)
				if !errors.Is(err, c.want) {
					t.Fatalf("VerifyCompat = %v, want %v", err, c.want)
				}
			})
		}
	}
	if err := webhook.VerifyCompat(webhook.HeaderSignature, cur, h, body, sent, webhook.DefaultTolerance); err == nil {
		t.Fatal("VerifyCompat accepted the Standard Webhooks header")
	}
}

func TestNewSecretShape(t *testing.T) {
	s := webhook.NewSecret()
	if !strings.HasPrefix(s, webhook.SecretPrefix) {
		t.Fatalf("secret %q lacks prefix", s)
	}
	k, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(s, webhook.SecretPrefix))
	if err != nil || len(k) != 32 {
		t.Fatalf("secret key: %d bytes, %v", len(k), err)
	}
	if webhook.NewSecret() == s {
		t.Fatal("two secrets are equal")
	}
}

// FuzzVerify feeds untrusted header values and bodies: Verify must never
// panic and must accept only what Sign produced.
func FuzzVerify(f *testing.F) {
	f.Add(specID, "1614265330", specSig, specBody)
	f.Add("", "", "", "")
	f.Add("id", "-99999999999999999999", "v1,", "{}")
	f.Add("id", "1614265330", "v1,AAAA v2,BBBB  v1,=", "x")
	f.Fuzz(func(t *testing.T, id, ts, sig, body string) {
		h := http.Header{}
		h.Set(webhook.HeaderID, id)
		h.Set(webhook.HeaderTimestamp, ts)
		h.Set(webhook.HeaderSignature, sig)
		err := webhook.Verify(specSecret, h, []byte(body), time.Unix(specTS, 0), webhook.DefaultTolerance)
		if err == nil {
			sec, perr := strconv.ParseInt(h.Get(webhook.HeaderTimestamp), 10, 64)
			if perr != nil {
				t.Fatalf("accepted an unparsable timestamp %q", ts)
			}
			k, _ := webhook.Key(specSecret)
			want := webhook.Sign(k, h.Get(webhook.HeaderID), time.Unix(sec, 0), []byte(body))
			if !slices.Contains(strings.Fields(h.Get(webhook.HeaderSignature)), want) {
				t.Fatalf("accepted a signature Sign did not produce: %q", sig)
			}
		}
	})
}

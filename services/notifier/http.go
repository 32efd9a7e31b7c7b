package notifier

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/httpkit"
	"github.com/vigilhq/vigil/pkg/idempotency"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/ssrf"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/pkg/webhook"
)

// Routes mounts the channel API on e: Kaplaix's /v1/notification-channels
// and Kaizen's /v1/webhooks over the same channels. EnsureStreams and
// StartRegistry must have run.
func (s *Service) Routes(e *echo.Echo) {
	g := e.Group("/v1", httpkit.Authenticate(s.deps.Auth))
	read, manage := httpkit.Require(auth.ChannelsRead), httpkit.Require(auth.ChannelsManage)
	idem := s.idem.Middleware()

	g.POST("/notification-channels", s.createChannel, manage)
	g.GET("/notification-channels", s.listChannels, read)
	g.GET("/notification-channels/:id", s.getChannel, read)
	g.PATCH("/notification-channels/:id", s.patchChannel, manage)
	g.DELETE("/notification-channels/:id", s.deleteChannel, manage)
	// Creating a channel is idempotent by itself (see createChannel): the
	// shared middleware would store the signing secret in plain text.
	// Rotation is not: a retried rotation rotates again, and the secret
	// the lost response carried keeps signing as the previous one.
	g.POST("/notification-channels/:id/rotate-secret", s.rotateSecret, manage)
	g.POST("/notification-channels/:id/test", s.testChannel, manage)
	g.GET("/notification-channels/:id/deliveries", s.listDeliveries, read)
	g.GET("/notification-channels/:id/dead-letters", s.listDeadLetters, read)
	g.POST("/notification-channels/:id/deliveries/:deliveryId/retry", s.retryDelivery, manage, idem)

	g.GET("/webhooks", s.listWebhooks, read)
	g.POST("/webhooks", s.createChannel, manage)
	g.GET("/webhooks/:id", s.getChannel, read)
	g.DELETE("/webhooks/:id", s.deleteChannel, manage)
	g.DELETE("/webhooks", s.deleteWebhookByQuery, manage)
}

// ChannelView is a channel as the API returns it: never its credentials.
// Secret is set only in the response that created or rotated it.
type ChannelView struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	URL         string   `json:"url"`
	Signals     []string `json:"signals"`
	Events      []string `json:"events"`
	MinSeverity string   `json:"minSeverity"`
	Enabled     bool     `json:"enabled"`
	Active      bool     `json:"active"`
	Health      Health   `json:"health"`
	// HasCredential says a service credential is stored (never shown).
	HasCredential bool      `json:"hasCredential"`
	Signed        bool      `json:"signed"`
	Secret        string    `json:"secret,omitempty"`
	Revision      uint64    `json:"revision"`
	CreatedAt     time.Time `json:"createdAt"`
	UpdatedAt     time.Time `json:"updatedAt"`
}

func (s *Service) view(ctx context.Context, c Channel, secret string) ChannelView {
	h, err := s.health(ctx, c.Tenant, c.ID)
	if err != nil {
		h = Health{Status: "unknown"}
	}
	sigs := c.Signals
	if sigs == nil {
		sigs = []string{}
	}
	return ChannelView{
		ID: c.ID, Name: c.Name, Type: c.Type, URL: c.DisplayURL, Signals: sigs, Events: sigs,
		MinSeverity: c.MinSeverity, Enabled: c.Enabled, Active: c.Enabled, Health: h,
		HasCredential: c.Type == TypeDatadog || c.Type == TypeSplunk || c.Type == TypePagerDuty,
		Signed:        c.Type == TypeWebhook, Secret: secret,
		Revision: c.Revision, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
}

// channelInput is a create or update body in the union of the upstream
// shapes: signals may be called signals, events or eventTypes; the
// credential may be given in credentials{} or as a top-level field.
type channelInput struct {
	Name        *string           `json:"name"`
	Type        *string           `json:"type"`
	URL         *string           `json:"url"`
	Signals     []string          `json:"signals"`
	Events      []string          `json:"events"`
	EventTypes  []string          `json:"eventTypes"`
	MinSeverity *string           `json:"minSeverity"`
	Enabled     *bool             `json:"enabled"`
	Active      *bool             `json:"active"`
	Credentials map[string]string `json:"credentials"`
	APIKey      *string           `json:"apiKey"`
	RoutingKey  *string           `json:"routingKey"`
	Token       *string           `json:"token"`
	Site        *string           `json:"site"`
	// Secret lets a client bring its existing signing secret (whsec_…)
	// when it moves its receivers over; by default one is generated.
	Secret *string `json:"secret"`
}

func (in channelInput) signals() ([]string, bool) {
	for _, l := range [][]string{in.Signals, in.Events, in.EventTypes} {
		if l != nil {
			return l, true
		}
	}
	return nil, false
}

// credential finds the service credential wherever the caller put it.
func (in channelInput) credential() string {
	for _, p := range []*string{in.APIKey, in.RoutingKey, in.Token} {
		if p != nil && *p != "" {
			return *p
		}
	}
	for _, k := range []string{"apiKey", "api_key", "routingKey", "routing_key", "integrationKey", "token", "hecToken"} {
		if v := in.Credentials[k]; v != "" {
			return v
		}
	}
	return ""
}

func decodeInput(c echo.Context, max int64) (channelInput, []byte, error) {
	body, err := httpkit.ReadBody(c, max)
	if err != nil {
		return channelInput{}, nil, err
	}
	var in channelInput
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&in); err != nil {
		return in, body, apperr.Validation("request body must be a JSON object: " + cleanJSONError(err))
	}
	return in, body, nil
}

func cleanJSONError(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("field %s must be %s", te.Field, te.Type)
	}
	return "malformed JSON"
}

func fieldErr(path, code, msg string) error {
	return apperr.Validation(msg, apperr.FieldError{Path: path, Code: code, Message: msg})
}

// apply validates in and writes it onto c and its secrets; create says
// whether required fields must be present.
func (s *Service) apply(ctx context.Context, c *Channel, sec *secrets, in channelInput, create bool) error {
	var errs []apperr.FieldError
	bad := func(path, code, msg string) {
		errs = append(errs, apperr.FieldError{Path: path, Code: code, Message: msg})
	}
	if in.Type != nil {
		if !create && *in.Type != c.Type {
			bad("type", "immutable", "a channel's type cannot change; create a new channel")
		} else if !slices.Contains(channelTypes, *in.Type) {
			bad("type", "invalid_value", "type must be one of "+strings.Join(channelTypes, ", "))
		} else {
			c.Type = *in.Type
		}
	} else if create {
		c.Type = TypeWebhook
	}
	if in.Name != nil {
		n := strings.TrimSpace(*in.Name)
		if n == "" || len(n) > 200 {
			bad("name", "invalid_length", "name must be 1 to 200 characters")
		}
		c.Name = n
	}
	if list, ok := in.signals(); ok {
		seen := map[string]bool{}
		out := []string{}
		for i, t := range list {
			if t != "*" && !slices.Contains(SignalTypes, t) {
				bad(fmt.Sprintf("signals[%d]", i), "invalid_value", fmt.Sprintf("unknown signal type %q (known: %s, or *)", t, strings.Join(SignalTypes, ", ")))
				continue
			}
			if !seen[t] {
				seen[t] = true
				out = append(out, t)
			}
		}
		c.Signals = out
	}
	if in.MinSeverity != nil {
		if severityRank(*in.MinSeverity) < 0 {
			bad("minSeverity", "invalid_value", "minSeverity must be one of "+strings.Join(severities, ", "))
		}
		c.MinSeverity = *in.MinSeverity
	} else if create {
		c.MinSeverity = "info"
	}
	if in.Enabled != nil {
		c.Enabled = *in.Enabled
	} else if in.Active != nil {
		c.Enabled = *in.Active
	} else if create {
		c.Enabled = true
	}
	if cred := in.credential(); cred != "" {
		sec.Credential = cred
	}
	if in.URL != nil {
		sec.URL = strings.TrimSpace(*in.URL)
	} else if create {
		switch c.Type {
		case TypePagerDuty:
			sec.URL = defaultPagerDutyURL
		case TypeDatadog:
			site := defaultDatadogSite
			if in.Site != nil && *in.Site != "" {
				site = *in.Site
			}
			sec.URL = "https://api." + site + "/api/v1/events"
		}
	}
	if sec.URL == "" {
		bad("url", "required", "url is required for a "+c.Type+" channel")
	} else if u, err := url.Parse(sec.URL); err != nil || u.Host == "" || len(sec.URL) > 2048 {
		bad("url", "invalid_format", "url must be an absolute http(s) URL of at most 2048 characters")
	} else if err := s.guard.CheckURL(ctx, s.deps.Resolver, sec.URL); errors.Is(err, ssrf.ErrForbidden) {
		bad("url", "forbidden_destination", "url is not an allowed destination: "+err.Error())
	} else if err != nil {
		bad("url", "invalid_destination", "url cannot be used: "+err.Error())
	}
	if (c.Type == TypeDatadog || c.Type == TypeSplunk || c.Type == TypePagerDuty) && sec.Credential == "" {
		bad("credentials", "required", "a "+c.Type+" channel needs its credential (apiKey, token or routingKey)")
	}
	if len(errs) > 0 {
		return apperr.Validation("channel is not valid", errs...)
	}
	if c.Name == "" {
		c.Name = c.Type + " " + displayURL(c.Type, sec.URL)
	}
	c.DisplayURL = displayURL(c.Type, sec.URL)
	return nil
}

func (s *Service) seal(c *Channel, sec secrets) error {
	raw, err := json.Marshal(sec)
	if err != nil {
		return fmt.Errorf("encode channel secrets: %w", err)
	}
	c.Sealed = s.box.Seal(raw, c.ad())
	return nil
}

func (s *Service) open(c Channel) (secrets, error) {
	var sec secrets
	raw, err := s.box.Open(c.Sealed, c.ad())
	if err != nil {
		return sec, errors.New("channel credentials do not decrypt with this deployment's key")
	}
	if err := json.Unmarshal(raw, &sec); err != nil {
		return sec, fmt.Errorf("decode channel secrets: %w", err)
	}
	return sec, nil
}

// errChannelConflict marks a compare-and-set write that lost.
var errChannelConflict = errors.New("channel subject moved")

// put writes c on its CONTROL subject if the subject is still at expect
// and waits until the registry reflects it (read-your-writes).
func (s *Service) put(ctx context.Context, c Channel, expect uint64) (Channel, error) {
	data, err := json.Marshal(c)
	if err != nil {
		return c, fmt.Errorf("encode channel: %w", err)
	}
	msg := nats.NewMsg(streams.ChannelSubject(c.Tenant, c.ID))
	msg.Data = data
	ack, err := s.deps.JS.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(expect))
	if natsx.IsWrongLastSequence(err) {
		e := apperr.Conflict("channel %s changed concurrently; read it again and retry", c.ID)
		e.Err = errChannelConflict
		return c, e
	}
	if err != nil {
		return c, apperr.Unavailable("control stream did not acknowledge the write", time.Second, err)
	}
	c.Revision = ack.Sequence
	if err := s.channels.waitFor(ctx, ack.Sequence); err != nil {
		return c, err
	}
	return c, nil
}

// createChannel creates a channel. With an Idempotency-Key the channel id
// derives from the tenant, the caller and the key, so a retry finds the channel the
// first request created and gets the same response — including the
// signing secret, decrypted again from the channel rather than kept in
// plain text in the shared idempotency store.
func (s *Service) createChannel(c echo.Context) error {
	ctx := c.Request().Context()
	p := httpkit.Principal(c)
	in, body, err := decodeInput(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	ch := Channel{ID: newChannelID(), Tenant: p.Tenant, CreatedAt: now, UpdatedAt: now, By: p.Actor()}
	key := c.Request().Header.Get(idempotency.Header)
	if key != "" {
		if len(key) > 255 {
			return fieldErr(idempotency.Header, "invalid_length", "Idempotency-Key must be at most 255 characters")
		}
		// The id belongs to the caller: another principal sending the
		// same key creates its own channel, never reads this one's secret.
		sum := sha256.Sum256([]byte(p.Tenant + "\x00" + p.Actor() + "\x00" + key))
		ch.ID = "ch_" + hex.EncodeToString(sum[:8])
		bh := sha256.Sum256(body)
		ch.IdemHash = hex.EncodeToString(bh[:])
	}
	var sec secrets
	if err := s.apply(ctx, &ch, &sec, in, true); err != nil {
		return err
	}
	if ch.Type == TypeWebhook {
		sec.Signing = webhook.NewSecret()
		if in.Secret != nil {
			k, err := webhook.Key(*in.Secret)
			if err != nil || !strings.HasPrefix(*in.Secret, webhook.SecretPrefix) || len(k) < 24 || len(k) > 64 {
				return fieldErr("secret", "invalid_format", "secret must be whsec_ followed by base64 of 24 to 64 random bytes")
			}
			sec.Signing = *in.Secret
		}
	} else if in.Secret != nil {
		return fieldErr("secret", "not_signed", "only webhook channels have a signing secret")
	}
	if err := s.seal(&ch, sec); err != nil {
		return err
	}
	saved, err := s.put(ctx, ch, 0)
	if errors.Is(err, errChannelConflict) && key != "" {
		return s.replayCreate(c, ch)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.view(ctx, saved, sec.Signing))
}

// replayCreate answers a create retried with the same Idempotency-Key.
func (s *Service) replayCreate(c echo.Context, attempted Channel) error {
	ctx := c.Request().Context()
	st, err := s.deps.JS.Stream(ctx, streams.Control)
	if err != nil {
		return apperr.Unavailable("control stream unavailable", time.Second, err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, streams.ChannelSubject(attempted.Tenant, attempted.ID))
	if err != nil {
		return apperr.Unavailable("control stream unavailable", time.Second, err)
	}
	var prev Channel
	if err := json.Unmarshal(msg.Data, &prev); err != nil {
		return fmt.Errorf("decode channel: %w", err)
	}
	prev.Revision = msg.Sequence
	if prev.IdemHash != attempted.IdemHash {
		return apperr.Conflict("Idempotency-Key was already used with a different request body")
	}
	if prev.Deleted {
		return apperr.Conflict("Idempotency-Key was used for channel %s, which has since been deleted", prev.ID)
	}
	secret := ""
	if prev.Type == TypeWebhook {
		sec, err := s.open(prev)
		if err != nil {
			return err
		}
		secret = sec.Signing
	}
	if err := s.channels.waitFor(ctx, msg.Sequence); err != nil {
		return err
	}
	return c.JSON(http.StatusCreated, s.view(ctx, prev, secret))
}

// find returns the caller's channel or 404 (also for other tenants').
func (s *Service) find(c echo.Context) (Channel, error) {
	ch, ok := s.channels.get(httpkit.Principal(c).Tenant, c.Param("id"))
	if !ok {
		return ch, apperr.NotFound("notification channel %q not found", c.Param("id"))
	}
	return ch, nil
}

func (s *Service) getChannel(c echo.Context) error {
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.view(c.Request().Context(), ch, ""))
}

// channelCursor is the position after the last channel of a page
// (channels are listed oldest first, id breaking ties), so a page stays
// right even when the channel it ended on was deleted meanwhile.
type channelCursor struct {
	CreatedAt time.Time `json:"t"`
	ID        string    `json:"i"`
}

func (s *Service) page(c echo.Context) ([]ChannelView, bool, channelCursor, error) {
	limit, err := httpkit.Limit(c, 50, 200)
	if err != nil {
		return nil, false, channelCursor{}, err
	}
	var cur channelCursor
	if err := httpkit.DecodeCursor(c, &cur); err != nil {
		return nil, false, channelCursor{}, err
	}
	all := s.channels.list(httpkit.Principal(c).Tenant)
	start := 0
	if cur.ID != "" {
		start = sort.Search(len(all), func(i int) bool {
			ch := all[i]
			return ch.CreatedAt.After(cur.CreatedAt) || (ch.CreatedAt.Equal(cur.CreatedAt) && ch.ID > cur.ID)
		})
	}
	all = all[start:]
	more := len(all) > limit
	if more {
		all = all[:limit]
	}
	out := make([]ChannelView, 0, len(all))
	for _, ch := range all {
		out = append(out, s.view(c.Request().Context(), ch, ""))
	}
	var last channelCursor
	if len(all) > 0 {
		last = channelCursor{CreatedAt: all[len(all)-1].CreatedAt, ID: all[len(all)-1].ID}
	}
	return out, more, last, nil
}

func (s *Service) listChannels(c echo.Context) error {
	out, more, last, err := s.page(c)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, more, last))
}

// listWebhooks is Kaizen's list: the page envelope plus a "webhooks" array.
func (s *Service) listWebhooks(c echo.Context) error {
	out, more, last, err := s.page(c)
	if err != nil {
		return err
	}
	p := httpkit.NewPage(out, more, last)
	return c.JSON(http.StatusOK, map[string]any{"data": p.Data, "webhooks": p.Data, "nextCursor": p.NextCursor, "hasMore": p.HasMore})
}

func (s *Service) patchChannel(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	in, _, err := decodeInput(c, s.cfg.MaxBodyBytes)
	if err != nil {
		return err
	}
	sec, err := s.open(ch)
	if err != nil {
		return err
	}
	if err := s.apply(ctx, &ch, &sec, in, false); err != nil {
		return err
	}
	if err := s.seal(&ch, sec); err != nil {
		return err
	}
	ch.UpdatedAt, ch.By = time.Now().UTC(), httpkit.Principal(c).Actor()
	ch, err = s.put(ctx, ch, ch.Revision)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, s.view(ctx, ch, ""))
}

func (s *Service) deleteChannel(c echo.Context) error {
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	ch.Deleted, ch.Enabled = true, false
	ch.UpdatedAt, ch.By = time.Now().UTC(), httpkit.Principal(c).Actor()
	// The sealed secrets stay in the history (the audit trail); a deleted
	// channel's record carries none.
	ch.Sealed = ""
	if _, err := s.put(c.Request().Context(), ch, ch.Revision); err != nil {
		return err
	}
	return c.NoContent(http.StatusNoContent)
}

// deleteWebhookByQuery is Kaizen's DELETE /v1/webhooks?id=…: the same as
// DELETE /v1/webhooks/:id.
func (s *Service) deleteWebhookByQuery(c echo.Context) error {
	id := c.QueryParam("id")
	if id == "" {
		return fieldErr("id", "required", "id (the webhook to delete) is required: DELETE /v1/webhooks?id=… or /v1/webhooks/:id")
	}
	c.SetParamNames("id")
	c.SetParamValues(id)
	return s.deleteChannel(c)
}

func (s *Service) rotateSecret(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	if ch.Type != TypeWebhook {
		return fieldErr("type", "not_signed", "only webhook channels have a signing secret")
	}
	sec, err := s.open(ch)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	sec.Previous, sec.PreviousUntil = sec.Signing, now.Add(s.cfg.RotationGrace)
	sec.Signing = webhook.NewSecret()
	if err := s.seal(&ch, sec); err != nil {
		return err
	}
	ch.UpdatedAt, ch.By = now, httpkit.Principal(c).Actor()
	ch, err = s.put(ctx, ch, ch.Revision)
	if err != nil {
		return err
	}
	v := s.view(ctx, ch, sec.Signing)
	return c.JSON(http.StatusOK, map[string]any{"channel": v, "secret": sec.Signing, "previousSecretValidUntil": sec.PreviousUntil})
}

// testChannel makes one attempt right away with a notification.test
// signal and reports how the target answered; it is recorded like any
// attempt but never retried.
func (s *Service) testChannel(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	now := time.Now().UTC()
	sig := Signal{
		ID: "sig_test_" + newChannelID()[3:], Type: SignalTest, Tenant: ch.Tenant, Severity: "info",
		Summary: "Test notification from Vigil", OccurredAt: now, Data: json.RawMessage(`{}`),
	}
	sig.Group = sig.ID
	job := Job{DeliveryID: deliveryID(sig.ID, ch.ID), Tenant: ch.Tenant, ChannelID: ch.ID, Signal: sig, Attempt: 1}
	r := s.send(ctx, ch, job)
	a := Attempt{Outcome: OutcomeTest, Status: "succeeded", StatusCode: r.status, LatencyMs: float64(r.latency.Microseconds()) / 1000}
	if !r.ok() {
		a.Status, a.Error = "failed", r.describe()
	}
	if err := s.record(ctx, a, job, ch); err != nil {
		return apperr.Unavailable("could not record the test attempt", time.Second, err)
	}
	return c.JSON(http.StatusOK, map[string]any{
		"deliveryId": job.DeliveryID, "webhookId": job.DeliveryID, "success": r.ok(), "status": a.Status,
		"statusCode": r.status, "latencyMs": a.LatencyMs, "error": a.Error,
	})
}

func (s *Service) listDeliveries(c echo.Context) error {
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	limit, err := httpkit.Limit(c, 50, 500)
	if err != nil {
		return err
	}
	var cur deliveryCursor
	if err := httpkit.DecodeCursor(c, &cur); err != nil {
		return err
	}
	status := c.QueryParam("status")
	if status != "" && !slices.Contains([]string{"succeeded", "failed", OutcomeDelivered, OutcomeRetry, OutcomeDead, OutcomeDropped, OutcomeTest}, status) {
		return fieldErr("status", "invalid_value", "status must be succeeded, failed, delivered, retry_scheduled, dead_lettered, dropped or test")
	}
	out, more, err := s.attempts(c.Request().Context(), ch.Tenant, ch.ID, c.QueryParam("deliveryId"), status, cur, limit)
	if err != nil {
		return err
	}
	next := deliveryCursor{}
	if len(out) > 0 {
		next = deliveryCursor{AtMs: out[len(out)-1].At.UnixMilli(), ID: out[len(out)-1].ID}
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, more, next))
}

func (s *Service) listDeadLetters(c echo.Context) error {
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	limit, err := httpkit.Limit(c, 50, 500)
	if err != nil {
		return err
	}
	out, err := s.deadLetters(c.Request().Context(), ch.Tenant, ch.ID, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, httpkit.NewPage(out, false, nil))
}

// retryDelivery replays a finished delivery (dead-lettered, or delivered
// and wanted again) from attempt 1 with the same webhook-id. A delivery
// still retrying is refused with 409, and two concurrent replays produce
// one (compare-and-set on the delivery's subject).
func (s *Service) retryDelivery(c echo.Context) error {
	ctx := c.Request().Context()
	ch, err := s.find(c)
	if err != nil {
		return err
	}
	id := c.Param("deliveryId")
	st, err := s.deps.JS.Stream(ctx, streams.Notifier)
	if err != nil {
		return apperr.Unavailable("delivery store unavailable", time.Second, err)
	}
	last, err := st.GetLastMsgForSubject(ctx, streams.DeliveryScheduledSubject(ch.Tenant, id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return apperr.NotFound("delivery %q not found", id)
	}
	if err != nil {
		return apperr.Unavailable("delivery store unavailable", time.Second, err)
	}
	var job Job
	if err := json.Unmarshal(last.Data, &job); err != nil || job.ChannelID != ch.ID {
		return apperr.NotFound("delivery %q not found", id)
	}
	fin, err := s.lastSeq(ctx, streams.DeliveryFinishedSubject(ch.Tenant, id))
	if err != nil {
		return apperr.Unavailable("delivery store unavailable", time.Second, err)
	}
	if fin < last.Sequence {
		return apperr.Conflict("delivery %s is still being retried; replay it once it is delivered or dead-lettered", id)
	}
	job.Replay++
	job.Attempt, job.NotBefore = 1, time.Now().UTC()
	if err := s.publishJob(ctx, job, last.Sequence); errors.Is(err, errSuperseded) {
		return apperr.Conflict("delivery %s was replayed concurrently", id)
	} else if err != nil {
		return apperr.Unavailable("delivery store did not acknowledge the replay", time.Second, err)
	}
	return c.JSON(http.StatusAccepted, map[string]any{"deliveryId": id, "webhookId": id, "replay": job.Replay, "status": "scheduled"})
}

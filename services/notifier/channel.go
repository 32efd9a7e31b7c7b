package notifier

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/secretbox"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Channel types.
const (
	TypeWebhook   = "webhook"
	TypeSlack     = "slack"
	TypeDatadog   = "datadog"
	TypeSplunk    = "splunk"
	TypePagerDuty = "pagerduty"
)

var channelTypes = []string{TypeWebhook, TypeSlack, TypeDatadog, TypeSplunk, TypePagerDuty}

// Default endpoints of the hosted services.
const (
	defaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"
	defaultDatadogSite  = "datadoghq.com"
)

// Channel is a notification channel's full state as stored on CONTROL.
// Everything secret — the real target URL (a Slack incoming-webhook URL is
// itself a credential), the signing secrets and the service credential —
// is in Sealed, encrypted with the deployment key and bound to the
// channel's tenant and id.
type Channel struct {
	ID          string   `json:"id"`
	Tenant      string   `json:"tenant"`
	Name        string   `json:"name"`
	Type        string   `json:"type"`
	DisplayURL  string   `json:"displayUrl"`
	Signals     []string `json:"signals"`
	MinSeverity string   `json:"minSeverity"`
	Enabled     bool     `json:"enabled"`
	Deleted     bool     `json:"deleted,omitempty"`
	Sealed      string   `json:"sealed"`
	// IdemHash is the SHA-256 of the create request's body when it came
	// with an Idempotency-Key (the id then derives from the key).
	IdemHash  string    `json:"idemHash,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
	By        string    `json:"by,omitempty"`
	// Revision is the CONTROL sequence of this state (not stored).
	Revision uint64 `json:"-"`
}

// secrets is what Channel.Sealed decrypts to.
type secrets struct {
	URL string `json:"url"`
	// Signing is the current webhook signing secret; Previous keeps
	// signing alongside it until PreviousUntil after a rotation.
	Signing       string    `json:"signing,omitempty"`
	Previous      string    `json:"previous,omitempty"`
	PreviousUntil time.Time `json:"previousUntil,omitzero"`
	// Credential is the Datadog API key, PagerDuty routing key or Splunk
	// HEC token.
	Credential string `json:"credential,omitempty"`
}

// wants reports whether the channel subscribes to s.
func (c Channel) wants(s Signal) bool {
	if !c.Enabled || c.Deleted {
		return false
	}
	if len(c.Signals) > 0 && !slices.Contains(c.Signals, s.Type) && !slices.Contains(c.Signals, "*") {
		return false
	}
	return severityRank(s.Severity) >= severityRank(c.MinSeverity)
}

func (c Channel) ad() string { return c.Tenant + "/" + c.ID }

func newChannelID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "ch_" + hex.EncodeToString(b[:])
}

// displayURL shows where a channel points without what may be secret:
// for Slack only the host, for others no query string or user info.
func displayURL(typ, raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return ""
	}
	if typ == TypeSlack {
		return u.Scheme + "://" + u.Host + "/…"
	}
	out := u.Scheme + "://" + u.Host + u.EscapedPath()
	if u.RawQuery != "" {
		out += "?…"
	}
	return out
}

// registry is the notifier's in-memory view of every channel, kept by an
// ordered consumer on CONTROL's channel subjects.
type registry struct {
	js  jetstream.JetStream
	log *slog.Logger

	mu       sync.RWMutex
	applied  uint64
	changed  chan struct{}
	byTenant map[string]map[string]Channel
}

func newRegistry(js jetstream.JetStream, log *slog.Logger) *registry {
	return &registry{js: js, log: log, changed: make(chan struct{}), byTenant: map[string]map[string]Channel{}}
}

func (r *registry) run(ctx context.Context) error {
	if _, err := natsx.Follow(ctx, r.js, streams.Control, []string{streams.AllChannelChanges}, r.apply); err != nil {
		return fmt.Errorf("channels: %w", err)
	}
	return nil
}

func (r *registry) apply(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	var c Channel
	if err := json.Unmarshal(m.Data(), &c); err != nil {
		r.log.Error("channels: bad channel change", slog.String("subject", m.Subject()), slog.String("error", err.Error()))
	}
	c.Revision = meta.Sequence.Stream
	r.mu.Lock()
	defer r.mu.Unlock()
	if c.ID != "" && c.Tenant != "" {
		t := r.byTenant[c.Tenant]
		if t == nil {
			t = map[string]Channel{}
			r.byTenant[c.Tenant] = t
		}
		if c.Deleted {
			delete(t, c.ID)
		} else {
			t[c.ID] = c
		}
	}
	if meta.Sequence.Stream > r.applied {
		r.applied = meta.Sequence.Stream
		close(r.changed)
		r.changed = make(chan struct{})
	}
}

// waitFor blocks until the registry has applied CONTROL sequence seq.
func (r *registry) waitFor(ctx context.Context, seq uint64) error {
	for {
		r.mu.RLock()
		applied, ch := r.applied, r.changed
		r.mu.RUnlock()
		if applied >= seq {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return apperr.Unavailable("channel state is catching up", time.Second, ctx.Err())
		}
	}
}

// sync waits until every channel change CONTROL holds now is applied.
func (r *registry) sync(ctx context.Context) error {
	st, err := r.js.Stream(ctx, streams.Control)
	if err != nil {
		return fmt.Errorf("channels sync: %w", err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, streams.AllChannelChanges)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("channels sync: %w", err)
	}
	return r.waitFor(ctx, msg.Sequence)
}

func (r *registry) get(tenant, id string) (Channel, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	c, ok := r.byTenant[tenant][id]
	return c, ok
}

// list returns a tenant's channels, oldest first (id breaks ties).
func (r *registry) list(tenant string) []Channel {
	r.mu.RLock()
	out := make([]Channel, 0, len(r.byTenant[tenant]))
	for _, c := range r.byTenant[tenant] {
		out = append(out, c)
	}
	r.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// none says whether tenant has no channel at all: every signal of it
// would match nothing.
func (r *registry) none(tenant string) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.byTenant[tenant]) == 0
}

// match returns the tenant's channels that want s.
func (r *registry) match(s Signal) []Channel {
	r.mu.RLock()
	defer r.mu.RUnlock()
	var out []Channel
	for _, c := range r.byTenant[s.Tenant] {
		if c.wants(s) {
			out = append(out, c)
		}
	}
	return out
}

// NewBox returns the box channel credentials are sealed in under the
// deployment secret key (Config.SecretKey).
func NewBox(key []byte) (*secretbox.Box, error) { return secretbox.New(key, "notification channels") }

// ResealChannel re-encrypts a stored channel record's credentials from
// old to next (vigil secrets rotate); see secretbox.ResealJSON.
func ResealChannel(data []byte, old, next *secretbox.Box) ([]byte, bool, error) {
	var c Channel
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, false, fmt.Errorf("notifier: channel record: %w", err)
	}
	return secretbox.ResealJSON(data, "sealed", c.ad(), old, next)
}

package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/redact"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Settings is the in-memory view of tenant settings on CONTROL that the
// data path needs: each tenant's compiled redaction policy and its LLM
// judge configuration (kept as stored, the key sealed). Ingest and policy
// each keep one, so that redacting an event or a decision never waits on
// the network.
type Settings struct {
	js  jetstream.JetStream
	log *slog.Logger
	red *redact.Redactor

	mu        sync.RWMutex
	redaction map[string]redactionState
	llm       map[string]json.RawMessage
	applied   natsx.Watermark
	ready     chan struct{}
	readyOnce sync.Once
}

type redactionState struct {
	rec redact.Record
	pol *redact.Policy
}

// NewSettings returns an empty view; Run fills it. red compiles the
// tenants' redaction policies.
func NewSettings(js jetstream.JetStream, red *redact.Redactor, log *slog.Logger) *Settings {
	return &Settings{
		js: js, log: log, red: red,
		redaction: map[string]redactionState{}, llm: map[string]json.RawMessage{},
		ready: make(chan struct{}),
	}
}

// Run follows the settings subjects of CONTROL until ctx ends. It returns
// at once; the view starts once CONTROL exists (its owner, the api, may
// create it later) and Ready tells when it has caught up.
func (s *Settings) Run(ctx context.Context) error {
	go func() {
		for ctx.Err() == nil {
			if err := s.follow(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("settings: following CONTROL failed; retrying", slog.String("error", err.Error()))
				select {
				case <-ctx.Done():
				case <-time.After(time.Second):
				}
				continue
			}
			return
		}
	}()
	return nil
}

func (s *Settings) follow(ctx context.Context) error {
	if err := natsx.WaitForStream(ctx, s.js, streams.Control, s.log); err != nil {
		return err
	}
	cons, err := natsx.Follow(ctx, s.js, streams.Control, []string{streams.AllRedactionChanges, streams.AllLLMConfigChanges}, s.apply)
	if err != nil {
		return fmt.Errorf("settings: %w", err)
	}
	if info := cons.CachedInfo(); info != nil && info.NumPending == 0 {
		s.markReady()
	}
	<-ctx.Done()
	return nil
}

func (s *Settings) markReady() { s.readyOnce.Do(func() { close(s.ready) }) }

func (s *Settings) apply(m jetstream.Msg) {
	meta, err := m.Metadata()
	if err != nil {
		return
	}
	subj := m.Subject()
	s.mu.Lock()
	switch {
	case strings.HasPrefix(subj, "control.v1."+streams.RedactionChanged+"."):
		var r redact.Record
		if err := json.Unmarshal(m.Data(), &r); err != nil {
			s.log.Error("settings: bad redaction record", slog.String("subject", subj), slog.String("error", err.Error()))
			break
		}
		pol, err := s.red.Compile(r.Settings)
		if err != nil {
			// Validated before it was stored; keep the previous policy
			// (or the default, which redacts every class) rather than
			// redact less.
			s.log.Error("settings: stored redaction settings do not compile", slog.String("tenant", r.Tenant), slog.String("error", err.Error()))
			break
		}
		r.Revision = meta.Sequence.Stream
		s.redaction[r.Tenant] = redactionState{rec: r, pol: pol}
	case strings.HasPrefix(subj, "control.v1."+streams.LLMConfigChanged+"."):
		var head struct {
			Tenant string `json:"tenant"`
		}
		if err := json.Unmarshal(m.Data(), &head); err != nil || head.Tenant == "" {
			s.log.Error("settings: bad llm config record", slog.String("subject", subj))
			break
		}
		s.llm[head.Tenant] = append(json.RawMessage(nil), m.Data()...)
	}
	s.mu.Unlock()
	s.applied.Advance(meta.Sequence.Stream)
	if meta.NumPending == 0 {
		s.markReady()
	}
}

// Ready is closed once the view holds every setting stored when Run
// started.
func (s *Settings) Ready() <-chan struct{} { return s.ready }

// WaitFor blocks until the view has applied CONTROL sequence seq (a
// settings write's revision).
func (s *Settings) WaitFor(ctx context.Context, seq uint64) error {
	return s.applied.WaitFor(ctx, seq)
}

// Redaction returns the tenant's redaction policy, waiting (bounded by
// ctx) for the view to load first: redacting with a half-loaded view
// would skip a tenant's own patterns.
func (s *Settings) Redaction(ctx context.Context, tenant string) (*redact.Policy, error) {
	select {
	case <-s.ready:
	case <-ctx.Done():
		return nil, fmt.Errorf("redaction settings are still loading: %w", ctx.Err())
	}
	s.mu.RLock()
	st, ok := s.redaction[tenant]
	s.mu.RUnlock()
	if !ok {
		return s.red.Default(), nil
	}
	return st.pol, nil
}

// LLMConfig returns the tenant's stored judge configuration record.
func (s *Settings) LLMConfig(tenant string) (json.RawMessage, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	r, ok := s.llm[tenant]
	return r, ok
}

// Redaction returns a tenant's stored redaction settings (read-your-writes:
// the last message on its subject), or ErrNotFound.
func (s *Store) Redaction(ctx context.Context, tenant string) (redact.Record, error) {
	var r redact.Record
	seq, err := s.last(ctx, streams.RedactionSubject(tenant), &r)
	r.Revision = seq
	return r, err
}

// PutRedaction stores a tenant's redaction settings (last write wins) and
// returns the revision.
func (s *Store) PutRedaction(ctx context.Context, r redact.Record) (uint64, error) {
	return s.put(ctx, streams.RedactionSubject(r.Tenant), r, nil)
}

// LLMConfig decodes a tenant's stored judge configuration into v and
// returns its revision, or ErrNotFound.
func (s *Store) LLMConfig(ctx context.Context, tenant string, v any) (uint64, error) {
	return s.last(ctx, streams.LLMConfigSubject(tenant), v)
}

// PutLLMConfig stores a tenant's judge configuration record v.
func (s *Store) PutLLMConfig(ctx context.Context, tenant string, v any) (uint64, error) {
	return s.put(ctx, streams.LLMConfigSubject(tenant), v, nil)
}

// DeploymentKeysBucket is the KV bucket where Vigil once generated its
// redaction and sealing keys, next to the data they protect. Nothing reads
// or writes it any more except `vigil secrets export`, which moves the keys
// into files or the environment and deletes it.
const DeploymentKeysBucket = "vigil_deployment_keys"

// ErrNoSecret is returned when a deployment secret that must be
// configured is not.
var ErrNoSecret = errors.New("deployment secret not configured")

// RequireSecret checks that a deployment secret called name (how the
// operator sets it, e.g. "--redaction-key / $VIGIL_REDACTION_KEY") is
// configured and at least 32 bytes. Secrets come from files or the
// environment only: a service never generates or fetches one.
func RequireSecret(name string, key []byte) error {
	if len(key) == 0 {
		return fmt.Errorf("%w: %s is required (a base64 secret of at least 32 bytes, e.g. `head -c32 /dev/urandom | base64`; `vigil dev` generates its own into the data directory)", ErrNoSecret, name)
	}
	if len(key) < 32 {
		return fmt.Errorf("%w: %s must be at least 32 bytes", ErrNoSecret, name)
	}
	return nil
}

// StartSettings builds the redactor keyed by key (required) and starts a
// settings view that follows CONTROL until ctx ends. Processes run it on
// their supervisor's view context, which ends only after HTTP drained:
// the data path needs it from the first request to the last.
func StartSettings(ctx context.Context, js jetstream.JetStream, key []byte, log *slog.Logger) (*Settings, error) {
	if err := RequireSecret("the redaction key", key); err != nil {
		return nil, err
	}
	red, err := redact.New(key)
	if err != nil {
		return nil, err
	}
	st := NewSettings(js, red, log)
	if err := st.Run(ctx); err != nil {
		return nil, err
	}
	return st, nil
}

// RedactionWithin is Redaction bounded by timeout, failing with a
// retryable 503 while the view is still loading: data is never stored
// unredacted because the settings were not there yet.
func (s *Settings) RedactionWithin(ctx context.Context, tenant string, timeout time.Duration) (*redact.Policy, error) {
	if s == nil {
		return nil, apperr.Unavailable("redaction is not started", time.Second, errors.New("settings view was not started"))
	}
	select {
	case <-s.ready:
		// Loaded (every request after start-up): no wait, so no timer.
		return s.Redaction(ctx, tenant)
	default:
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	pol, err := s.Redaction(wctx, tenant)
	if err != nil {
		return nil, apperr.Unavailable("redaction settings are loading; retry", time.Second, err)
	}
	return pol, nil
}

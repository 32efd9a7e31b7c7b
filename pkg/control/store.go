package control

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/auth"
	"github.com/vigilhq/vigil/pkg/consistency"
	"github.com/vigilhq/vigil/pkg/natsx"
	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// Store writes control-plane changes to CONTROL and reads single entities
// as the last message on their own subject, which is always current.
type Store struct {
	js jetstream.JetStream
}

// NewStore returns a store over js. CONTROL must exist.
func NewStore(js jetstream.JetStream) *Store { return &Store{js: js} }

// Agent returns the current state of an agent, or ErrNotFound.
func (s *Store) Agent(ctx context.Context, tenant, id string) (agent.Agent, error) {
	var ch agent.Change
	seq, err := s.last(ctx, streams.AgentSubject(tenant, id), &ch)
	if err != nil {
		return agent.Agent{}, err
	}
	ch.Agent.Revision = seq
	return ch.Agent, nil
}

func (s *Store) last(ctx context.Context, subject string, v any) (uint64, error) {
	st, err := s.js.Stream(ctx, streams.Control)
	if err != nil {
		return 0, fmt.Errorf("control stream: %w", err)
	}
	msg, err := st.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, ErrNotFound
	}
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", subject, err)
	}
	if err := json.Unmarshal(msg.Data, v); err != nil {
		return 0, fmt.Errorf("decode %s: %w", subject, err)
	}
	return msg.Sequence, nil
}

// ErrConflict is returned when an optimistic write lost: the entity
// already exists (register) or changed since it was read (update).
var ErrConflict = errors.New("conflict")

// PutAgent records a change to an agent, provided the agent's subject is
// still at sequence expect (0: the agent must not exist yet). It returns
// the new revision.
func (s *Store) PutAgent(ctx context.Context, ch agent.Change, expect uint64) (uint64, error) {
	return s.put(ctx, streams.AgentSubject(ch.Tenant, ch.Agent.AgentID), ch, &expect)
}

// put publishes v on subject; with expect non-nil the write only succeeds
// if the subject is still at that sequence (ErrConflict otherwise).
func (s *Store) put(ctx context.Context, subject string, v any, expect *uint64) (uint64, error) {
	data, err := json.Marshal(v)
	if err != nil {
		return 0, fmt.Errorf("encode %s: %w", subject, err)
	}
	msg := nats.NewMsg(subject)
	msg.Data = data
	var opts []jetstream.PublishOpt
	if expect != nil {
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(*expect))
	}
	ack, err := s.js.PublishMsg(ctx, msg, opts...)
	if natsx.IsWrongLastSequence(err) {
		return 0, ErrConflict
	}
	if err != nil {
		return 0, apperr.Unavailable("control stream did not acknowledge the write", time.Second, err)
	}
	consistency.Note(ctx, streams.Control, ack.Sequence)
	return ack.Sequence, nil
}

// PutRegistry records a tenant's agent-registry settings (last write
// wins).
func (s *Store) PutRegistry(ctx context.Context, r agent.RegistrySettings) (uint64, error) {
	return s.put(ctx, streams.RegistrySubject(r.Tenant), r, nil)
}

// Policy returns a policy's current state, or ErrNotFound.
func (s *Store) Policy(ctx context.Context, tenant, id string) (policy.Record, error) {
	var r policy.Record
	seq, err := s.last(ctx, streams.PolicySubject(tenant, id), &r)
	r.Version = seq
	return r, err
}

// PutPolicy records a policy version if the policy is still at expect.
func (s *Store) PutPolicy(ctx context.Context, r policy.Record, expect uint64) (uint64, error) {
	return s.put(ctx, streams.PolicySubject(r.Tenant, r.ID), r, &expect)
}

// OrgPolicy returns the tenant's org policy, or ErrNotFound.
func (s *Store) OrgPolicy(ctx context.Context, tenant string) (policy.OrgRecord, error) {
	var r policy.OrgRecord
	_, err := s.last(ctx, streams.OrgPolicySubject(tenant), &r)
	return r, err
}

// PutOrgPolicy records the tenant's org policy (last write wins).
func (s *Store) PutOrgPolicy(ctx context.Context, r policy.OrgRecord) (uint64, error) {
	return s.put(ctx, streams.OrgPolicySubject(r.Tenant), r, nil)
}

// PutTriage records a human's triage of a decision.
func (s *Store) PutTriage(ctx context.Context, t policy.Triage) (uint64, error) {
	return s.put(ctx, streams.TriageSubject(t.Tenant, t.DecisionID), t, nil)
}

// CreateKey stores a new key for tenant with role and returns its record
// and the token, which exists nowhere else afterwards.
func (s *Store) CreateKey(ctx context.Context, tenant string, role auth.Role, name, by string) (auth.KeyRecord, string, error) {
	return s.IssueKey(ctx, KeySpec{Tenant: tenant, Role: role, Name: name, By: by})
}

// KeySpec describes a key to issue.
type KeySpec struct {
	Tenant string
	Role   auth.Role
	Name   string
	By     string
	// ExpiresAt, if set, is when the key stops authenticating.
	ExpiresAt *time.Time
	// Agents binds an agent key to the agents it may act as (validated
	// with auth.Binding by the caller).
	Agents []string
}

// IssueKey stores a new key and returns its record and the token, which
// exists nowhere else afterwards.
func (s *Store) IssueKey(ctx context.Context, spec KeySpec) (auth.KeyRecord, string, error) {
	id, token, err := auth.NewKey()
	if err != nil {
		return auth.KeyRecord{}, "", err
	}
	rec := auth.KeyRecord{
		ID: id, Tenant: spec.Tenant, Name: spec.Name, Role: spec.Role, Agents: spec.Agents,
		Hash: auth.Hash(token), Prefix: auth.DisplayPrefix(token),
		CreatedAt: time.Now().UTC(), CreatedBy: spec.By, ExpiresAt: spec.ExpiresAt,
	}
	if _, err := s.put(ctx, streams.KeySubject(spec.Tenant, id), rec, new(uint64)); err != nil {
		return auth.KeyRecord{}, "", fmt.Errorf("store key: %w", err)
	}
	return rec, token, nil
}

// Key returns a key's current state, or ErrNotFound.
func (s *Store) Key(ctx context.Context, tenant, id string) (auth.KeyRecord, uint64, error) {
	var k auth.KeyRecord
	seq, err := s.last(ctx, streams.KeySubject(tenant, id), &k)
	return k, seq, err
}

// RevokeKey marks a key revoked, provided it is still at expect. It
// returns the CONTROL sequence of the revocation, which callers wait for
// so the key is refused from their next request on.
func (s *Store) RevokeKey(ctx context.Context, k auth.KeyRecord, by string, expect uint64) (uint64, error) {
	now := time.Now().UTC()
	k.RevokedAt, k.RevokedBy = &now, by
	return s.put(ctx, streams.KeySubject(k.Tenant, k.ID), k, &expect)
}

// BindKey sets the agents an agent key is bound to, by whom, provided
// the key is still at expect. It returns the CONTROL sequence of the change, which
// callers wait for so the binding holds from their next request on.
func (s *Store) BindKey(ctx context.Context, k auth.KeyRecord, agents []string, by string, expect uint64) (uint64, error) {
	now := time.Now().UTC()
	k.Agents, k.BoundAt, k.BoundBy = agents, &now, by
	return s.put(ctx, streams.KeySubject(k.Tenant, k.ID), k, &expect)
}

// HasAnyKey reports whether any key was ever created, without needing a
// running catalog (used to bootstrap the first owner key).
func (s *Store) HasAnyKey(ctx context.Context) (bool, error) {
	st, err := s.js.Stream(ctx, streams.Control)
	if err != nil {
		return false, fmt.Errorf("control stream: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(streams.AllKeyChanges))
	if err != nil {
		return false, fmt.Errorf("control stream info: %w", err)
	}
	return len(info.State.Subjects) > 0, nil
}

// Reseal rewrites, with fn, the current state of every subject of CONTROL
// matching filter: fn returns the new record and whether it changed, and a
// changed record is written compare-and-set on the subject's sequence, so
// a concurrent change is never overwritten (it fails the rewrite instead;
// run it again). It returns how many records it rewrote. `vigil secrets
// rotate` re-seals credentials with it.
func (s *Store) Reseal(ctx context.Context, filter string, fn func(data []byte) ([]byte, bool, error)) (int, error) {
	st, err := s.js.Stream(ctx, streams.Control)
	if err != nil {
		return 0, fmt.Errorf("reseal: %w", err)
	}
	info, err := st.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, fmt.Errorf("reseal: %w", err)
	}
	n := 0
	for subject := range info.State.Subjects {
		msg, err := st.GetLastMsgForSubject(ctx, subject)
		if err != nil {
			return n, fmt.Errorf("reseal %s: %w", subject, err)
		}
		data, changed, err := fn(msg.Data)
		if err != nil {
			return n, fmt.Errorf("reseal %s: %w", subject, err)
		}
		if !changed {
			continue
		}
		out := nats.NewMsg(subject)
		out.Data = data
		if _, err := s.js.PublishMsg(ctx, out, jetstream.WithExpectLastSequencePerSubject(msg.Sequence)); err != nil {
			return n, fmt.Errorf("reseal %s: %w", subject, err)
		}
		n++
	}
	return n, nil
}

package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/natsx"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
)

// LabelBucket is the JetStream KV bucket holding each session's
// data-flow labels: one key per tenant and session, whose value is every
// label the session carries with the record that set it. Every replica
// reads and writes it, so a session's labels do not depend on which
// replica decides, and they survive restarts.
const LabelBucket = streams.SessionLabelsBucket

// labelMaxAge is how long a session's labels are kept after its last new
// label: a session silent for longer starts clean.
const labelMaxAge = 30 * 24 * time.Hour

// labelRetries bounds the compare-and-set loop of one label write; each
// retry means another decision of the same session wrote in between.
const labelRetries = 20

// sessionLabels is the stored value of one session's labels.
type sessionLabels struct {
	Tenant    string               `json:"tenant"`
	SessionID string               `json:"sessionId"`
	Labels    []rules.SessionLabel `json:"labels"`
}

// labelStore reads and adds session labels in LabelBucket.
type labelStore struct{ kv jetstream.KeyValue }

// openLabels creates or updates the label bucket. On a NATS cluster
// (replicas > 1) reads are served by the stream's leader, so that a label
// acknowledged to one policy replica is seen by the next decision on any
// other (natsx.ConsistentKeyValue).
func openLabels(ctx context.Context, js jetstream.JetStream, replicas int) (*labelStore, error) {
	kv, err := natsx.ConsistentKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket: LabelBucket, Description: "Data-flow labels of each session, with the record that set each",
		History: 1, TTL: labelMaxAge, Replicas: max(replicas, 1),
	})
	if err != nil {
		return nil, fmt.Errorf("session labels: %w", err)
	}
	return &labelStore{kv: kv}, nil
}

// labelKey is the session's key: the tenant, then the session id as a
// subject token ("~" marks an encoded id; KV keys spell it "=").
func labelKey(tenant, sessionID string) string {
	tok := streams.Token(sessionID)
	if strings.HasPrefix(tok, "~") {
		tok = "=" + tok[1:]
	}
	return tenant + "." + tok
}

// get returns the session's labels and the entry's revision (0: none yet).
func (l *labelStore) get(ctx context.Context, tenant, sessionID string) ([]rules.SessionLabel, uint64, error) {
	if l == nil {
		return nil, 0, errors.New("the session label store is not open")
	}
	e, err := l.kv.Get(ctx, labelKey(tenant, sessionID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, nil
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read session labels: %w", err)
	}
	var v sessionLabels
	if err := json.Unmarshal(e.Value(), &v); err != nil {
		// A value this service cannot read must not read as "no labels".
		return nil, 0, fmt.Errorf("read session labels: undecodable entry: %w", err)
	}
	if v.Tenant != tenant || v.SessionID != sessionID {
		return nil, 0, fmt.Errorf("read session labels: entry %s belongs to %s/%s", e.Key(), v.Tenant, v.SessionID)
	}
	return v.Labels, e.Revision(), nil
}

// labelsRead is what a decision read of its session's labels: the
// labels at revision rev (0: none stored), when ok.
type labelsRead struct {
	labels []rules.SessionLabel
	rev    uint64
	ok     bool
}

// add stores labels on the session, keeping for each name the first
// record that set it. Concurrent writers (other decisions of the session,
// on any replica) are merged by compare-and-set on the entry's revision,
// so no label is lost to a race. The first attempt builds on what the
// decision read (seen), saving a read when no one wrote in between.
func (l *labelStore) add(ctx context.Context, tenant, sessionID string, add []rules.SessionLabel, seen labelsRead) error {
	key := labelKey(tenant, sessionID)
	for range labelRetries {
		cur, rev := seen.labels, seen.rev
		if !seen.ok {
			var err error
			if cur, rev, err = l.get(ctx, tenant, sessionID); err != nil {
				return err
			}
		}
		seen.ok = false // a conflict re-reads
		next := slices.Clone(cur)
		for _, a := range add {
			if !slices.ContainsFunc(next, func(c rules.SessionLabel) bool { return c.Name == a.Name }) {
				next = append(next, a)
			}
		}
		if len(next) == len(cur) {
			return nil
		}
		val, err := json.Marshal(sessionLabels{Tenant: tenant, SessionID: sessionID, Labels: next})
		if err != nil {
			return fmt.Errorf("encode session labels: %w", err)
		}
		if rev == 0 {
			_, err = l.kv.Create(ctx, key, val)
		} else {
			_, err = l.kv.Update(ctx, key, val, rev)
		}
		if err == nil {
			return nil
		}
		if !casConflict(err) {
			return fmt.Errorf("write session labels: %w", err)
		}
	}
	return fmt.Errorf("write session labels: %d concurrent writers in a row", labelRetries)
}

// casConflict reports whether a KV write lost a compare-and-set race.
func casConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence
}

// sessionLabelsFor fills in the session's labels when the pack reads
// them or may add some. A store that cannot be read is recorded on the
// session: rules testing session.labels then fail closed.
func (s *Service) sessionLabelsFor(ctx context.Context, pack *rules.Pack, tenant string, sess *rules.Session) labelsRead {
	if sess.ID == "" || (!pack.ReadsLabels() && pack.LabelRules() == 0) {
		return labelsRead{}
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	labels, rev, err := s.labels.get(rctx, tenant, sess.ID)
	if err != nil {
		s.labelErrors.WithLabelValues("read").Inc()
		s.log.Warn("session labels unavailable; rules reading them fail closed", "tenant", tenant, "error", err.Error())
		sess.LabelsUnavailable = err.Error()
		return labelsRead{}
	}
	sess.Labels = labels
	return labelsRead{labels: labels, rev: rev, ok: true}
}

// storeLabels adds the labels rec's decision gives its session. It runs
// after the decision is recorded and before it is answered, so any
// decision asked for after this one's answer, on any replica, sees them.
func (s *Service) storeLabels(ctx context.Context, rec rules.DecisionRecord, seen labelsRead) error {
	if len(rec.Decision.Labels) == 0 {
		return nil
	}
	add := make([]rules.SessionLabel, len(rec.Decision.Labels))
	for i, l := range rec.Decision.Labels {
		add[i] = rules.SessionLabel{Name: l.Name, DecisionID: rec.ID, EventID: rec.EventID, PolicyID: l.PolicyID, RuleID: l.RuleID, At: rec.At}
	}
	wctx, cancel := context.WithTimeout(ctx, s.cfg.PublishTimeout)
	defer cancel()
	if err := s.labels.add(wctx, rec.Tenant, rec.SessionID, add, seen); err != nil {
		s.labelErrors.WithLabelValues("write").Inc()
		return apperr.Unavailable("could not label the session", time.Second, err)
	}
	s.labelsAdded.Add(float64(len(add)))
	return nil
}

// Package agent defines a registered AI agent, the change events that
// record its history on the CONTROL stream, and the validation of the
// registration and update bodies (the KLA body plus the Kaplaix fields).
package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/apperr"
	"github.com/vigilhq/vigil/pkg/canonjson"
	"github.com/vigilhq/vigil/pkg/event"
)

// Statuses an agent can be in.
const (
	StatusActive  = "active"
	StatusPaused  = "paused"
	StatusRetired = "retired"
)

// Sources of an agent record.
const (
	// SourceRegistered agents were declared through the API.
	SourceRegistered = "registered"
	// SourceDiscovered agents were first seen in an event and registered
	// automatically; an explicit registration may later claim them.
	SourceDiscovered = "discovered"
)

// Agent is an agent's current state.
type Agent struct {
	AgentID     string         `json:"agentId"`
	Name        string         `json:"name"`
	Description string         `json:"description,omitempty"`
	Model       string         `json:"model,omitempty"`
	Temperature *float64       `json:"temperature,omitempty"`
	Tools       []string       `json:"tools"`
	Framework   string         `json:"framework,omitempty"`
	Version     string         `json:"version,omitempty"`
	Owner       string         `json:"owner,omitempty"`
	Environment string         `json:"environment,omitempty"`
	Tags        []string       `json:"tags"`
	Metadata    map[string]any `json:"metadata"`
	Status      string         `json:"status"`
	Source      string         `json:"source"`
	// Declaration is what the agent is expected to use (Kaizen's
	// manifest); nil until one is posted.
	Declaration  *Declaration `json:"declaration,omitempty"`
	Settings     Settings     `json:"settings"`
	ManifestHash string       `json:"manifestHash"`
	// ManifestSignature is the ledger key's Ed25519 signature over the
	// canonical manifest ("ed25519:<base64>", see docs/ledger.md); null
	// for an agent that was only discovered, whose manifest nobody
	// declared, and until a changed manifest is signed.
	ManifestSignature *string   `json:"manifestSignature"`
	RegisteredAt      time.Time `json:"registeredAt"`
	UpdatedAt         time.Time `json:"updatedAt"`
	// Revision is the CONTROL stream sequence of this state; it changes on
	// every write and can be used as an ETag.
	Revision uint64 `json:"revision"`
}

// Change operations.
const (
	OpRegistered = "registered"
	OpDiscovered = "discovered"
	OpUpdated    = "updated"
)

// RegistrySettings are a tenant's agent-registry settings, stored on
// CONTROL (the last message on streams.RegistrySubject is in force).
type RegistrySettings struct {
	Tenant string `json:"tenant"`
	// AutoRegister lets POST /v1/decisions.evaluate register an agent id
	// it has never seen (as a discovered agent, recorded with who asked)
	// and evaluate it, instead of answering 404 not_found as KLA
	// documents. Off unless a tenant turns it on.
	AutoRegister bool      `json:"autoRegister"`
	UpdatedAt    time.Time `json:"updatedAt,omitzero"`
	By           string    `json:"by,omitempty"`
}

// Change is the CONTROL event for an agent: the operation and the full
// state after it, so the last change on an agent's subject is its state.
type Change struct {
	Op     string    `json:"op"`
	Tenant string    `json:"tenant"`
	Agent  Agent     `json:"agent"`
	By     string    `json:"by,omitempty"`
	At     time.Time `json:"at"`
}

// Manifest is the part of an agent that defines its expected behaviour
// (KLA's registration body): its hash identifies a declared version of
// the agent, and the ledger's key signs it.
type Manifest struct {
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Model       string   `json:"model"`
	Temperature *float64 `json:"temperature"`
	Tools       []string `json:"tools"`
	Framework   string   `json:"framework"`
	Version     string   `json:"version"`
}

// Manifest returns the agent's manifest, tools sorted (their order does
// not matter) and never null.
func (a Agent) Manifest() Manifest {
	tools := slices.Clone(a.Tools)
	if tools == nil {
		tools = []string{}
	}
	slices.Sort(tools)
	return Manifest{a.Name, a.Description, a.Model, a.Temperature, tools, a.Framework, a.Version}
}

// Canonical is the manifest in Vigil's canonical JSON (pkg/canonjson):
// the bytes manifestHash hashes and manifestSignature signs. Tools are
// sorted here too, so a manifest read back from any agent JSON gives
// the same bytes.
func (m Manifest) Canonical() ([]byte, error) {
	m.Tools = slices.Clone(m.Tools)
	if m.Tools == nil {
		m.Tools = []string{}
	}
	slices.Sort(m.Tools)
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("agent manifest: %w", err)
	}
	return canonjson.Canonicalize(b)
}

// Hash is "sha256:<hex>" over the canonical manifest.
func (m Manifest) Hash() (string, error) {
	c, err := m.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// ComputeManifestHash returns the hash of the agent's manifest.
func (a Agent) ComputeManifestHash() string {
	// Only a NaN or infinite temperature fails to encode, and apply
	// refuses those.
	h, _ := a.Manifest().Hash()
	return h
}

// NewID returns a generated agent id in the KLA style.
func NewID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "agt_" + hex.EncodeToString(b[:])
}

// DefaultMaxPerTenant is how many agents a tenant may have before events
// naming a new agent are refused at ingest, registrations of new agents
// are refused and discovery stops adding agents: one runaway client
// inventing an id per event must not grow the registry (and every
// per-agent projection) without bound.
const DefaultMaxPerTenant = 10000

// CodeLimit is the field error code of a request refused because its
// tenant is at its agent cap.
const CodeLimit = "agent_limit"

// LimitReached is the error for a new agent id when the tenant already
// has max agents; path prefixes the field ("events[3]." in a batch).
func LimitReached(max int, id, path string) error {
	e := apperr.Conflict("the tenant has reached its limit of %d agents; new agents are refused", max)
	e.Details = []apperr.FieldError{{Path: path + "agentId", Code: CodeLimit,
		Message: fmt.Sprintf("agent %q is new and the tenant already has %d agents (the deployment's cap)", id, max)}}
	return e
}

// Discovered is the state recorded for an agent first seen in an event.
func Discovered(id string, at time.Time) Agent {
	a := Agent{AgentID: id, Name: id, Status: StatusActive, Source: SourceDiscovered, RegisteredAt: at, UpdatedAt: at}
	a.normalize()
	return a
}

func (a *Agent) normalize() {
	if a.Tools == nil {
		a.Tools = []string{}
	}
	if a.Tags == nil {
		a.Tags = []string{}
	}
	if a.Metadata == nil {
		a.Metadata = map[string]any{}
	}
	if h := a.ComputeManifestHash(); h != a.ManifestHash {
		// A signature is over one manifest: a changed manifest is
		// unsigned until the ledger signs it again.
		a.ManifestHash, a.ManifestSignature = h, nil
	}
}

// Field limits.
const (
	maxText     = 200
	maxDesc     = 4000
	maxList     = 256
	maxMetadata = 16 << 10
)

// ParseRegistration validates a POST /v1/agents body. The agent id comes
// from "agentId" (or Kaplaix's "id") or is generated.
func ParseRegistration(body []byte, now time.Time) (Agent, error) {
	a := Agent{Status: StatusActive, Source: SourceRegistered, RegisteredAt: now, UpdatedAt: now}
	fields, err := objectFields(body)
	if err != nil {
		return Agent{}, err
	}
	if _, ok := fields["agentId"]; !ok {
		if id, ok := fields["id"]; ok {
			fields["agentId"] = id
		}
	}
	delete(fields, "id")
	var errs []apperr.FieldError
	if raw, ok := fields["agentId"]; ok && !isNull(raw) {
		var id string
		if json.Unmarshal(raw, &id) != nil || !event.ValidID(id, event.MaxAgentIDLen) {
			errs = append(errs, fe("agentId", event.CodeInvalid, "agentId must be 1-128 letters, digits or ._:@+=-, starting with a letter or digit"))
		}
		a.AgentID = id
	} else {
		a.AgentID = NewID()
	}
	delete(fields, "agentId")
	errs = append(errs, apply(&a, fields)...)
	if a.Name == "" {
		// Absent or null: named after its id. An explicit "" is refused,
		// as ApplyPatch refuses to empty the name.
		var s string
		if raw, ok := fields["name"]; ok && !isNull(raw) && json.Unmarshal(raw, &s) == nil && s == "" {
			errs = append(errs, fe("name", event.CodeRequired, "name must not be empty"))
			sortErrs(errs)
		} else {
			a.Name = a.AgentID
		}
	}
	if len(errs) > 0 {
		return Agent{}, apperr.Validation("agent failed validation", errs...)
	}
	a.normalize()
	return a, nil
}

// ApplyPatch applies a PATCH /v1/agents/:id body (JSON merge patch: a
// field present replaces, null clears) to cur.
func ApplyPatch(cur Agent, body []byte, now time.Time) (Agent, error) {
	fields, err := objectFields(body)
	if err != nil {
		return Agent{}, err
	}
	if raw, ok := fields["agentId"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil || id != cur.AgentID {
			return Agent{}, apperr.Validation("agentId cannot be changed", fe("agentId", "immutable", "agentId cannot be changed"))
		}
		delete(fields, "agentId")
	}
	next := cur
	next.Tools = slices.Clone(cur.Tools)
	next.Tags = slices.Clone(cur.Tags)
	if errs := apply(&next, fields); len(errs) > 0 {
		return Agent{}, apperr.Validation("agent update failed validation", errs...)
	}
	if _, ok := fields["name"]; ok && next.Name == "" {
		return Agent{}, apperr.Validation("agent update failed validation", fe("name", event.CodeRequired, "name cannot be empty"))
	}
	next.UpdatedAt = now
	next.normalize()
	return next, nil
}

func objectFields(body []byte) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(body, &fields); err != nil || fields == nil {
		return nil, apperr.Validation("body must be a JSON object", fe("", event.CodeMalformed, "expected a JSON object"))
	}
	return fields, nil
}

func isNull(raw json.RawMessage) bool { return bytes.Equal(bytes.TrimSpace(raw), []byte("null")) }

func fe(path, code, format string, args ...any) apperr.FieldError {
	return apperr.FieldError{Path: path, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Fields are the agent fields a registration or a patch may set (besides
// agentId), as apply reads them; the api's compatibility doors ignore
// any other top-level field rather than refuse it.
var Fields = []string{"name", "description", "model", "framework", "version", "agentVersion", "owner", "environment", "tools", "tags", "temperature", "metadata", "status"}

// apply sets each known field from fields onto a, collecting every error.
func apply(a *Agent, fields map[string]json.RawMessage) []apperr.FieldError {
	var errs []apperr.FieldError
	text := func(name string, max int, dst *string) {
		raw := fields[name]
		if isNull(raw) {
			*dst = ""
			return
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			errs = append(errs, fe(name, event.CodeInvalidType, "%s must be a string", name))
			return
		}
		if len(s) > max {
			errs = append(errs, fe(name, event.CodeTooLong, "%s must be at most %d bytes", name, max))
			return
		}
		*dst = s
	}
	list := func(name string, dst *[]string) {
		raw := fields[name]
		if isNull(raw) {
			*dst = []string{}
			return
		}
		var l []string
		if json.Unmarshal(raw, &l) != nil {
			errs = append(errs, fe(name, event.CodeInvalidType, "%s must be an array of strings", name))
			return
		}
		if len(l) > maxList {
			errs = append(errs, fe(name, event.CodeTooLong, "%s must have at most %d items", name, maxList))
			return
		}
		for i, s := range l {
			if s == "" || len(s) > maxText {
				errs = append(errs, fe(fmt.Sprintf("%s[%d]", name, i), event.CodeInvalid, "must be 1-%d bytes", maxText))
				return
			}
		}
		*dst = l
	}
	for name, raw := range fields {
		switch name {
		case "name":
			text(name, maxText, &a.Name)
		case "description":
			text(name, maxDesc, &a.Description)
		case "model":
			text(name, maxText, &a.Model)
		case "framework":
			text(name, maxText, &a.Framework)
		case "version", "agentVersion":
			text(name, maxText, &a.Version)
		case "owner":
			text(name, maxText, &a.Owner)
		case "environment":
			text(name, maxText, &a.Environment)
		case "tools":
			list(name, &a.Tools)
		case "tags":
			list(name, &a.Tags)
		case "temperature":
			if isNull(raw) {
				a.Temperature = nil
				continue
			}
			var t float64
			if json.Unmarshal(raw, &t) != nil {
				errs = append(errs, fe(name, event.CodeInvalidType, "temperature must be a number"))
			} else if t < 0 || t > 2 {
				errs = append(errs, fe(name, event.CodeOutOfRange, "temperature must be between 0 and 2"))
			} else {
				a.Temperature = &t
			}
		case "metadata":
			if isNull(raw) {
				a.Metadata = map[string]any{}
				continue
			}
			var m map[string]any
			if json.Unmarshal(raw, &m) != nil || m == nil {
				errs = append(errs, fe(name, event.CodeInvalidType, "metadata must be an object"))
			} else if len(raw) > maxMetadata {
				errs = append(errs, fe(name, event.CodeTooLarge, "metadata must be at most %d bytes", maxMetadata))
			} else {
				a.Metadata = m
			}
		case "status":
			var s string
			if json.Unmarshal(raw, &s) != nil || (s != StatusActive && s != StatusPaused && s != StatusRetired) {
				errs = append(errs, fe(name, event.CodeInvalid, "status must be active, paused or retired"))
			} else {
				a.Status = s
			}
		default:
			errs = append(errs, fe(name, "unknown_field", "unknown field %q", name))
		}
	}
	sortErrs(errs)
	return errs
}

func sortErrs(errs []apperr.FieldError) {
	slices.SortStableFunc(errs, func(x, y apperr.FieldError) int { return strings.Compare(x.Path, y.Path) })
}

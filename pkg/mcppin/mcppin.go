// Package mcppin holds what the MCP gateway and the api share about tool
// pinning: the canonical hash of a tool definition, the pins a tenant
// approved for a server (stored on CONTROL), and the tool list a review
// decision carries to the person who approves it.
//
// A pin is the SHA-256 of a tool's canonical name, description and input
// schema. Pins are keyed by server and by tool name, but a renamed tool
// hashes differently (the name is in the hash) and its new name has no
// pin, so a rename shows up as a removal and a new tool.
package mcppin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/vigilhq/vigil/pkg/canonjson"
)

// Definition is the part of an MCP tool a pin covers: what the model
// reads (name and description) and what it is told it may send (the
// input schema). Titles, annotations, icons and output schemas are not
// pinned.
type Definition struct {
	Name        string          `json:"name"`
	Description string          `json:"description"`
	InputSchema json.RawMessage `json:"inputSchema"`
}

// Canonical is the definition as canonical JSON: object keys sorted at
// every depth, no insignificant space, numbers as written, no HTML
// escaping. Equal definitions have equal bytes whatever key order or
// spacing the server used.
func (d Definition) Canonical() ([]byte, error) {
	schema := d.InputSchema
	if len(bytes.TrimSpace(schema)) == 0 {
		schema = json.RawMessage("null")
	}
	var s any
	dec := json.NewDecoder(bytes.NewReader(schema))
	dec.UseNumber()
	if err := dec.Decode(&s); err != nil {
		return nil, fmt.Errorf("tool %q: input schema: %w", d.Name, err)
	}
	// A map marshals with sorted keys; json.Number keeps the literal.
	c, err := canonjson.Encode(map[string]any{"name": d.Name, "description": d.Description, "inputSchema": s})
	if err != nil {
		return nil, fmt.Errorf("tool %q: canonical form: %w", d.Name, err)
	}
	return c, nil
}

// Hash is "sha256:" and the hex SHA-256 of the canonical definition.
func (d Definition) Hash() (string, error) {
	c, err := d.Canonical()
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(c)
	return "sha256:" + hex.EncodeToString(sum[:]), nil
}

// Pin is one approved tool definition.
type Pin struct {
	Name string `json:"name"`
	Hash string `json:"hash"`
	// Definition is the definition as the review decision recorded it
	// (redacted like every recorded decision): for people and diffs, not
	// for matching, which uses Hash.
	Definition json.RawMessage `json:"definition,omitempty"`
	// DecisionID is the approved review that pinned it; ApprovedBy the
	// person who approved it.
	DecisionID string    `json:"decisionId"`
	ApprovedBy string    `json:"approvedBy"`
	PinnedAt   time.Time `json:"pinnedAt"`
}

// Ops of pins changes (the audit log's action).
const (
	// OpPinned: an approved review pinned tools.
	OpPinned = "pinned"
	// OpUnpinned: an owner or admin removed pins (DELETE /v1/mcp/pins).
	OpUnpinned = "unpinned"
)

// ServerPins is a tenant's approved tools of one MCP server: the last
// message on its CONTROL subject. A server without one is quarantined.
type ServerPins struct {
	Tenant string `json:"tenant"`
	Server string `json:"server"`
	// Tools are sorted by name, one pin per name.
	Tools []Pin `json:"tools"`
	// Op, By and UpdatedAt describe the change that wrote this state.
	Op        string    `json:"op"`
	By        string    `json:"by"`
	UpdatedAt time.Time `json:"updatedAt"`
	// UnpinnedAt is when pins of the server were last removed. A review
	// decision recorded before it cannot pin anything: it may be the very
	// approval that was withdrawn, replayed under its Idempotency-Key. The
	// gateway keys the reviews it asks after it anew.
	UnpinnedAt time.Time `json:"unpinnedAt,omitzero"`
}

// Lookup returns the pin of a tool name.
func (p ServerPins) Lookup(name string) (Pin, bool) {
	i, ok := slices.BinarySearchFunc(p.Tools, name, func(x Pin, n string) int { return strings.Compare(x.Name, n) })
	if !ok {
		return Pin{}, false
	}
	return p.Tools[i], true
}

// With returns p with pins set (a pin replaces the one of the same
// name), sorted by name, and whether anything changed. p is not modified.
func (p ServerPins) With(pins ...Pin) (ServerPins, bool) {
	out := p
	out.Tools = slices.Clone(p.Tools)
	changed := false
	for _, n := range pins {
		i, ok := slices.BinarySearchFunc(out.Tools, n.Name, func(x Pin, n string) int { return strings.Compare(x.Name, n) })
		switch {
		case ok && out.Tools[i].Hash == n.Hash:
			continue
		case ok:
			out.Tools[i] = n
		default:
			out.Tools = slices.Insert(out.Tools, i, n)
		}
		changed = true
	}
	return out, changed
}

// Without returns p without the pins of names (every pin when no name is
// given), and whether anything changed. p is not modified.
func (p ServerPins) Without(names ...string) (ServerPins, bool) {
	out := p
	out.Tools = slices.DeleteFunc(slices.Clone(p.Tools), func(x Pin) bool {
		return len(names) == 0 || slices.Contains(names, x.Name)
	})
	if out.Tools == nil {
		out.Tools = []Pin{}
	}
	return out, len(out.Tools) != len(p.Tools)
}

// ReviewedTool is one tool of a review decision (the action's
// arguments.tools): what the person approves, and what is pinned if
// they do.
type ReviewedTool struct {
	Name       string          `json:"name"`
	Hash       string          `json:"hash"`
	Definition json.RawMessage `json:"definition"`
	// PreviousHash and Diff are set for a changed tool: the pin it
	// replaces and a line diff of the two definitions.
	PreviousHash string `json:"previousHash,omitempty"`
	Diff         string `json:"diff,omitempty"`
}

// ReviewArguments is the arguments object of a review action.
type ReviewArguments struct {
	Server string         `json:"server"`
	Review string         `json:"review"`
	Tools  []ReviewedTool `json:"tools"`
}

// MaxReviewTools bounds the tools one review carries (and so one pin
// request writes).
const MaxReviewTools = 200

// hashLen is the length of a Hash.
var hashLen = len("sha256:") + 64

// ValidHash reports whether h has the shape of a Hash.
func ValidHash(h string) bool {
	if len(h) != hashLen || !strings.HasPrefix(h, "sha256:") {
		return false
	}
	_, err := hex.DecodeString(h[len("sha256:"):])
	return err == nil
}

// Diff is a line diff of two JSON documents, each pretty-printed with
// sorted keys first: lines only in a start with "- ", lines only in b
// with "+ ", shared lines with "  ". It is what a person reads to see how
// a tool changed.
func Diff(a, b json.RawMessage) string {
	la, lb := prettyLines(a), prettyLines(b)
	// Longest common subsequence; definitions are a few hundred lines at
	// most, and this runs once per changed tool.
	n, m := len(la), len(lb)
	lcs := make([][]int, n+1)
	for i := range lcs {
		lcs[i] = make([]int, m+1)
	}
	for i := n - 1; i >= 0; i-- {
		for j := m - 1; j >= 0; j-- {
			if la[i] == lb[j] {
				lcs[i][j] = lcs[i+1][j+1] + 1
			} else {
				lcs[i][j] = max(lcs[i+1][j], lcs[i][j+1])
			}
		}
	}
	var out strings.Builder
	i, j := 0, 0
	for i < n || j < m {
		switch {
		case i < n && j < m && la[i] == lb[j]:
			out.WriteString("  " + la[i] + "\n")
			i, j = i+1, j+1
		case j < m && (i == n || lcs[i][j+1] >= lcs[i+1][j]):
			out.WriteString("+ " + lb[j] + "\n")
			j++
		default:
			out.WriteString("- " + la[i] + "\n")
			i++
		}
	}
	return out.String()
}

// prettyLines pretty-prints a JSON document with sorted keys and splits
// it into lines; a document that is not JSON is split as text.
func prettyLines(doc json.RawMessage) []string {
	if len(bytes.TrimSpace(doc)) == 0 {
		return nil
	}
	var v any
	dec := json.NewDecoder(bytes.NewReader(doc))
	dec.UseNumber()
	if err := dec.Decode(&v); err != nil {
		return strings.Split(string(doc), "\n")
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return strings.Split(string(doc), "\n")
	}
	return strings.Split(strings.TrimSuffix(buf.String(), "\n"), "\n")
}

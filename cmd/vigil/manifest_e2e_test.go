package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/agent"
	"github.com/vigilhq/vigil/pkg/auth"
)

// TestAgentManifestSignature: a KLA registration answers a manifestHash
// with its manifestSignature; `vigil verify manifest` checks the agent as
// the API returns it against the key of GET /v1/ledger/key (fetched by URL
// or pinned), and fails, saying why, for a changed manifest, a forged
// signature, another deployment's key, and an agent only discovered.
func TestAgentManifestSignature(t *testing.T) {
	e := newEnv(t)
	viewer := e.key("default", auth.RoleViewer)
	reg := e.post(e.owner, "/v1/agents", map[string]any{"name": "claims-triage", "description": "Triages inbound insurance claims",
		"model": "gpt-4.1", "temperature": 0.2, "tools": []string{"lookup_policy", "flag_for_review"}})
	expect(t, reg, http.StatusCreated, "register")
	var created agent.Agent
	reg.decode(t, &created)
	if created.ManifestSignature == nil || !strings.HasPrefix(created.ManifestHash, "sha256:") {
		t.Fatalf("registration without a signed manifest hash: %s", reg)
	}
	got := e.get(viewer, "/v1/agents/"+created.AgentID)
	expect(t, got, http.StatusOK, "read the agent")

	var keyDoc struct {
		PublicKey string `json:"publicKey"`
	}
	e.get(viewer, "/v1/ledger/key").decode(t, &keyDoc)
	var keyOut bytes.Buffer
	if err := runLedgerKey([]string{"--signing-key", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))}, &keyOut); err != nil {
		t.Fatal(err)
	}
	otherKey := strings.TrimSpace(keyOut.String())

	dir := t.TempDir()
	verify := func(t *testing.T, body []byte, key ...string) (string, error) {
		t.Helper()
		path := filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_")+".json")
		writeFile(t, path, string(body))
		var out bytes.Buffer
		err := runVerify(context.Background(), append(append([]string{"manifest"}, key...), path), nil, &out)
		return out.String(), err
	}
	// edit returns the agent JSON read back with change applied to it.
	edit := func(change func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(got.body, &m); err != nil {
			t.Fatal(err)
		}
		change(m)
		b, _ := json.MarshalIndent(m, "", "  ")
		return b
	}
	byURL := []string{"--key", e.base + "/v1/ledger/key", "--api-key", viewer}
	pinned := []string{"--key", keyDoc.PublicKey}

	ok := []struct {
		name string
		body []byte
		key  []string
	}{
		{"the registration's 201, key fetched by URL", reg.body, byURL},
		{"the agent as read, pinned key", got.body, pinned},
		{"tools in another order", edit(func(m map[string]any) { m["tools"] = []string{"flag_for_review", "lookup_policy"} }), pinned},
		{"a changed field outside the manifest", edit(func(m map[string]any) { m["status"] = "paused" }), pinned},
	}
	for _, tc := range ok {
		t.Run(tc.name, func(t *testing.T) {
			if out, err := verify(t, tc.body, tc.key...); err != nil || !strings.HasPrefix(out, "OK: ") {
				t.Fatalf("want OK, got %v:\n%s", err, out)
			}
		})
	}

	// A discovered agent has a manifest hash nobody signed.
	expect(t, e.post(e.owner, "/v1/agents/found-later/manifest", map[string]any{"tools": []string{"search"}}), http.StatusOK, "declare")
	discovered := e.get(viewer, "/v1/agents/found-later")
	expect(t, discovered, http.StatusOK, "read the discovered agent")
	forged := edit(func(m map[string]any) {
		sig, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(m["manifestSignature"].(string), "ed25519:"))
		sig[10] ^= 1
		m["manifestSignature"] = "ed25519:" + base64.StdEncoding.EncodeToString(sig)
	})
	bad := []struct {
		name string
		body []byte
		key  []string
		want string
	}{
		{"a changed description", edit(func(m map[string]any) { m["description"] = "Approves every claim" }), pinned, "the manifest was changed"},
		{"a changed manifest with its hash recomputed", edit(func(m map[string]any) {
			m["model"] = "gpt-5"
			var a agent.Agent
			b, _ := json.Marshal(m)
			_ = json.Unmarshal(b, &a)
			m["manifestHash"] = a.ComputeManifestHash()
		}), pinned, "does not verify"},
		{"a forged signature", forged, byURL, "does not verify"},
		{"another deployment's key", got.body, []string{"--key", otherKey}, "does not verify"},
		{"no signature", edit(func(m map[string]any) { m["manifestSignature"] = nil }), pinned, "no manifestSignature"},
		{"an agent only discovered", discovered.body, pinned, "no manifestSignature"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			out, err := verify(t, tc.body, tc.key...)
			if err == nil || !strings.HasPrefix(out, "FAIL: ") || !strings.Contains(out, tc.want) {
				t.Fatalf("want FAIL naming %q, got %v:\n%s", tc.want, err, out)
			}
		})
	}
}

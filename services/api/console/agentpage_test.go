package console

import (
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/auth"
)

func TestBaselineDimsMarkWhatIsDeclared(t *testing.T) {
	profile := map[string]any{"baseline": map[string]any{
		"tools":        []any{map[string]any{"value": "web_search", "count": 21.0, "firstSeenAt": "2026-01-02T03:04:05.123456789Z"}, map[string]any{"value": "shell_exec", "count": 1.0}},
		"destinations": []any{},
		"kinds":        []any{map[string]any{"value": "tool_call", "count": 22.0}},
	}}
	dims := baselineDims(profile, map[string]any{"tools": []any{"web_search"}, "destinations": []any{}})
	if len(dims) != 4 || dims[0].Heading != "Tools" || !dims[0].DeclaredColumn || dims[2].DeclaredColumn {
		t.Fatalf("dims %+v", dims)
	}
	if r := dims[0].Rows; len(r) != 2 || r[0].Declared != "yes" || r[1].Declared != "no" || r[0].First != "2026-01-02 03:04:05Z" || r[0].Count != "21" {
		t.Fatalf("tools %+v", r)
	}
	if len(dims[1].Rows) != 0 || len(dims[3].Rows) != 0 {
		t.Fatalf("empty dimensions got rows: %+v", dims)
	}
	// Without a declaration nothing is marked.
	if d := baselineDims(profile, nil); d[0].DeclaredColumn || d[0].Rows[1].Declared != "" {
		t.Fatalf("no declaration: %+v", d[0])
	}
}

func TestAgentFormsFollowTheRole(t *testing.T) {
	for _, c := range []struct {
		role  auth.Role
		forms []string
		note  string
	}{
		{auth.RoleOwner, []string{"Pause", "Reset baseline…", "Halt"}, ""},
		{auth.RoleAdmin, []string{"Pause", "Reset baseline…", "Halt"}, ""},
		{auth.RoleMember, []string{"Pause", "Reset baseline…"}, "may not halt it (halts:manage)"},
		{auth.RoleViewer, nil, "may not pause, resume or reset its baseline (agents:write) or halt it (halts:manage)"},
	} {
		forms, note := agentForms(auth.Principal{Tenant: "t", Role: c.role}, "a/b", false)
		var labels []string
		for _, f := range forms {
			labels = append(labels, f.Label)
		}
		if strings.Join(labels, ",") != strings.Join(c.forms, ",") || (c.note == "") != (note == "") || !strings.Contains(note, c.note) {
			t.Errorf("%s: forms %v note %q", c.role, labels, note)
		}
		if len(forms) > 0 && forms[0].Action != Prefix+"/agents/a%2Fb/settings" {
			t.Errorf("%s: pause posts to %s", c.role, forms[0].Action)
		}
		// The reset is only a step to its confirmation page.
		if len(forms) > 1 && (forms[1].Action != Prefix+"/agents/a%2Fb/reset" || !forms[1].Get) {
			t.Errorf("%s: reset form %+v", c.role, forms[1])
		}
	}
	if forms, _ := agentForms(auth.Principal{Tenant: "t", Role: auth.RoleOwner}, "a", true); forms[0].Label != "Resume" {
		t.Errorf("a paused agent is offered %s", forms[0].Label)
	}
}

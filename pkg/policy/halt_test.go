package policy

import (
	"errors"
	"testing"

	"github.com/vigilhq/vigil/pkg/apperr"
)

func TestHaltCovers(t *testing.T) {
	tests := []struct {
		name           string
		h              Halt
		agent, session string
		want           bool
	}{
		{"tenant covers any agent", Halt{Scope: HaltTenant, Active: true}, "a", "", true},
		{"ended covers nothing", Halt{Scope: HaltTenant}, "a", "s", false},
		{"agent covers its agent", Halt{Scope: HaltAgent, AgentID: "a", Active: true}, "a", "s", true},
		{"agent leaves others", Halt{Scope: HaltAgent, AgentID: "a", Active: true}, "b", "s", false},
		{"session covers its session", Halt{Scope: HaltSession, SessionID: "s", Active: true}, "b", "s", true},
		{"session leaves sessionless decisions", Halt{Scope: HaltSession, SessionID: "s", Active: true}, "b", "", false},
		{"session narrowed to an agent", Halt{Scope: HaltSession, SessionID: "s", AgentID: "a", Active: true}, "b", "s", false},
		{"unknown scope fails closed", Halt{Scope: "region", Active: true}, "a", "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.h.Covers(tt.agent, tt.session); got != tt.want {
				t.Fatalf("Covers = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestValidateHalt(t *testing.T) {
	tests := []struct {
		name                          string
		scope, agent, session, reason string
		wantPaths                     []string
	}{
		{"tenant", HaltTenant, "", "", "incident", nil},
		{"agent", HaltAgent, "a", "", "incident", nil},
		{"session", HaltSession, "", "s", "incident", nil},
		{"session of an agent", HaltSession, "a", "s", "incident", nil},
		{"scope missing", "", "", "", "x", []string{"scope"}},
		{"scope unknown", "fleet", "", "", "x", []string{"scope"}},
		{"agent scope without agentId", HaltAgent, "", "", "x", []string{"agentId"}},
		{"session scope without sessionId", HaltSession, "a", "", "x", []string{"sessionId"}},
		{"tenant scope naming an agent", HaltTenant, "a", "", "x", []string{"agentId"}},
		{"agent scope naming a session", HaltAgent, "a", "s", "x", []string{"sessionId"}},
		{"reason blank", HaltTenant, "", "", "  ", []string{"reason"}},
		{"everything wrong", HaltAgent, "", "s", "", []string{"agentId", "sessionId", "reason"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidateHalt(tt.scope, tt.agent, tt.session, tt.reason)
			if len(tt.wantPaths) == 0 {
				if err != nil {
					t.Fatalf("ValidateHalt: %v", err)
				}
				return
			}
			var ae *apperr.Error
			if !errors.As(err, &ae) || ae.Kind != apperr.KindValidation {
				t.Fatalf("err = %v, want a validation error", err)
			}
			var got []string
			for _, d := range ae.Details {
				got = append(got, d.Path)
			}
			if len(got) != len(tt.wantPaths) {
				t.Fatalf("paths %v, want %v", got, tt.wantPaths)
			}
			for i := range got {
				if got[i] != tt.wantPaths[i] {
					t.Fatalf("paths %v, want %v", got, tt.wantPaths)
				}
			}
		})
	}
}

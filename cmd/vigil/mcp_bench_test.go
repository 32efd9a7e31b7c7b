package main

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/vigilhq/vigil/pkg/auth"
)

// BenchmarkMCPProxyCall measures one tools/call from an SDK client to an
// SDK server (in-memory transports): directly, and through the gateway
// with an allow decision (no policy), where each call is a decision over
// HTTP on the in-process stack, a redaction of the result and two events
// queued for the background reporter.
func BenchmarkMCPProxyCall(b *testing.B) {
	st, base, ownerKey := readBenchStack(b, 200*time.Millisecond)
	agentKey := polKey(b, st.Store, "bench", auth.RoleAgent, "bench-bot")
	owner := polClient{t: b, base: base, key: ownerKey}
	owner.post("/v1/agents", map[string]any{"agentId": "bench-bot"}).want(b, http.StatusCreated, "register the agent")
	u := newUpstream()
	ctx := context.Background()
	call := func(b *testing.B, cs *mcp.ClientSession) {
		for b.Loop() {
			res, err := cs.CallTool(ctx, &mcp.CallToolParams{Name: "echo", Arguments: map[string]any{"text": "hello"}})
			if err != nil || res.IsError {
				b.Fatalf("call: %v %+v", err, res)
			}
		}
	}
	b.Run("direct", func(b *testing.B) {
		cT, sT := mcp.NewInMemoryTransports()
		if _, err := u.srv.Connect(ctx, sT, nil); err != nil {
			b.Fatal(err)
		}
		cs, err := mcp.NewClient(&mcp.Implementation{Name: "bench", Version: "1"}, nil).Connect(ctx, cT, nil)
		if err != nil {
			b.Fatal(err)
		}
		defer cs.Close()
		call(b, cs)
	})
	_, cs := connectGateway(b, u, base, agentKey, "mcp-bench")
	q := pendingWhere(b, owner, "mcp_tool_review", "", "MCP_SERVER_QUARANTINED")
	decide(b, owner, q.ID, "approve")
	waitTools(b, cs, "tools approved", func(m map[string]string) bool { return len(m) == 3 })
	b.Run("proxy-allow", func(b *testing.B) { call(b, cs) })
}

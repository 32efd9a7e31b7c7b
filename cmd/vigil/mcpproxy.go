package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os/exec"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/vigilhq/vigil/pkg/config"
	"github.com/vigilhq/vigil/pkg/redact"
	"github.com/vigilhq/vigil/services/mcpgate"
)

const mcpProxyUsage = `Run an MCP gateway between an MCP client and one MCP server: the client sees only tools a person
approved (pinned by hash), every tools/call is a Vigil decision, results are redacted, and every call
and result is reported as an event (docs/mcp.md).

Usage:
  vigil mcp-proxy --server-name NAME [flags] -- COMMAND [ARGS…]   upstream over stdio (a command)
  vigil mcp-proxy --server-name NAME --upstream-url URL [flags]   upstream over Streamable HTTP
The client talks to the gateway over stdio, or over Streamable HTTP with --listen ADDR.`

// runMCPProxy is `vigil mcp-proxy`.
func runMCPProxy(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := config.New("vigil mcp-proxy", mcpProxyUsage)
	baseURL := fs.String("url", "VIGIL_API_URL", "http://127.0.0.1:8080", "base URL of the Vigil API")
	key := fs.String("key", "VIGIL_API_KEY", "", "agent API key (role agent) bound to the agent the gateway acts for")
	agentID := fs.String("agent-id", "VIGIL_AGENT_ID", "", "agent the decisions and events are for (optional when the key is bound to one agent)")
	session := fs.String("session-id", "VIGIL_MCP_SESSION_ID", "", "session of the gateway's decisions and events (default: a new mcp-… id per run)")
	server := fs.String("server-name", "VIGIL_MCP_SERVER_NAME", "", "name of the upstream MCP server: publisher of its tool calls and key of its pins (required)")
	upstreamURL := fs.String("upstream-url", "VIGIL_MCP_UPSTREAM_URL", "", "Streamable HTTP endpoint of the upstream server (instead of a command after --)")
	listen := fs.String("listen", "VIGIL_MCP_LISTEN", "", "serve clients over Streamable HTTP on this address (host:port) instead of stdio")
	tenant := fs.String("tenant", "VIGIL_TENANT", "", "tenant of the key: keys redaction placeholders so they match Vigil's (default \"mcp\")")
	approvalWait := fs.Duration("approval-wait", "VIGIL_MCP_APPROVAL_WAIT", 15*time.Minute, "how long a tools/call waits for a person before it is refused")
	resync := fs.Duration("resync", "VIGIL_MCP_RESYNC", time.Minute, "how often the server's tools are listed again without a notification")
	redactionKey := fs.RedactionKey()
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *server == "" {
		return errors.New("--server-name is required")
	}
	if *key == "" {
		return errors.New("an agent API key is required: pass --key or set $VIGIL_API_KEY")
	}
	var upstream mcp.Transport
	switch {
	case *upstreamURL != "" && fs.NArg() > 0:
		return errors.New("give either --upstream-url or a command after --, not both")
	case *upstreamURL != "":
		upstream = &mcp.StreamableClientTransport{Endpoint: *upstreamURL}
	case fs.NArg() > 0:
		// Not CommandContext: at shutdown gw.Close ends the server as MCP's
		// stdio transport asks (stdin closed, a grace period, then
		// signals), where a cancelled context would SIGKILL it first.
		cmd := exec.Command(fs.Arg(0), fs.Args()[1:]...)
		cmd.Stderr = stderr
		upstream = &mcp.CommandTransport{Command: cmd}
	default:
		return errors.New("no upstream: give --upstream-url or a command after --")
	}
	rkey, err := redactionKey.Optional()
	if err != nil {
		return err
	}
	// stdout may be the MCP channel: logs go to stderr.
	log := slog.New(slog.NewTextHandler(stderr, nil))
	if rkey == nil {
		// Placeholders then correlate within this run only.
		rkey = make([]byte, redact.KeyLen)
		_, _ = rand.Read(rkey)
		log.Warn("mcp-proxy: no --redaction-key; redaction placeholders will not match Vigil's")
	}
	red, err := redact.New(rkey)
	if err != nil {
		return err
	}
	gw, err := mcpgate.New(mcpgate.Config{
		VigilURL: *baseURL, APIKey: *key, AgentID: *agentID, SessionID: *session, Server: *server,
		Redaction: red.Default(), Tenant: *tenant, ApprovalWait: *approvalWait, Resync: *resync, Log: log,
	})
	if err != nil {
		return err
	}
	if err := gw.Connect(ctx, upstream); err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := gw.Close(cctx); err != nil {
			log.Warn("mcp-proxy: closing the upstream session", slog.String("error", err.Error()))
		}
	}()
	if *listen == "" {
		err := gw.Server().Run(ctx, &mcp.IOTransport{Reader: io.NopCloser(stdin), Writer: nopWriteCloser{stdout}})
		if errors.Is(err, context.Canceled) {
			return nil
		}
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: mcp.NewStreamableHTTPHandler(func(*http.Request) *mcp.Server { return gw.Server() }, nil), ReadHeaderTimeout: 10 * time.Second}
	log.Info("mcp-proxy: serving Streamable HTTP", slog.String("addr", ln.Addr().String()), slog.String("server", *server))
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("mcp-proxy: serve: %w", err)
	}
	return nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

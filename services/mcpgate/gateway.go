// Package mcpgate is Vigil's MCP gateway (`vigil mcp-proxy`): it sits
// between an MCP client and an MCP server and
//
//   - shows the client only the server's tools a person approved, pinned
//     by the SHA-256 of their canonical name, description and input
//     schema (pins are kept by Vigil, per tenant and server);
//   - holds back a new server's whole tool list (MCP_SERVER_QUARANTINED),
//     a tool whose definition changed (TOOL_CHANGED) and a tool that
//     appeared after approval (TOOL_NEW), and asks Vigil for a review that
//     a person approves in the Decision Desk;
//   - makes every tools/call a Vigil decision (kind tool_call, the server
//     as publisher): block refuses with the reason codes, require_approval
//     waits for the person, and a Vigil that does not answer refuses
//     (fail closed);
//   - redacts tool results before they reach the model, and reports every
//     call and result to Vigil as events.
//
// See docs/mcp.md.
package mcpgate

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/modelcontextprotocol/go-sdk/mcp"

	"github.com/vigilhq/vigil/pkg/mcppin"
	rules "github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/redact"
)

// Reason codes of refusals the gateway makes itself (Vigil's own codes
// come from the decision).
const (
	// ReasonVigilUnavailable: Vigil did not answer; nothing undecided runs.
	ReasonVigilUnavailable = "VIGIL_UNAVAILABLE"
	// ReasonApprovalRejected: the person rejected the call (or its
	// approval expired as a rejection).
	ReasonApprovalRejected = "APPROVAL_REJECTED"
	// ReasonApprovalTimeout: nobody decided within Config.ApprovalWait.
	ReasonApprovalTimeout = "APPROVAL_TIMEOUT"
	// ReasonInvalidArguments: the call's arguments are not a JSON object.
	ReasonInvalidArguments = "INVALID_ARGUMENTS"
	// ReasonRedactionFailed: the result could not be redacted, so it is
	// not passed on.
	ReasonRedactionFailed = "REDACTION_FAILED"
)

// Config configures a Gateway.
type Config struct {
	// VigilURL is the Vigil API base URL (http://host:8080).
	VigilURL string
	// APIKey is an agent key (role agent) bound to the agent the gateway
	// acts for.
	APIKey string
	// AgentID names that agent; optional when the key is bound to one.
	AgentID string
	// SessionID is the session of the gateway's decisions and events;
	// default a new "mcp-…" id per gateway.
	SessionID string
	// Server names the upstream MCP server: the publisher of its tool
	// calls and the key of its pins. Names are per tenant; give each
	// server its own.
	Server string
	// Redaction redacts tool results before the client sees them.
	Redaction *redact.Policy
	// Tenant keys redaction placeholders (default "mcp"); use the key's
	// tenant to make them correlate with Vigil's.
	Tenant string
	// ApprovalWait bounds how long a tools/call waits for a person
	// (default 15m); past it the call is refused.
	ApprovalWait time.Duration
	// RequestTimeout bounds each Vigil request but the long-polls
	// (default 5s).
	RequestTimeout time.Duration
	// Resync is how often the gateway lists the server's tools again
	// without a notification (default 1m): it catches a server that
	// changes its tools silently and retries reviews Vigil could not take.
	Resync time.Duration
	// HTTPClient talks to Vigil (default: a client without timeout; each
	// request has its own).
	HTTPClient *http.Client
	Log        *slog.Logger
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	var errs []error
	if c.VigilURL == "" {
		errs = append(errs, errors.New("mcpgate: VigilURL is required"))
	}
	if c.APIKey == "" {
		errs = append(errs, errors.New("mcpgate: APIKey is required (an agent key)"))
	}
	if c.Server == "" || len(c.Server) > 256 {
		errs = append(errs, errors.New("mcpgate: Server must name the upstream server (1-256 bytes)"))
	}
	if c.Redaction == nil {
		errs = append(errs, errors.New("mcpgate: Redaction is required"))
	}
	if c.ApprovalWait < 0 || c.RequestTimeout < 0 || c.Resync < 0 {
		errs = append(errs, errors.New("mcpgate: durations must not be negative"))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	c.VigilURL = strings.TrimRight(c.VigilURL, "/")
	if c.SessionID == "" {
		c.SessionID = "mcp-" + newUUID()
	}
	if c.Tenant == "" {
		c.Tenant = "mcp"
	}
	if c.ApprovalWait == 0 {
		c.ApprovalWait = 15 * time.Minute
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = 5 * time.Second
	}
	if c.Resync == 0 {
		c.Resync = time.Minute
	}
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{}
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	return nil
}

// Gateway is one upstream MCP server behind Vigil. Its Server is what
// clients connect to; any number of client sessions share the upstream
// session.
type Gateway struct {
	cfg Config
	v   *vigil
	rep *reporter
	log *slog.Logger
	srv *mcp.Server
	up  *mcp.ClientSession

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	kick   chan struct{}

	// syncMu serialises syncs; mu guards tools and reviews.
	syncMu  sync.Mutex
	mu      sync.Mutex
	tools   map[string]*toolState
	reviews map[string]*review
}

// toolState is one tool the server lists.
type toolState struct {
	def  *mcp.Tool
	hash string
	// held is "" for a tool the client sees, else why it is held back.
	held string
}

// review is a review the gateway asked for, by its idempotency key.
type review struct {
	decisionID string
	// state: pending, pinned, rejected.
	state string
}

// New returns a gateway; Connect starts it.
func New(cfg Config) (*Gateway, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	v := &vigil{base: cfg.VigilURL, key: cfg.APIKey, agentID: cfg.AgentID, hc: cfg.HTTPClient, timeout: cfg.RequestTimeout}
	ctx, cancel := context.WithCancel(context.Background())
	return &Gateway{
		cfg: cfg, v: v, log: cfg.Log.With(slog.String("mcpServer", cfg.Server)),
		rep: newReporter(v, cfg.Log, cfg.AgentID, cfg.SessionID),
		ctx: ctx, cancel: cancel, kick: make(chan struct{}, 1),
		tools: map[string]*toolState{}, reviews: map[string]*review{},
	}, nil
}

// Connect opens the upstream session over t, reads the server's tools
// and their pins, asks for reviews of what is not approved, and starts
// watching for changes. It fails when Vigil or the server cannot be
// read: a gateway that cannot check pins serves nothing.
func (g *Gateway) Connect(ctx context.Context, t mcp.Transport) error {
	client := mcp.NewClient(&mcp.Implementation{Name: "vigil-mcp-proxy", Version: "1"}, &mcp.ClientOptions{
		ToolListChangedHandler: func(context.Context, *mcp.ToolListChangedRequest) { g.trigger() },
	})
	up, err := client.Connect(ctx, t, nil)
	if err != nil {
		return fmt.Errorf("mcpgate: connect to server %q: %w", g.cfg.Server, err)
	}
	g.up = up
	var instructions string
	if ir := up.InitializeResult(); ir != nil {
		instructions = ir.Instructions
	}
	g.srv = mcp.NewServer(&mcp.Implementation{Name: "vigil-mcp-proxy:" + g.cfg.Server, Version: "1"}, &mcp.ServerOptions{
		Instructions: instructions, Logger: g.cfg.Log,
		Capabilities: &mcp.ServerCapabilities{Tools: &mcp.ToolCapabilities{ListChanged: true}},
	})
	g.srv.AddReceivingMiddleware(g.holdBack)
	if err := g.sync(ctx); err != nil {
		_ = up.Close()
		return err
	}
	g.wg.Add(1)
	go g.loop()
	return nil
}

// Server is the MCP server clients connect to (valid after Connect).
func (g *Gateway) Server() *mcp.Server { return g.srv }

// Close stops watching, closes the upstream session and sends the events
// still queued, until ctx ends.
func (g *Gateway) Close(ctx context.Context) error {
	g.cancel()
	g.wg.Wait()
	var err error
	if g.up != nil {
		err = g.up.Close()
	}
	g.rep.close(ctx)
	return err
}

func (g *Gateway) trigger() {
	select {
	case g.kick <- struct{}{}:
	default:
	}
}

func (g *Gateway) loop() {
	defer g.wg.Done()
	t := time.NewTicker(g.cfg.Resync)
	defer t.Stop()
	for {
		select {
		case <-g.ctx.Done():
			return
		case <-g.kick:
		case <-t.C:
		}
		if err := g.sync(g.ctx); err != nil && g.ctx.Err() == nil {
			g.log.Warn("mcp gateway: tool sync failed; will retry", slog.String("error", err.Error()))
		}
	}
}

// sync lists the server's tools, compares each with its pin, shows the
// client exactly the pinned, unchanged ones and asks for reviews of the
// rest. When the pins cannot be read, tools already shown with an
// unchanged definition stay; nothing else is shown.
func (g *Gateway) sync(ctx context.Context) error {
	g.syncMu.Lock()
	defer g.syncMu.Unlock()
	var list []*mcp.Tool
	for t, err := range g.up.Tools(ctx, nil) {
		if err != nil {
			return fmt.Errorf("mcpgate: list tools of %q: %w", g.cfg.Server, err)
		}
		list = append(list, t)
	}
	pins, pinErr := g.v.pins(ctx, g.cfg.Server)

	next := make(map[string]*toolState, len(list))
	var held []mcppin.ReviewedTool
	g.mu.Lock()
	prev := g.tools
	g.mu.Unlock()
	for _, t := range list {
		def, hash, err := definition(t)
		if err != nil {
			g.log.Warn("mcp gateway: tool definition unreadable; held back", slog.String("tool", t.Name), slog.String("error", err.Error()))
			next[t.Name] = &toolState{def: t, held: rules.ReasonToolChanged}
			continue
		}
		st := &toolState{def: t, hash: hash}
		next[t.Name] = st
		pin, pinned := pins.Lookup(t.Name)
		switch {
		case pinErr != nil:
			if p := prev[t.Name]; p == nil || p.held != "" || p.hash != hash {
				st.held = ReasonVigilUnavailable
			}
			continue
		case pinned && pin.Hash == hash:
			continue
		case pins.Quarantined:
			st.held = rules.ReasonMCPServerQuarantined
		case pinned:
			st.held = rules.ReasonToolChanged
		default:
			st.held = rules.ReasonToolNew
		}
		rt := mcppin.ReviewedTool{Name: t.Name, Hash: hash}
		rt.Definition, _ = json.Marshal(def)
		if pinned {
			rt.PreviousHash, rt.Diff = pin.Hash, mcppin.Diff(pin.Definition, rt.Definition)
		}
		held = append(held, rt)
	}
	g.apply(prev, next)
	if pinErr != nil {
		return fmt.Errorf("mcpgate: read pins of %q: %w", g.cfg.Server, pinErr)
	}
	if pins.Quarantined && len(held) > 0 {
		g.askReview(ctx, rules.ReasonMCPServerQuarantined, held, pins.UnpinnedAt)
		return nil
	}
	for _, rt := range held {
		code := rules.ReasonToolNew
		if rt.PreviousHash != "" {
			code = rules.ReasonToolChanged
		}
		g.askReview(ctx, code, []mcppin.ReviewedTool{rt}, pins.UnpinnedAt)
	}
	return nil
}

// apply makes the client-facing server show exactly next's visible tools.
// The SDK tells connected clients (notifications/tools/list_changed).
func (g *Gateway) apply(prev, next map[string]*toolState) {
	var remove []string
	for name, p := range prev {
		if p.held != "" {
			continue
		}
		if n := next[name]; n == nil || n.held != "" || n.hash != p.hash {
			remove = append(remove, name)
		}
	}
	if len(remove) > 0 {
		g.srv.RemoveTools(remove...)
	}
	for name, n := range next {
		if n.held != "" {
			continue
		}
		if p := prev[name]; p != nil && p.held == "" && p.hash == n.hash {
			continue
		}
		g.srv.AddTool(n.def, g.handler(name, n.hash))
	}
	g.mu.Lock()
	g.tools = next
	g.mu.Unlock()
	for name, n := range next {
		if n.held != "" && (prev[name] == nil || prev[name].held != n.held || prev[name].hash != n.hash) {
			g.log.Info("mcp gateway: tool held back", slog.String("tool", name), slog.String("reason", n.held), slog.String("hash", n.hash))
		}
	}
}

// definition is the pinned part of a tool and its hash.
func definition(t *mcp.Tool) (mcppin.Definition, string, error) {
	schema, err := json.Marshal(t.InputSchema)
	if err != nil {
		return mcppin.Definition{}, "", fmt.Errorf("input schema: %w", err)
	}
	d := mcppin.Definition{Name: t.Name, Description: t.Description, InputSchema: schema}
	h, err := d.Hash()
	return d, h, err
}

// askReview asks Vigil for a review of tools, once per set of definitions:
// the request's Idempotency-Key is derived from them, so a restarted
// gateway finds the review it asked for before instead of asking again.
// After an owner removed pins (unpinnedAt), the key is a new one: the
// review asked before cannot pin again, and a person must approve anew.
func (g *Gateway) askReview(ctx context.Context, code string, tools []mcppin.ReviewedTool, unpinnedAt time.Time) {
	slices.SortFunc(tools, func(a, b mcppin.ReviewedTool) int { return strings.Compare(a.Name, b.Name) })
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%s", g.cfg.Server, g.cfg.AgentID, code)
	names := make([]string, 0, len(tools))
	for _, t := range tools {
		fmt.Fprintf(h, "\x00%s\x00%s\x00%s", t.Name, t.Hash, t.PreviousHash)
		names = append(names, t.Name)
	}
	if !unpinnedAt.IsZero() {
		// Only then: keys of servers never unpinned stay as they were.
		fmt.Fprintf(h, "\x00unpinned\x00%d", unpinnedAt.UnixNano())
	}
	key := "mcp-review-" + hex.EncodeToString(h.Sum(nil))[:40]
	g.mu.Lock()
	_, asked := g.reviews[key]
	g.mu.Unlock()
	if asked {
		return
	}
	var args map[string]any
	b, _ := json.Marshal(mcppin.ReviewArguments{Server: g.cfg.Server, Review: code, Tools: tools})
	_ = json.Unmarshal(b, &args)
	act := rules.Action{Kind: rules.KindMCPToolReview, Publisher: g.cfg.Server, Arguments: args, Metadata: map[string]any{"review": code}}
	// A review of one tool names it; a quarantined server's whole list
	// is a review of "tools/list" (a decision needs a tool or a target).
	act.Tool = "tools/list"
	if code != rules.ReasonMCPServerQuarantined && len(tools) == 1 {
		act.Tool = tools[0].Name
	}
	d, err := g.v.evaluate(ctx, act, g.cfg.SessionID, key)
	if err != nil {
		// Asked again on the next sync; the tools stay hidden meanwhile.
		g.log.Warn("mcp gateway: review request failed", slog.String("review", code), slog.Any("tools", names), slog.String("error", err.Error()))
		return
	}
	r := &review{decisionID: d.DecisionID, state: "pending"}
	g.mu.Lock()
	g.reviews[key] = r
	g.mu.Unlock()
	g.rep.report(ctx, CategoryToolReview, map[string]any{
		"server": g.cfg.Server, "review": code, "tools": names, "decisionId": d.DecisionID, "decision": d.Decision, "reasonCodes": d.ReasonCodes,
	})
	g.log.Info("mcp gateway: review asked for", slog.String("review", code), slog.Any("tools", names), slog.String("decision", d.DecisionID), slog.String("outcome", d.Decision))
	if d.Decision != rules.RequireApproval.String() {
		// A rule blocked the review itself: nothing to approve.
		r.state = "rejected"
		return
	}
	g.wg.Add(1)
	go g.watch(r)
}

// watch waits for a person to decide a review; an approval pins its
// tools and syncs again, so they appear.
func (g *Gateway) watch(r *review) {
	defer g.wg.Done()
	backoff := time.Second
	retry := func(what string, err error) bool {
		if g.ctx.Err() != nil {
			return false
		}
		g.log.Warn("mcp gateway: "+what+"; retrying", slog.String("decision", r.decisionID), slog.String("error", err.Error()))
		if sleep(g.ctx, backoff) != nil {
			return false
		}
		backoff = min(2*backoff, 30*time.Second)
		return true
	}
	for {
		d, err := g.v.await(g.ctx, r.decisionID)
		if err != nil {
			if retry("waiting for a review", err) {
				continue
			}
			return
		}
		if d.Outcome != "approved" {
			g.setReview(r, "rejected")
			g.log.Info("mcp gateway: review rejected; tools stay hidden", slog.String("decision", r.decisionID), slog.String("outcome", d.Outcome))
			return
		}
		break
	}
	for {
		err := g.v.pin(g.ctx, r.decisionID)
		var ae *APIError
		switch {
		case err == nil:
			g.setReview(r, "pinned")
			g.trigger()
			return
		case errors.As(err, &ae):
			// Vigil refused to pin (the review went stale: the tool was
			// pinned to another version meanwhile). The next sync compares
			// with the new pin and asks for a review of its own.
			g.setReview(r, "rejected")
			g.log.Warn("mcp gateway: pinning refused", slog.String("decision", r.decisionID), slog.String("error", err.Error()))
			g.trigger()
			return
		case !retry("pinning an approved review", err):
			return
		}
	}
}

func (g *Gateway) setReview(r *review, state string) {
	g.mu.Lock()
	r.state = state
	g.mu.Unlock()
}

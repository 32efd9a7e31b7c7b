package control

import (
	"context"

	"github.com/vigilhq/vigil/pkg/mcppin"
	"github.com/vigilhq/vigil/pkg/streams"
)

// MCPPins returns the tools a tenant approved for an MCP server and the
// revision of that state, or ErrNotFound when none is (the server is
// quarantined). It reads the stream, so it reflects every write made
// before it, from any instance.
func (s *Store) MCPPins(ctx context.Context, tenant, server string) (mcppin.ServerPins, uint64, error) {
	var p mcppin.ServerPins
	seq, err := s.last(ctx, streams.MCPPinsSubject(tenant, server), &p)
	return p, seq, err
}

// PutMCPPins records a server's pins, provided its subject is still at
// expect (0: the server had none); ErrConflict otherwise.
func (s *Store) PutMCPPins(ctx context.Context, p mcppin.ServerPins, expect uint64) (uint64, error) {
	return s.put(ctx, streams.MCPPinsSubject(p.Tenant, p.Server), p, &expect)
}

// Package projector maps accepted events from the INGEST stream onto rows
// of the ClickHouse events table.
package projector

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/vigilhq/vigil/pkg/chx"
	"github.com/vigilhq/vigil/pkg/event"
)

// Project decodes one INGEST message into its row of readmodel.Events.
func Project(m jetstream.Msg) (chx.Rows, error) {
	var r event.Record
	if err := json.Unmarshal(m.Data(), &r); err != nil {
		return nil, fmt.Errorf("%w: decode record: %v", chx.ErrPoison, err)
	}
	meta, err := m.Metadata()
	if err != nil {
		return nil, fmt.Errorf("%w: metadata: %v", chx.ErrPoison, err)
	}
	return chx.Rows{Row(r, meta.Sequence.Stream)}, nil
}

// Row is the events row for a record stored at stream sequence seq.
func Row(r event.Record, seq uint64) []any {
	a := r.Event.Extract()
	return []any{
		r.Tenant, r.Event.EventID, r.Event.AgentID, r.Event.SessionID, r.Event.Category, r.Event.SchemaVersion,
		time.UnixMilli(r.SourceMS).UTC(), r.SourceMS, r.ReceivedMS, r.Event.PreviousHash, a.ToolName, a.ResponseStatus,
		string(r.Event.Payload), r.Client.SDK, r.Client.Framework, r.Client.AgentVersion, r.KeyID, seq, uint32(r.Redactions),
	}
}

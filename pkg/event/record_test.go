package event

import (
	"bytes"
	"encoding/json"
	"testing"
)

// recordSeeds: each is a payload followed by the strings the record's
// other fields take (tenant, ids, client, key), separated by NUL.
var recordSeeds = []string{
	"{\"a\":1}\x00t\x00\x00\x00",
	"{\"h\":\"<a href=\\\"x\\\">&</a>\",\"ls\":\"\u2028\"}\x00acme\x00sha256:00\x00vigil-go/1.2\x00key-1",
	"{ \"a\" : [ 1 , 2 ] }\x00t\"q\x00\\\x00\x7f\x00\xff",
	"[]\x00\x00\x00é\x00\x01\n",
	"null\x00<>&\x00\u2029\x00\x00",
	"\"x\"\x00a\x00b\x00c\x00d",
	"{\"s\":\"\xff\xe2\x80\"}\x00\x00\x00\x00",
}

func TestRecordAppendJSONMatchesMarshal(t *testing.T) {
	for _, s := range recordSeeds {
		checkRecordJSON(t, []byte(s), 1_736_937_000_123, -3)
	}
}

func FuzzRecordAppendJSON(f *testing.F) {
	for _, s := range recordSeeds {
		f.Add([]byte(s), int64(1_736_937_000_123), 2)
	}
	f.Fuzz(checkRecordJSON)
}

func checkRecordJSON(t *testing.T, in []byte, ms int64, redactions int) {
	parts := bytes.Split(in, []byte{0})
	payload := parts[0]
	if !json.Valid(payload) {
		return // AppendJSON takes Decode's payloads, which are valid
	}
	str := func(i int) string {
		if i < len(parts) {
			return string(parts[i])
		}
		return ""
	}
	r := Record{
		Tenant: str(1),
		Event: Event{EventID: str(2), AgentID: str(1) + str(2), SessionID: str(3), SourceTimestamp: str(4),
			Category: str(2), SchemaVersion: str(3), Payload: payload, PreviousHash: str(2)},
		SourceMS: ms, ReceivedMS: -ms,
		Client: Client{SDK: str(3), Framework: str(4), AgentVersion: str(1)},
		KeyID:  str(4), Redactions: redactions,
	}
	if len(in)%2 == 0 {
		r.Event.Payload = nil
	}
	want, wantErr := json.Marshal(r)
	got, err := r.AppendJSON([]byte("prefix"))
	if (err == nil) != (wantErr == nil) || (err == nil && !bytes.Equal(got, append([]byte("prefix"), want...))) {
		t.Fatalf("AppendJSON(%+v) =\n%s, %v\njson.Marshal gives\n%s, %v", r, got, err, want, wantErr)
	}
}

package ingest

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/vigilhq/vigil/pkg/httpkit"
)

// TestBatchResponseJSON: the hand-written encoding is byte for byte what
// echo's serializer (json.Encoder) writes, and refuses what it cannot
// write.
func TestBatchResponseJSON(t *testing.T) {
	for _, tc := range []struct {
		name string
		resp BatchResponse
		ok   bool
	}{
		{"nil results", BatchResponse{}, true},
		{"empty results", BatchResponse{Results: []Result{}}, true},
		{"stored", BatchResponse{Accepted: 1, Duplicates: 1, Results: []Result{
			{Index: 0, EventID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Status: StatusAccepted, Accepted: true, Sequence: 18446744073709551615},
			{Index: 1, EventID: "7c9e6679-7425-40de-944b-e07fc1f90ae8", Status: StatusDuplicate, Accepted: true, Duplicate: true, Sequence: 7},
			{Index: 2, Status: StatusFailed},
		}}, true},
		{"error", BatchResponse{Rejected: 1, Results: []Result{{Index: 0, Status: StatusRejected, Error: &httpkit.Detail{Code: "VALIDATION_ERROR", Message: "x"}}}}, false},
		{"escaped id", BatchResponse{Results: []Result{{EventID: `a<b"`, Status: StatusAccepted}}}, false},
		{"non-ASCII id", BatchResponse{Results: []Result{{EventID: "é", Status: StatusAccepted}}}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := tc.resp.appendJSON(nil)
			if ok != tc.ok {
				t.Fatalf("ok = %v, want %v", ok, tc.ok)
			}
			if !ok {
				return
			}
			var want bytes.Buffer
			if err := json.NewEncoder(&want).Encode(tc.resp); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want.Bytes()) {
				t.Fatalf("appendJSON =\n%s\njson.Encoder writes\n%s", got, want.Bytes())
			}
		})
	}
}

// TestResultJSON: a single event's answer, encoded by hand, is what echo's
// serializer writes.
func TestResultJSON(t *testing.T) {
	for _, r := range []Result{
		{EventID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Status: StatusAccepted, Accepted: true, Sequence: 42},
		{EventID: "7c9e6679-7425-40de-944b-e07fc1f90ae7", Status: StatusDuplicate, Accepted: true, Duplicate: true, Sequence: 18446744073709551615},
		{Status: StatusAccepted},
	} {
		got, ok := r.appendJSON(nil)
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		if !ok || !bytes.Equal(append(got, '\n'), want.Bytes()) {
			t.Errorf("appendJSON = %q, %v; json.Encoder writes %q", got, ok, want.Bytes())
		}
	}
	if _, ok := (&Result{EventID: "é", Status: StatusAccepted}).appendJSON(nil); ok {
		t.Error("a non-ASCII event id was encoded by hand")
	}
}

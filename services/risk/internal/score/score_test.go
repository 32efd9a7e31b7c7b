package score

import (
	"reflect"
	"testing"
)

func TestCompute(t *testing.T) {
	cases := []struct {
		name     string
		records  []Record
		anoms    map[string][]Anomaly
		score    int
		severity string
	}{
		{"quiet session", []Record{{ID: "a", Outcome: "allow"}}, nil, 0, "info"},
		{"one warning", []Record{{ID: "a", Outcome: "warn"}}, nil, 5, "low"},
		{"paused blocks say nothing", []Record{{ID: "a", Outcome: "block", Paused: true}}, nil, 0, "info"},
		{"policy is capped at 40", []Record{{ID: "a", Outcome: "block"}, {ID: "b", Outcome: "block"}}, nil, 40, "medium"},
		{"every dimension", []Record{{ID: "a", Outcome: "require_approval", Error: true}, {ID: "b", Outcome: "allow", Error: true}},
			map[string][]Anomaly{"b": {{ID: "x", Type: "new_destination", Severity: "high"}, {ID: "y", Type: "new_tool", Severity: "medium"}}},
			15 + 30 + 8, "high"},
		{"the same record twice counts once", []Record{{ID: "a", Outcome: "warn"}, {ID: "a", Outcome: "warn"}}, nil, 5, "low"},
		{"capped at 100 overall", []Record{{ID: "a", Outcome: "block", Error: true}, {ID: "b", Outcome: "block", Error: true},
			{ID: "c", Error: true}, {ID: "d", Error: true}, {ID: "e", Error: true}},
			map[string][]Anomaly{"a": {{ID: "x", Type: "error_burst", Severity: "critical"}, {ID: "y", Type: "rate_spike", Severity: "critical"}}},
			100, "critical"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			fwd, rev := NewSession("t", "a", "s"), NewSession("t", "a", "s")
			for _, r := range c.records {
				fwd.Add(r, c.anoms[r.ID])
			}
			for i := len(c.records) - 1; i >= 0; i-- {
				rev.Add(c.records[i], c.anoms[c.records[i].ID])
			}
			got := fwd.Compute()
			if got.Score != c.score || got.Severity != c.severity {
				t.Fatalf("score %d %s, want %d %s (%+v)", got.Score, got.Severity, c.score, c.severity, got.Factors)
			}
			if !reflect.DeepEqual(got, rev.Compute()) {
				t.Fatal("the score depends on the order of the records")
			}
			if len(got.Dimensions) != 3 || len(got.Recommendations) == 0 {
				t.Fatalf("explanation missing: %+v", got)
			}
		})
	}
}

func TestRecordsCapped(t *testing.T) {
	s := NewSession("t", "a", "s")
	for i := 0; i < 2*MaxRecords; i++ {
		s.Add(Record{ID: string(rune('A'+i%26)) + string(rune('a'+i/26)), Outcome: "warn"}, nil)
	}
	f := s.Compute().Factors[0]
	if f.Count != int64(2*MaxRecords) || len(f.Records) != MaxRecords {
		t.Fatalf("count %d records %d", f.Count, len(f.Records))
	}
}

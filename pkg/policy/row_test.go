package policy

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sampleRecord is a decision as the policy service records one for a
// decision request: principal, agent state, action with arguments and
// metadata, context, session and budgets.
func sampleRecord() DecisionRecord {
	return DecisionRecord{
		ID: "dec_0123456789abcdef0123", Tenant: "acme", AgentID: "agent-3", SessionID: "sess-9", Source: SourceDecision,
		Input: Input{Tenant: "acme", Principal: Principal{KeyID: "k1", Role: "agent", Actor: "key:k1"},
			Agent:   AgentState{ID: "agent-3", Declared: true, Tools: []string{"search", "refund"}, Destinations: []string{"api.example.com"}},
			Action:  Action{Kind: "tool_call", Tool: "refund", Target: "https://api.example.com/v1/refund", Publisher: "acme", Arguments: map[string]any{"to": "acct-1", "amount": 120.5}, Metadata: map[string]any{"source": "sdk", "category": "payments"}},
			Context: map[string]any{"amount": 1554.0, "currency": "EUR", "nested": map[string]any{"a": []any{1.0, "x", nil}}},
			Session: Session{ID: "sess-9", Events: 12, Blocks: 1, Warnings: 3},
			Budgets: []BudgetState{{ID: "b1", Name: "calls", Metric: "actions", Window: "1d", Used: 10, Limit: 1e12, Outcome: Block}}},
		Decision:  Decision{Outcome: Warn, ReasonCodes: []string{"R42"}, Matches: []Match{{PolicyID: "bench", RuleID: "r42", Outcome: Warn, ReasonCodes: []string{"R42"}}}, PackHash: "sha256:0123456789abcdef"},
		Signature: "sig_0123456789abcdef01234567", At: time.Date(2026, 12, 5, 19, 0, 0, 123456789, time.UTC), PackSignature: "ps", KeyID: "kid",
	}
}

// fullRow is the row the projector wrote before DecodeDecisionRow: the
// whole record decoded.
func fullRow(data []byte) ([]any, error) {
	var r DecisionRecord
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	return DecisionRow(r, data), nil
}

func TestDecodeDecisionRow(t *testing.T) {
	rec := sampleRecord()
	data, _ := json.Marshal(rec)
	want, err := fullRow(data)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeDecisionRow(data)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("DecodeDecisionRow = %v, %v; want %v", got, err, want)
	}
	if got[len(got)-1] != "sdk" {
		t.Fatalf("observed source %v, want sdk", got[len(got)-1])
	}
	for _, bad := range []string{``, `{`, `[]`, `{"decisionId":5}`, `{"result":{"decision":"maybe"}}`, `{"at":"yesterday"}`} {
		if _, err := DecodeDecisionRow([]byte(bad)); err == nil {
			t.Errorf("DecodeDecisionRow(%q) succeeded", bad)
		}
	}
}

// Whenever the whole record decodes, the row decoded from its subset is
// the same row.
func FuzzDecodeDecisionRow(f *testing.F) {
	rec := sampleRecord()
	data, _ := json.Marshal(rec)
	f.Add(data)
	rec.Input.Action.Metadata = map[string]any{"Source": "upper", "source": 5.0}
	data, _ = json.Marshal(rec)
	f.Add(data)
	for _, s := range []string{
		`{"decisionId":"d","input":{"action":{"metadata":{"source":"a","source":"b"}}}}`,
		`{"decisionId":"d","input":null,"result":null,"at":null}`,
		`{"DECISIONID":"d","Input":{"Action":{"TOOL":"t","Metadata":{"source":"x"}}},"Result":{"Decision":"block","ReasonCodes":[]}}`,
		`{"input":{"action":{"metadata":{"source":"a"}}},"input":{"action":{"metadata":{"other":1}}}}`,
		`{"input":{"action":{"metadata":null}},"result":{"reasonCodes":null,"decision":"require_approval"}}`,
		`{"input":{"context":5,"action":{"tool":"x"}}}`,
		`{"at":"2026-12-05T19:00:00+02:00","result":{"decision":"allow","packHash":"\u0041"}}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		want, err := fullRow(data)
		if err != nil {
			return
		}
		got, err := DecodeDecisionRow(data)
		if err != nil {
			t.Fatalf("the record decodes, its row does not: %v\n%s", err, data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("row %#v, want %#v\n%s", got, want, data)
		}
	})
}

func BenchmarkDecodeDecisionRow(b *testing.B) {
	data, _ := json.Marshal(sampleRecord())
	b.Run("full", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := fullRow(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("row-json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := decodeRowJSON(data); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("row", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := DecodeDecisionRow(data); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// FuzzDecodeRowFast holds the one-pass decoder to encoding/json's: a row
// it returns is the row decodeRowJSON returns for the same bytes, and it
// returns none for bytes that are not JSON.
func FuzzDecodeRowFast(f *testing.F) {
	for _, rec := range fastRecords() {
		data, _ := json.Marshal(rec)
		f.Add(data)
	}
	for _, s := range []string{
		`{"decisionId":"d","decisionId":"e"}`,
		`{"decisionId":"d","DecisionId":"e"}`,
		`{"input":{"action":{"metadata":{"source":"a","Source":"b"}}}}`,
		`{"input":{"action":{"metadata":{"source":{"x":[1,2e5,-0.5,true,false,null]}}}}}`,
		`{"input":{"Action":{"tool":"x"},"context":{"a":"\u00e9\n"}}}`,
		`{"result":{"reasonCodes":[],"decision":"deny"}} `,
		`{"result":{"reasonCodes":["a",null]}}`,
		`{"at":null,"result":{"decision":null}}`,
		`{"tenant":"a\u0062"}`, `{"tenant":"é"}`, "{\"tenant\":\"\xff\"}", `{"tenant":"a"}x`, `{"tenant":"a",}`,
		`{"input":{"context":01}}`, `{"input":{"context":[1,]}}`, `{"input":{"context":"\x"}}`, `{"\u212Aind":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		got, ok := decodeRowFast(data)
		if !ok {
			return
		}
		if !json.Valid(data) {
			t.Fatalf("a row from what is not JSON: %q", data)
		}
		want, err := decodeRowJSON(data)
		if err != nil {
			t.Fatalf("a row where encoding/json fails (%v): %q", err, data)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("row %#v, want %#v\n%s", got, want, data)
		}
	})
}

// fastRecords are records as the policy service writes them, which the
// one-pass decoder must take (or the projector quietly pays encoding/json
// again).
func fastRecords() []DecisionRecord {
	a := sampleRecord()
	b := sampleRecord()
	b.Decision.ReasonCodes, b.Input.Action.Metadata, b.SessionID = nil, nil, ""
	b.Decision.Outcome = Allow
	c := sampleRecord()
	c.Input.Action.Tool, c.Input.Action.Metadata = "résumé 検索", map[string]any{"source": 5.0, "x": []any{"y"}}
	c.Input.Context = map[string]any{"html": "<b>&</b>", "sep": "\u2028", "q": `"quoted"\`}
	d := sampleRecord()
	d.Input.Action.Metadata = map[string]any{"source": strings.Repeat("s", 65)}
	return []DecisionRecord{a, b, c, d}
}

func TestDecodeRowFastTakesRecords(t *testing.T) {
	for i, rec := range fastRecords() {
		data, _ := json.Marshal(rec)
		got, ok := decodeRowFast(data)
		if !ok {
			t.Fatalf("record %d goes to encoding/json: %s", i, data)
		}
		want, err := fullRow(data)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("record %d: row %#v, want %#v (%v)", i, got, want, err)
		}
	}
}

package redact_test

import (
	"encoding/json"
	"regexp"
	"testing"
)

// A realistic tool-call payload: mostly ordinary fields, one email and one
// bearer token buried in arguments and headers.
var benchPayload = []byte(`{"toolName":"crm.update_contact","toolType":"http","operation":"write","targetSystem":"salesforce",` +
	`"target":"https://api.example-crm.com/v2/contacts/48213","responseStatus":200,"latencyMs":183,"argumentsHash":"sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",` +
	`"arguments":{"contactId":"48213","fields":{"firstName":"Jane","lastName":"Doe","email":"jane.doe@example.com","company":"Acme Corp","notes":"Customer asked for a follow-up call next Tuesday about the renewal; prefers email over phone."},` +
	`"options":{"upsert":true,"notify":false,"tags":["renewal","q3","priority"]}},` +
	`"headers":{"Content-Type":"application/json","User-Agent":"vigil-sdk/1.4.2","X-Request-Id":"3f9a1c2b-7d4e-4b8a-9c1d-2e3f4a5b6c7d","Authorization":"Bearer mF_9.B5f-4.1JqM2xZ7pQ0aLkT"},` +
	`"model":"gpt-4o-mini","tokens":{"prompt":812,"completion":96},"startedAt":"2025-01-15T10:30:00.123Z"}`)

// cleanPayload is the same shape with nothing to redact.
var cleanPayload = []byte(`{"toolName":"web_search","toolType":"http","operation":"read","target":"https://search.example.com/v1/query?q=vigil+governance",` +
	`"responseStatus":200,"latencyMs":91,"arguments":{"query":"open source agent governance","limit":10,"lang":"en"},` +
	`"model":"gpt-4o-mini","tokens":{"prompt":312,"completion":48},"startedAt":"2025-01-15T10:30:00.123Z"}`)

func BenchmarkJSON(b *testing.B) {
	p := newRedactor(b).Default()
	for _, bc := range []struct {
		name string
		in   []byte
	}{{"pii", benchPayload}, {"clean", cleanPayload}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(bc.in)))
			b.ReportAllocs()
			for b.Loop() {
				if _, _, err := p.JSON("acme", bc.in); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkBaseline is what a payload already costs ingest (validate and
// decode), for scale.
func BenchmarkBaselineDecode(b *testing.B) {
	b.SetBytes(int64(len(benchPayload)))
	b.ReportAllocs()
	for b.Loop() {
		var v map[string]any
		if err := json.Unmarshal(benchPayload, &v); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkNaiveRegex runs every detector regex over the whole payload
// without pre-filters: what the pre-filters save.
func BenchmarkNaiveRegex(b *testing.B) {
	res := []*regexp.Regexp{
		regexp.MustCompile(`[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}`),
		regexp.MustCompile(`\b\d(?:[ \-]?\d){12,18}\b`),
		regexp.MustCompile(`(?:\+\d{1,3}[ .\-]?)?(?:\(\d{1,4}\)[ .\-]?)?\d{1,4}(?:[ .\-]\d{2,8}){1,5}`),
		regexp.MustCompile(`(?i)\bbearer\s+([A-Za-z0-9._~+/\-]{12,}=*)`),
		regexp.MustCompile(`\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b`),
		regexp.MustCompile(`\b\d{3}[- ]\d{2}[- ]\d{4}\b`),
	}
	s := string(benchPayload)
	b.SetBytes(int64(len(s)))
	for b.Loop() {
		for _, re := range res {
			re.FindAllStringIndex(s, -1)
		}
	}
}

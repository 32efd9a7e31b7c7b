package main

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// sinkAgeMetric is the projection sinks' histogram of a message's age at
// each stage (pkg/chx): taken in from the consumer, its insert begun,
// written.
const sinkAgeMetric = "vigil_sink_message_age_seconds"

// sinkAgeStages are its stages in the order a message passes them.
var sinkAgeStages = []string{"taken", "inserting", "written"}

// ageHist is one stage's histogram as scraped: cumulative counts per
// upper bound.
type ageHist struct {
	bounds []float64
	counts []uint64
	sum    float64
	count  uint64
}

// freshStage is what one stage's histogram says of the messages observed
// between two scrapes. P50/P99 are bucket upper bounds (an overestimate
// of at most the bucket width, ~1.5×).
type freshStage struct {
	Stage    string  `json:"stage"`
	Messages uint64  `json:"messages"`
	MeanMs   float64 `json:"meanMs"`
	P50Ms    float64 `json:"p50Ms"`
	P99Ms    float64 `json:"p99Ms"`
}

// scrapeSinkAges reads base's /metrics and returns the sink's age
// histograms by stage (empty when the sink has observed nothing yet).
func scrapeSinkAges(ctx context.Context, client *http.Client, base, sink string) (map[string]ageHist, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("scrape %s/metrics: %w", base, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("scrape %s/metrics: %s", base, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("scrape %s/metrics: %w", base, err)
	}
	out := map[string]ageHist{}
	fam := fams[sinkAgeMetric]
	if fam == nil {
		return out, nil
	}
	for _, m := range fam.GetMetric() {
		if label(m, "sink") != sink || m.GetHistogram() == nil {
			continue
		}
		h := m.GetHistogram()
		ah := ageHist{sum: h.GetSampleSum(), count: h.GetSampleCount()}
		for _, b := range h.GetBucket() {
			ah.bounds = append(ah.bounds, b.GetUpperBound())
			ah.counts = append(ah.counts, b.GetCumulativeCount())
		}
		out[label(m, "stage")] = ah
	}
	return out, nil
}

// scrapeSinkAgesUntil scrapes until every stage has observed at least
// want messages since before, or wait has passed (then it returns the
// last scrape: the report shows the shortfall rather than failing).
func scrapeSinkAgesUntil(ctx context.Context, client *http.Client, base, sink string, before map[string]ageHist, want uint64, wait time.Duration) (map[string]ageHist, error) {
	deadline := time.Now().Add(wait)
	for {
		after, err := scrapeSinkAges(ctx, client, base, sink)
		if err != nil {
			return nil, err
		}
		done := true
		for _, st := range sinkAgeStages {
			if after[st].count-before[st].count < want {
				done = false
			}
		}
		if done || time.Now().After(deadline) {
			return after, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// sinkAgeStagesBetween summarises what each stage observed between the
// scrapes before and after.
func sinkAgeStagesBetween(before, after map[string]ageHist) []freshStage {
	var out []freshStage
	for _, st := range sinkAgeStages {
		a, ok := after[st]
		if !ok {
			continue
		}
		b := before[st]
		n := a.count - b.count
		fs := freshStage{Stage: st, Messages: n}
		if n > 0 {
			fs.MeanMs = 1000 * (a.sum - b.sum) / float64(n)
			fs.P50Ms = 1000 * histQuantile(a, b, 0.5)
			fs.P99Ms = 1000 * histQuantile(a, b, 0.99)
		}
		out = append(out, fs)
	}
	return out
}

// histQuantile is the upper bound of the bucket holding quantile q of the
// observations after − before (the last bound if it lies past it).
func histQuantile(after, before ageHist, q float64) float64 {
	n := after.count - before.count
	rank := uint64(math.Ceil(q * float64(n)))
	for i, bound := range after.bounds {
		c := after.counts[i]
		if i < len(before.counts) {
			c -= before.counts[i]
		}
		if c >= rank {
			return bound
		}
	}
	if len(after.bounds) == 0 {
		return 0
	}
	return after.bounds[len(after.bounds)-1]
}

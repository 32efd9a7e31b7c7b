package main

import (
	"context"
	"fmt"
	"math"
	"net/http"

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

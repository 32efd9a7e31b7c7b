package deploy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// The operations kit (deploy/observability): Prometheus alerting rules and
// a Grafana dashboard. Every expression is read with a small PromQL lexer
// (the full parser would bring Prometheus's whole module into the
// workspace) and every metric and label it names must be one Vigil's code
// declares: a renamed metric would otherwise leave an alert that never
// fires.

// metricDecl is one metric Vigil exports.
type metricDecl struct {
	histogram bool
	labels    map[string]bool
}

// scrapeLabels are added by Prometheus to every series it scrapes.
var scrapeLabels = []string{"job", "instance"}

// runtimeMetrics come from the Go and process collectors every Vigil
// process registers (pkg/daemon); the ones the kit may use.
var runtimeMetrics = []string{"process_resident_memory_bytes", "process_cpu_seconds_total", "go_goroutines"}

// exportedMetrics scans the non-test Go code for Prometheus collectors
// and returns each metric's name, kind and label names (variable and
// constant).
func exportedMetrics(t *testing.T) map[string]metricDecl {
	t.Helper()
	root := repoRoot(t)
	newCollector := regexp.MustCompile(`prometheus\.New(Counter|Gauge|Histogram|Summary)(Vec|Func)?\(`)
	name := regexp.MustCompile(`Name:\s*(?:"(vigil_[a-z0-9_]+)"|([A-Z]\w*))`)
	varLabels := regexp.MustCompile(`\},\s*\[\]string\{([^}]*)\}`)
	constLabels := regexp.MustCompile(`ConstLabels:\s*(?:prometheus\.Labels\{"(\w+)"|(\w+))`)
	labelsVar := regexp.MustCompile(`prometheus\.Labels\{"(\w+)"`)
	constDecl := regexp.MustCompile(`(?m)^\s*(?:const\s+)?([A-Z]\w*)\s*=\s*"(vigil_[a-z0-9_]+)"`)
	files := map[string]string{}
	for _, dir := range []string{"pkg", "services", "cmd"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			files[path] = string(b)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	consts := map[string]string{}
	for _, src := range files {
		for _, m := range constDecl.FindAllStringSubmatch(src, -1) {
			consts[m[1]] = m[2]
		}
	}
	out := map[string]metricDecl{}
	for path, src := range files {
		locs := newCollector.FindAllStringSubmatchIndex(src, -1)
		for i, loc := range locs {
			end := len(src)
			if i+1 < len(locs) {
				end = locs[i+1][0]
			}
			body := src[loc[1]:end]
			nm := name.FindStringSubmatch(body)
			if nm == nil {
				continue
			}
			metric := nm[1]
			if metric == "" {
				if metric = consts[nm[2]]; metric == "" {
					continue // a name from elsewhere (a test registry's), not one of Vigil's
				}
			}
			d := metricDecl{histogram: src[loc[2]:loc[3]] == "Histogram", labels: map[string]bool{}}
			if prev, ok := out[metric]; ok {
				d = prev
			}
			if loc[4] >= 0 && src[loc[4]:loc[5]] == "Vec" {
				if vl := varLabels.FindStringSubmatch(body); vl != nil {
					for l := range strings.SplitSeq(vl[1], ",") {
						if l = strings.Trim(strings.TrimSpace(l), `"`); l != "" {
							d.labels[l] = true
						}
					}
				}
			}
			if cl := constLabels.FindStringSubmatch(body); cl != nil {
				if cl[1] != "" {
					d.labels[cl[1]] = true
				} else if lv := labelsVar.FindStringSubmatch(src); lv != nil {
					d.labels[lv[1]] = true
				} else {
					t.Fatalf("%s: %s has ConstLabels this scan cannot read", path, metric)
				}
			}
			out[metric] = d
		}
	}
	daemon, err := os.ReadFile(filepath.Join(root, "pkg", "daemon", "daemon.go"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(daemon, []byte("collectors.NewGoCollector()")) && bytes.Contains(daemon, []byte("collectors.NewProcessCollector(")) {
		for _, m := range runtimeMetrics {
			out[m] = metricDecl{labels: map[string]bool{}}
		}
	}
	// The scan must see what it is known to have, or it proves nothing.
	for _, want := range []string{"vigil_http_requests_total", "vigil_policy_decide_seconds", "vigil_sink_held_messages", "vigil_consumer_pending_messages", "process_resident_memory_bytes"} {
		if _, ok := out[want]; !ok {
			t.Fatalf("the scan of the code found no %s (found %d metrics)", want, len(out))
		}
	}
	if !out["vigil_policy_decide_seconds"].histogram || !out["vigil_sink_flushes_total"].labels["result"] || !out["vigil_sink_flushes_total"].labels["sink"] || !out["vigil_consumer_pending_messages"].labels["consumer"] {
		t.Fatalf("the scan misread kinds or labels: %+v", out)
	}
	return out
}

// promql is what the lexer found in one expression.
type promql struct {
	// selectors are metric names with the labels their matchers name.
	selectors []selector
	// grouping are the labels of by/without/on/ignoring/group_* clauses.
	grouping []string
}

type selector struct {
	metric string
	labels []string
}

var (
	promFunctions = map[string]bool{
		"rate": true, "irate": true, "increase": true, "deriv": true, "delta": true, "histogram_quantile": true,
		"sum": true, "max": true, "min": true, "avg": true, "count": true, "time": true, "absent": true,
		"max_over_time": true, "min_over_time": true, "avg_over_time": true, "clamp_min": true, "topk": true,
	}
	promGrouping = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true}
	promBinary   = map[string]bool{"and": true, "or": true, "unless": true, "bool": true, "offset": true}
	promIdent    = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*`)
	promNumber   = regexp.MustCompile(`^[0-9][0-9.]*(?:e[+-]?[0-9]+)?[a-zA-Z]*`)
	promMatcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(?:=~|!~|!=|=)\s*"(?:[^"\\]|\\.)*"`)
)

// lexPromQL reads an expression: its selectors, grouping labels, and
// whether brackets balance and every call is a known function.
func lexPromQL(expr string) (promql, error) {
	var q promql
	depth := 0
	s := expr
	pos := func() int { return len(expr) - len(s) }
	for len(s) > 0 {
		switch c := s[0]; {
		case c == ' ' || c == '\n' || c == '\t':
			s = s[1:]
		case c == '(':
			depth++
			s = s[1:]
		case c == ')':
			if depth--; depth < 0 {
				return q, fmt.Errorf("unbalanced ) at %d", pos())
			}
			s = s[1:]
		case c == '[':
			end := strings.IndexByte(s, ']')
			if end < 0 {
				return q, fmt.Errorf("unclosed [ at %d", pos())
			}
			s = s[end+1:]
		case c == '{':
			end := strings.IndexByte(s, '}')
			if end < 0 {
				return q, fmt.Errorf("unclosed { at %d", pos())
			}
			inner := s[1:end]
			rest := strings.TrimSpace(promMatcher.ReplaceAllString(inner, ""))
			if strings.Trim(rest, ", ") != "" {
				return q, fmt.Errorf("matchers %q do not parse (left %q)", inner, rest)
			}
			var labels []string
			for _, m := range promMatcher.FindAllStringSubmatch(inner, -1) {
				labels = append(labels, m[1])
			}
			if n := len(q.selectors); n > 0 && q.selectors[n-1].labels == nil && strings.HasSuffix(strings.TrimSpace(expr[:pos()]), q.selectors[n-1].metric) {
				q.selectors[n-1].labels = append([]string{}, labels...)
			} else {
				return q, fmt.Errorf("matchers %q without a metric name", inner)
			}
			s = s[end+1:]
		case c == '"':
			end := strings.IndexByte(s[1:], '"')
			if end < 0 {
				return q, fmt.Errorf("unclosed string at %d", pos())
			}
			s = s[end+2:]
		case strings.ContainsRune("+-*/%^<>=!,", rune(c)):
			s = s[1:]
		case promNumber.MatchString(s):
			s = s[len(promNumber.FindString(s)):]
		case promIdent.MatchString(s):
			id := promIdent.FindString(s)
			s = s[len(id):]
			next := strings.TrimLeft(s, " \n\t")
			switch {
			case promGrouping[id]:
				if !strings.HasPrefix(next, "(") {
					if id == "group_left" || id == "group_right" {
						continue
					}
					return q, fmt.Errorf("%s without a label list", id)
				}
				end := strings.IndexByte(next, ')')
				if end < 0 {
					return q, fmt.Errorf("unclosed %s(", id)
				}
				for l := range strings.SplitSeq(next[1:end], ",") {
					if l = strings.TrimSpace(l); l != "" {
						q.grouping = append(q.grouping, l)
					}
				}
				s = next[end+1:]
			case promBinary[id]:
			case promFunctions[id] && (strings.HasPrefix(next, "by") || strings.HasPrefix(next, "without")):
				// An aggregation with its grouping first: sum by (x) (…).
			case strings.HasPrefix(next, "("):
				if !promFunctions[id] {
					return q, fmt.Errorf("unknown function %s", id)
				}
			default:
				q.selectors = append(q.selectors, selector{metric: id})
			}
		default:
			return q, fmt.Errorf("unexpected %q at %d", c, pos())
		}
	}
	if depth != 0 {
		return q, fmt.Errorf("%d unclosed (", depth)
	}
	return q, nil
}

// checkExpr: every metric the expression reads is exported (a histogram's
// series by their _bucket/_sum/_count names), with the labels it matches
// and groups by. It returns the labels the result may carry.
func checkExpr(t *testing.T, where, expr string, metrics map[string]metricDecl) (metricsUsed []string, labels map[string]bool) {
	t.Helper()
	q, err := lexPromQL(expr)
	if err != nil {
		t.Errorf("%s: %q: %v", where, expr, err)
		return nil, nil
	}
	labels = map[string]bool{}
	for _, l := range scrapeLabels {
		labels[l] = true
	}
	for _, sel := range q.selectors {
		name := sel.metric
		d, ok := metrics[name]
		if name == "up" {
			d, ok = metricDecl{labels: map[string]bool{}}, true
		}
		if !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, cut := strings.CutSuffix(name, suffix); cut && metrics[base].histogram {
					d, ok = metrics[base], true
					if suffix == "_bucket" {
						d.labels = maps(d.labels, "le")
					}
				}
			}
		}
		if !ok {
			t.Errorf("%s: %q reads %s, which Vigil does not export", where, expr, name)
			continue
		}
		metricsUsed = append(metricsUsed, name)
		for l := range d.labels {
			labels[l] = true
		}
		for _, l := range sel.labels {
			if !d.labels[l] && !slices.Contains(scrapeLabels, l) {
				t.Errorf("%s: %q matches label %s, which %s does not have", where, expr, l, name)
			}
		}
	}
	for _, l := range q.grouping {
		if !labels[l] {
			t.Errorf("%s: %q groups by %s, which none of its metrics has", where, expr, l)
		}
	}
	if len(q.selectors) == 0 {
		t.Errorf("%s: %q reads no metric", where, expr)
	}
	return metricsUsed, labels
}

func maps(m map[string]bool, extra ...string) map[string]bool {
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	for _, k := range extra {
		out[k] = true
	}
	return out
}

// The concerns the kit must cover, by the metric that shows each.
var opsConcerns = map[string]string{
	"consumer lag":               "vigil_consumer_pending_messages",
	"projection dead letters":    "vigil_sink_dead_letters_total",
	"notifier dead letters":      "vigil_notifier_dead_letters_total",
	"ClickHouse sink backlog":    "vigil_sink_held_messages",
	"ledger checkpoint age":      "vigil_ledger_last_checkpoint_timestamp_seconds",
	"decision p99":               "vigil_policy_decide_seconds_bucket",
	"HTTP errors":                "vigil_http_requests_total",
	"ClickHouse insert failures": "vigil_sink_flushes_total",
}

type ruleFile struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval,omitempty"`
		Rules    []struct {
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for,omitempty"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func TestAlertRules(t *testing.T) {
	metrics := exportedMetrics(t)
	b, err := os.ReadFile(filepath.Join("observability", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var rf ruleFile
	if err := yaml.UnmarshalStrict(b, &rf); err != nil {
		t.Fatalf("alerts.yaml is not a Prometheus rule file: %v", err)
	}
	if len(rf.Groups) == 0 {
		t.Fatal("no rule groups")
	}
	seen := map[string]bool{}
	used := map[string]bool{}
	templ := regexp.MustCompile(`\$labels\.(\w+)`)
	for _, g := range rf.Groups {
		for _, r := range g.Rules {
			where := "alert " + r.Alert
			if r.Alert == "" || seen[r.Alert] {
				t.Errorf("%s: empty or repeated alert name", where)
			}
			seen[r.Alert] = true
			if s := r.Labels["severity"]; s != "warning" && s != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", where, s)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: needs a summary and a description", where)
			}
			if r.For != "" {
				if _, err := time.ParseDuration(r.For); err != nil {
					t.Errorf("%s: for %q: %v", where, r.For, err)
				}
			}
			names, labels := checkExpr(t, where, r.Expr, metrics)
			for _, n := range names {
				used[n] = true
			}
			for _, text := range r.Annotations {
				for _, m := range templ.FindAllStringSubmatch(text, -1) {
					if !labels[m[1]] {
						t.Errorf("%s: annotation uses $labels.%s, which its series do not carry", where, m[1])
					}
				}
			}
		}
	}
	for concern, metric := range opsConcerns {
		if !used[metric] {
			t.Errorf("no alert on %s (%s)", concern, metric)
		}
	}
}

// dashboard is the part of Grafana's dashboard model the test reads.
type dashboard struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name string `json:"name"`
			Type string `json:"type"`
		} `json:"list"`
	} `json:"templating"`
	Panels []struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *struct {
			UID string `json:"uid"`
		} `json:"datasource"`
		GridPos struct{ H, W, X, Y int } `json:"gridPos"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
}

func TestGrafanaDashboard(t *testing.T) {
	metrics := exportedMetrics(t)
	b, err := os.ReadFile(filepath.Join("observability", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("grafana-dashboard.json: %v", err)
	}
	if d.UID == "" || d.Title == "" || len(d.Panels) == 0 {
		t.Fatalf("uid %q, title %q, %d panels", d.UID, d.Title, len(d.Panels))
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	if vars["datasource"] != "datasource" || vars["job"] != "query" {
		t.Errorf("templating %v: want a datasource variable and a job variable", vars)
	}
	ids := map[int]bool{}
	used := map[string]bool{}
	cells := map[[2]int]string{}
	for _, p := range d.Panels {
		where := fmt.Sprintf("panel %d %q", p.ID, p.Title)
		if ids[p.ID] {
			t.Errorf("%s: repeated id", where)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 {
			t.Errorf("%s: gridPos %+v outside Grafana's 24 columns", where, g)
		}
		for x := g.X; x < g.X+g.W; x++ {
			for y := g.Y; y < g.Y+g.H; y++ {
				if other, ok := cells[[2]int{x, y}]; ok {
					t.Errorf("%s overlaps %s", where, other)
					y, x = g.Y+g.H, g.X+g.W
				}
				cells[[2]int{x, y}] = where
			}
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("%s: datasource %+v, want the ${datasource} variable", where, p.Datasource)
		}
		if len(p.Targets) == 0 {
			t.Errorf("%s: no queries", where)
		}
		for _, tg := range p.Targets {
			if tg.RefID == "" {
				t.Errorf("%s: a query without refId", where)
			}
			// Grafana's variables are substituted before Prometheus sees
			// the query: give them values of the right shape.
			expr := strings.NewReplacer("$__rate_interval", "1m", "$job", ".*").Replace(tg.Expr)
			names, _ := checkExpr(t, where, expr, metrics)
			for _, n := range names {
				used[n] = true
			}
		}
	}
	for concern, metric := range opsConcerns {
		if !used[metric] {
			t.Errorf("no panel shows %s (%s)", concern, metric)
		}
	}
}

// TestPromQLLexer: the lexer finds what an expression reads and refuses
// what Prometheus would refuse, so the checks above can fail.
func TestPromQLLexer(t *testing.T) {
	tests := []struct {
		expr      string
		selectors []string
		grouping  []string
		err       bool
	}{
		{expr: `sum by (sink) (rate(vigil_sink_rows_total{sink="x"}[5m]))`, selectors: []string{"vigil_sink_rows_total"}, grouping: []string{"sink"}},
		{expr: `a > 0 and on () max(b{c=~"ledger-.*"}) > 1e3`, selectors: []string{"a", "b"}},
		{expr: `histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m] offset 1h)))`, selectors: []string{"x_bucket"}, grouping: []string{"le"}},
		{expr: `time() - max(t)`, selectors: []string{"t"}},
		{expr: `sum(rate(x[5m])`, err: true},
		{expr: `rat(x[5m])`, err: true},
		{expr: `x{a="b"`, err: true},
		{expr: `x{a=b}`, err: true},
		{expr: `sum by sink (x)`, err: true},
	}
	for _, tt := range tests {
		q, err := lexPromQL(tt.expr)
		if (err != nil) != tt.err {
			t.Errorf("%q: error %v, want error %v", tt.expr, err, tt.err)
			continue
		}
		var sels []string
		for _, s := range q.selectors {
			sels = append(sels, s.metric)
		}
		if !tt.err && (!slices.Equal(sels, tt.selectors) || !slices.Equal(q.grouping, tt.grouping)) {
			t.Errorf("%q: selectors %v grouping %v, want %v %v", tt.expr, sels, q.grouping, tt.selectors, tt.grouping)
		}
	}
}

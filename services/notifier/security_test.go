package notifier_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/policy"
	"github.com/vigilhq/vigil/pkg/streams"
	"github.com/vigilhq/vigil/services/notifier"
)

// TestSSRFRefusedAtCreation: without an allowlist, every internal
// destination is refused with a field error.
func TestSSRFRefusedAtCreation(t *testing.T) {
	e := newEnv(t, func(c *notifier.Config) { c.AllowPrivate = nil })
	for _, u := range []string{
		"http://127.0.0.1:8080/hook", "http://[::1]/", "http://10.0.0.7/", "http://172.20.1.1/", "http://192.168.0.10/",
		"http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://100.64.0.1/", "http://[fd12::1]/",
		"http://[fe80::1]/", "http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:127.0.0.1]/", "http://localhost.invalid/",
		"ftp://hooks.example.com/", "https://user:pass@hooks.example.com/",
	} {
		t.Run(u, func(t *testing.T) {
			r := e.do("acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": u})
			if r.status != http.StatusBadRequest {
				t.Fatalf("%s: %d %s", u, r.status, r.body)
			}
			m := r.json(t)
			details, _ := m["error"].(map[string]any)["details"].([]any)
			want := "forbidden_destination"
			if strings.HasPrefix(u, "ftp:") || strings.Contains(u, "@") || strings.Contains(u, ".invalid") {
				want = "invalid_destination"
			}
			if len(details) == 0 || details[0].(map[string]any)["path"] != "url" || details[0].(map[string]any)["code"] != want {
				t.Fatalf("%s: envelope %s", u, r.body)
			}
		})
	}
	// PATCH is checked the same way.
	id, _ := e.createChannel("acme", map[string]any{"url": "https://hooks.example.com/x"})
	if r := e.do("acme/owner", "PATCH", "/v1/notification-channels/"+id, map[string]any{"url": "http://169.254.169.254/"}); r.status != 400 {
		t.Fatalf("patch to metadata: %d %s", r.status, r.body)
	}
}

// TestSSRFRefusedAtDelivery: a host that resolved to a public address
// when the channel was created but resolves to loopback when it is
// dialed (DNS rebinding) is refused at delivery and dead-lettered at once.
func TestSSRFRefusedAtDelivery(t *testing.T) {
	e := newEnv(t, func(c *notifier.Config) { c.AllowPrivate = nil })
	rc := newReceiver(t, nil)
	port := rc.URL[strings.LastIndex(rc.URL, ":")+1:]
	// The env's configuration-time resolver says localhost is public; the
	// dialer resolves it for real.
	id, _ := e.createChannel("acme", map[string]any{"url": "http://localhost:" + port + "/hook"})
	e.decide("acme", "dec_ssrf", policy.Block)
	atts := e.deliveries("acme", id, 1, "")
	a := atts[0]
	if a["outcome"] != "dead_lettered" || !strings.Contains(a["error"].(string), "not allowed") || a["statusCode"].(float64) != 0 {
		t.Fatalf("attempt: %v", a)
	}
	if n := len(rc.requests()); n != 0 {
		t.Fatalf("receiver on loopback got %d requests", n)
	}
}

// TestSecretsNeverExposed: credentials and signing secrets appear in no
// response but the one that created or rotated them, in no log line, and
// not in plain text on CONTROL.
func TestSecretsNeverExposed(t *testing.T) {
	e := newEnv(t, nil)
	rc := newReceiver(t, func(int, *http.Request) int { return 500 })
	secrets := []string{"sl4ckT0ken", "dd-s3cret-key", "hec-s3cret", "pd-s3cret-routing", "qu3ry-s3cret"}
	hr := e.do("acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": rc.URL + "/h?sig=qu3ry-s3cret"}, "Idempotency-Key", "secret-test")
	hook, whsec := hr.json(t)["id"].(string), hr.json(t)["secret"].(string)
	slack, _ := e.createChannel("acme", map[string]any{"type": "slack", "url": rc.URL + "/services/T/B/sl4ckT0ken"})
	dd, _ := e.createChannel("acme", map[string]any{"type": "datadog", "url": rc.URL, "apiKey": "dd-s3cret-key"})
	sp, _ := e.createChannel("acme", map[string]any{"type": "splunk", "url": rc.URL, "token": "hec-s3cret"})
	pd, _ := e.createChannel("acme", map[string]any{"type": "pagerduty", "url": rc.URL, "routingKey": "pd-s3cret-routing"})
	rot := e.do("acme/owner", "POST", "/v1/notification-channels/"+hook+"/rotate-secret", nil)
	rotated := rot.json(t)["secret"].(string)
	secrets = append(secrets, whsec, rotated, strings.TrimPrefix(whsec, "whsec_"), strings.TrimPrefix(rotated, "whsec_"))

	e.decide("acme", "dec_s1", policy.Block)
	var bodies []string
	for _, id := range []string{hook, slack, dd, sp, pd} {
		e.deliveries("acme", id, 3, "") // every attempt failed: errors recorded
		for _, p := range []string{"", "/deliveries", "/dead-letters"} {
			bodies = append(bodies, string(e.do("acme/owner", "GET", "/v1/notification-channels/"+id+p, nil).body))
		}
		bodies = append(bodies, string(e.do("acme/owner", "PATCH", "/v1/notification-channels/"+id, map[string]any{"name": "renamed"}).body))
		bodies = append(bodies, string(e.do("acme/owner", "POST", "/v1/notification-channels/"+id+"/test", nil).body))
	}
	bodies = append(bodies, string(e.do("acme/owner", "GET", "/v1/notification-channels", nil).body), string(e.do("acme/owner", "GET", "/v1/webhooks", nil).body))

	st, err := e.js.Stream(context.Background(), streams.Control)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{hook, slack, dd, sp, pd} {
		m, err := st.GetLastMsgForSubject(context.Background(), streams.ChannelSubject("acme", id))
		if err != nil {
			t.Fatal(err)
		}
		bodies = append(bodies, string(m.Data))
	}
	// Nothing secret is kept in the shared idempotency store either.
	if kv, err := e.js.KeyValue(context.Background(), "IDEMPOTENCY"); err == nil {
		keys, _ := kv.ListKeys(context.Background())
		for k := range keys.Keys() {
			if v, err := kv.Get(context.Background(), k); err == nil {
				bodies = append(bodies, string(v.Value()))
			}
		}
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "channel health changed") {
		t.Fatalf("expected the notifier to have logged something: %q", logs)
	}
	for _, s := range secrets {
		for _, b := range bodies {
			if strings.Contains(b, s) {
				t.Fatalf("secret %q exposed in %s", s, b)
			}
		}
		if strings.Contains(logs, s) {
			t.Fatalf("secret %q in logs", s)
		}
	}
}

// TestTenantIsolation: another tenant's channels are 404 on every route,
// absent from lists, and never receive another tenant's signals.
func TestTenantIsolation(t *testing.T) {
	e := newEnv(t, nil)
	acmeRC, globexRC := newReceiver(t, nil), newReceiver(t, nil)
	id, _ := e.createChannel("acme", map[string]any{"url": acmeRC.URL})
	e.createChannel("globex", map[string]any{"url": globexRC.URL})
	for _, c := range []struct{ method, path string }{
		{"GET", ""}, {"PATCH", ""}, {"DELETE", ""}, {"POST", "/rotate-secret"}, {"POST", "/test"},
		{"GET", "/deliveries"}, {"GET", "/dead-letters"}, {"POST", "/deliveries/msg_x/retry"},
	} {
		var body any
		if c.method == "PATCH" {
			body = map[string]any{"name": "mine"}
		}
		if r := e.do("globex/owner", c.method, "/v1/notification-channels/"+id+c.path, body); r.status != 404 {
			t.Fatalf("%s %s as globex: %d %s", c.method, c.path, r.status, r.body)
		}
	}
	if r := e.do("globex/owner", "DELETE", "/v1/webhooks/"+id, nil); r.status != 404 {
		t.Fatalf("kaizen delete as globex: %d", r.status)
	}
	if l := e.do("globex/viewer", "GET", "/v1/notification-channels", nil); strings.Contains(string(l.body), id) {
		t.Fatalf("globex list shows acme's channel: %s", l.body)
	}
	if r := e.do("acme/owner", "GET", "/v1/notification-channels/"+id, nil, "X-Tenant-Id", "globex"); r.status != 403 {
		t.Fatalf("x-tenant-id mismatch: %d", r.status)
	}
	// acme's signal first, globex's second, through the same consumer:
	// when globex's arrives, acme's was already routed elsewhere.
	e.decide("acme", "dec_ti_a", policy.Block)
	e.decide("globex", "dec_ti_g", policy.Block)
	got := globexRC.waitCount(t, 1)
	acmeRC.waitCount(t, 1)
	// Once the fan-out and the delivery consumers hold nothing, every job
	// those two signals made has run: the counts are final.
	e.waitSettled(notifier.ConsumerPolicy, notifier.ConsumerDeliver)
	if len(globexRC.requests()) != 1 || bodyOf(t, got[0])["tenant"] != "globex" {
		t.Fatalf("globex got %d requests: %s", len(globexRC.requests()), got[0].body)
	}
}

func TestBadInputs(t *testing.T) {
	e := newEnv(t, nil)
	id, _ := e.createChannel("acme", map[string]any{"url": "https://hooks.example.com/x"})
	slack, _ := e.createChannel("acme", map[string]any{"type": "slack", "url": "https://hooks.example.com/s"})
	cases := []struct {
		name, who, method, path string
		body                    any
		status                  int
		code                    string
	}{
		{"no auth", "", "GET", "/v1/notification-channels", nil, 401, ""},
		{"viewer creates", "acme/viewer", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/x"}, 403, ""},
		{"viewer deletes", "acme/viewer", "DELETE", "/v1/notification-channels/" + id, nil, 403, ""},
		{"malformed json", "acme/owner", "POST", "/v1/notification-channels", "{", 400, ""},
		{"wrong field type", "acme/owner", "POST", "/v1/notification-channels", `{"url": 5}`, 400, ""},
		{"unknown type", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"type": "fax", "url": "https://hooks.example.com/x"}, 400, "type"},
		{"unknown signal", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/x", "signals": []string{"verdict.nope"}}, 400, "signals[0]"},
		{"bad severity", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/x", "minSeverity": "urgent"}, 400, "minSeverity"},
		{"missing url", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"name": "x"}, 400, "url"},
		{"relative url", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "/hook"}, 400, "url"},
		{"empty name", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/x", "name": " "}, 400, "name"},
		{"datadog without key", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"type": "datadog"}, 400, "credentials"},
		{"pagerduty without key", "acme/owner", "POST", "/v1/webhooks", map[string]any{"type": "pagerduty"}, 400, "credentials"},
		{"type change", "acme/owner", "PATCH", "/v1/notification-channels/" + id, map[string]any{"type": "slack"}, 400, "type"},
		{"rotate slack", "acme/owner", "POST", "/v1/notification-channels/" + slack + "/rotate-secret", nil, 400, "type"},
		{"unknown channel", "acme/owner", "GET", "/v1/notification-channels/ch_nope", nil, 404, ""},
		{"bad limit", "acme/owner", "GET", "/v1/notification-channels?limit=0", nil, 400, "limit"},
		{"bad cursor", "acme/owner", "GET", "/v1/notification-channels?cursor=not-a-cursor!", nil, 400, "cursor"},
		{"bad delivery status", "acme/owner", "GET", "/v1/notification-channels/" + id + "/deliveries?status=maybe", nil, 400, "status"},
		{"bad delivery limit", "acme/owner", "GET", "/v1/notification-channels/" + id + "/deliveries?limit=-5", nil, 400, "limit"},
		{"weak own secret", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"url": "https://hooks.example.com/x", "secret": "whsec_c2hvcnQ="}, 400, "secret"},
		{"secret on slack", "acme/owner", "POST", "/v1/notification-channels", map[string]any{"type": "slack", "url": "https://hooks.example.com/x", "secret": "whsec_c2hvcnQ="}, 400, "secret"},
		{"too large", "acme/owner", "POST", "/v1/notification-channels", `{"name":"` + strings.Repeat("x", 70<<10) + `"}`, 413, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := e.do(c.who, c.method, c.path, c.body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %s", r.status, c.status, r.body)
			}
			m := r.json(t)
			env, ok := m["error"].(map[string]any)
			if !ok || env["code"] == nil || env["message"] == nil || m["code"] == nil || m["message"] == nil {
				t.Fatalf("not the error envelope: %s", r.body)
			}
			if c.code != "" {
				details, _ := env["details"].([]any)
				found := false
				for _, d := range details {
					if d.(map[string]any)["path"] == c.code {
						found = true
					}
				}
				if !found {
					t.Fatalf("no detail for %s: %s", c.code, r.body)
				}
			}
		})
	}
}

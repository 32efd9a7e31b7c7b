package judge_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/vigilhq/vigil/pkg/judge"
)

func TestComplete(t *testing.T) {
	const key = "sk-client-test-SECRET-0000"
	cases := []struct {
		name       string
		status     int
		body       string
		wantErr    error // nil: success
		anyErr     bool
		wantTokens int64
		wantConf   float64
	}{
		{"ok", 200, `{"choices":[{"message":{"role":"assistant","content":"{\"confidence\":0.3,\"assessment\":\"false_positive\",\"evidence\":[\"e\"]}"}}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}`, nil, false, 15, 0.3},
		{"total missing", 200, `{"choices":[{"message":{"content":"{\"confidence\":1}"}}],"usage":{"prompt_tokens":10,"completion_tokens":5}}`, nil, false, 15, 1},
		{"http error still counts tokens", 500, `{"error":{"message":"boom"},"usage":{"prompt_tokens":7,"total_tokens":7}}`, nil, true, 7, 0},
		{"not a completion", 200, `<html>`, judge.ErrBadAnswer, true, 0, 0},
		{"no choices", 200, `{"choices":[],"usage":{"total_tokens":3}}`, judge.ErrBadAnswer, true, 3, 0},
		{"prose answer", 200, `{"choices":[{"message":{"content":"looks fine to me"}}],"usage":{"total_tokens":4}}`, judge.ErrBadAnswer, true, 4, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var gotAuth, gotPath, gotBody string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				gotAuth, gotPath, gotBody = r.Header.Get("Authorization"), r.URL.Path, string(b)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, tc.body)
			}))
			defer srv.Close()
			a, u, err := judge.Complete(context.Background(), srv.Client(), srv.URL+"/v1/", "m1", key, judge.Prompt(judge.Case{Verdict: "x"}))
			if (err != nil) != tc.anyErr || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) {
				t.Fatalf("err = %v", err)
			}
			if err != nil && strings.Contains(err.Error(), key) {
				t.Fatalf("the key is in the error: %v", err)
			}
			if u.TotalTokens != tc.wantTokens || a.Confidence != tc.wantConf {
				t.Errorf("answer %+v usage %+v", a, u)
			}
			if gotAuth != "Bearer "+key || gotPath != "/v1/chat/completions" || !strings.Contains(gotBody, `"model":"m1"`) {
				t.Errorf("request: auth %q path %q body %s", gotAuth, gotPath, gotBody)
			}
		})
	}
	// Unreachable endpoint: an error without the key.
	_, _, err := judge.Complete(context.Background(), http.DefaultClient, "http://127.0.0.1:1/v1", "m", key, nil)
	if err == nil || strings.Contains(err.Error(), key) {
		t.Fatalf("unreachable: %v", err)
	}
}

package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			w.Write([]byte(`{"ok":true}`))
		case "/slow":
			time.Sleep(200 * time.Millisecond)
		default:
			http.Error(w, "down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	ctx := context.Background()
	if err := check(ctx, srv.URL+"/healthz"); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := check(ctx, srv.URL+"/readyz"); err == nil {
		t.Error("503: want an error")
	}
	short, cancel := context.WithTimeout(ctx, 20*time.Millisecond)
	defer cancel()
	if err := check(short, srv.URL+"/slow"); err == nil {
		t.Error("timeout: want an error")
	}
	if err := check(ctx, "http://127.0.0.1:1/healthz"); err == nil {
		t.Error("refused: want an error")
	}
}

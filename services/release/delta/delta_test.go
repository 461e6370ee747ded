package delta

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestDeltaAsksAndWaits(t *testing.T) {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := calls.Add(1)
		q := r.URL.Query()
		if r.Method != http.MethodGet || r.URL.Path != "/base/api/v3/delta" || q.Get("wait") != "true" ||
			q.Get("src") != "reg.example/v2/aaa@sha256:1" || q.Get("dest") != "reg.example/v2/bbb@sha256:2" ||
			r.Header.Get("Authorization") != "Bearer tok" {
			t.Errorf("request %s %s auth %q", r.Method, r.URL, r.Header.Get("Authorization"))
			http.Error(w, "bad", http.StatusBadRequest)
			return
		}
		if n < 3 { // still making it
			w.WriteHeader(http.StatusGatewayTimeout)
			return
		}
		w.Write([]byte(`{"name":"reg.example/v2/bbb:delta-aaa"}`))
	}))
	defer srv.Close()
	c, err := New(srv.URL+"/base/", srv.Client())
	if err != nil {
		t.Fatal(err)
	}
	c.retry = time.Millisecond
	name, err := c.Delta(context.Background(), "tok", "reg.example/v2/aaa@sha256:1", "reg.example/v2/bbb@sha256:2")
	if err != nil || name != "reg.example/v2/bbb:delta-aaa" || calls.Load() != 3 {
		t.Errorf("Delta = %q, %v after %d calls", name, err, calls.Load())
	}
}

func TestDeltaErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string
		want   string
	}{
		{"server error", http.StatusBadRequest, "Error: no such image", "delta server: 400 Error: no such image"},
		{"token refused", http.StatusUnauthorized, "", "refused the registry token (401)"},
		{"no name", http.StatusOK, `{}`, "200 without a delta name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, _ := New(srv.URL, nil)
			_, err := c.Delta(context.Background(), "secret-token", "a", "b")
			if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "secret-token") {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestDeltaGivesUpAtItsDeadline(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusGatewayTimeout)
	}))
	defer srv.Close()
	c, _ := New(srv.URL, nil)
	c.retry = 5 * time.Millisecond
	ctx, cancel := context.WithTimeoutCause(context.Background(), 50*time.Millisecond, errors.New("no delta after 50ms"))
	defer cancel()
	_, err := c.Delta(ctx, "t", "a", "b")
	if err == nil || !strings.Contains(err.Error(), "no delta after 50ms") {
		t.Errorf("err = %v", err)
	}
}

func TestNewRefusesABadURL(t *testing.T) {
	for _, u := range []string{"", "delta.example.com", "ftp://x", "http://"} {
		if _, err := New(u, nil); err == nil {
			t.Errorf("New(%q) accepted", u)
		}
	}
}

package openbalena

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func fastRetry() Option {
	return WithRetry(RetryPolicy{Attempts: 5, Initial: time.Millisecond, Max: 4 * time.Millisecond})
}

// flaky answers fail (status and body) to the first n requests, then 200 {"d":[]}.
func flaky(t *testing.T, n int32, status int, body string) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		if calls.Add(1) <= n {
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
			return
		}
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"d":[],"id":7,"is_stored_at__image_location":"r/v2/x"}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &calls
}

func TestRetryPolicy(t *testing.T) {
	tests := []struct {
		name      string
		failures  int32
		status    int
		body      string
		post      bool
		wantCalls int32
		wantErr   bool
		wantIs    error
	}{
		{"GET 503 twice then ok", 2, http.StatusServiceUnavailable, "", false, 3, false, nil},
		{"GET 500 always: bounded", 100, http.StatusInternalServerError, "", false, 5, true, nil},
		{"GET 502 always: unavailable", 100, http.StatusBadGateway, "", false, 5, true, ErrUnavailable},
		{"GET 400 not retried", 100, http.StatusBadRequest, `"Check constraint violated"`, false, 1, true, nil},
		{"GET 401 not retried", 100, http.StatusUnauthorized, "", false, 1, true, ErrUnauthorized},
		{"POST empty 500 not retried", 100, http.StatusInternalServerError, "", true, 1, true, nil},
		{"POST 503 not retried", 100, http.StatusServiceUnavailable, "", true, 1, true, ErrUnavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, calls := flaky(t, tt.failures, tt.status, tt.body)
			c := New(srv.URL, srv.Client(), nil, fastRetry())
			var err error
			if tt.post {
				_, err = c.CreateImage(context.Background(), "tok", 1, nil)
			} else {
				_, err = c.GetRelease(context.Background(), "tok", 1)
				if errors.Is(err, ErrNotFound) {
					err = nil // the 200 {"d":[]} answer
				}
			}
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if tt.wantIs != nil && !errors.Is(err, tt.wantIs) {
				t.Errorf("err = %v, want errors.Is %v", err, tt.wantIs)
			}
			if got := calls.Load(); got != tt.wantCalls {
				t.Errorf("calls = %d, want %d", got, tt.wantCalls)
			}
		})
	}
}

func TestAPIErrorShape(t *testing.T) {
	srv, _ := flaky(t, 1, http.StatusBadRequest, `"Invalid semver format"`)
	c := New(srv.URL, srv.Client(), nil, fastRetry())
	_, err := c.CreateRelease(context.Background(), "tok", NewRelease{FleetID: 1, Semver: "x"})
	var apiErr *APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("err = %T %v, want *APIError", err, err)
	}
	if apiErr.Status != 400 || apiErr.Message != "Invalid semver format" || apiErr.Method != "POST" || apiErr.Path != "/v7/release" {
		t.Errorf("APIError = %+v", apiErr)
	}
}

func TestPostRetriedOnlyWhenNeverSent(t *testing.T) {
	// A closed port: the dial fails, the API cannot have seen the POST.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	var attempts atomic.Int32
	hc := &http.Client{Transport: countingTransport{&attempts, http.DefaultTransport}}
	c := New("http://"+addr, hc, nil, fastRetry())
	_, err = c.CreateImage(context.Background(), "tok", 1, nil)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("err = %v, want ErrUnavailable", err)
	}
	if got := attempts.Load(); got != 5 {
		t.Errorf("attempts = %d, want 5 (dial errors are retried)", got)
	}

	// A connection cut after the request was sent: not retried.
	attempts.Store(0)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, _ := w.(http.Hijacker).Hijack()
		_ = conn.Close()
	}))
	defer srv.Close()
	c = New(srv.URL, &http.Client{Transport: countingTransport{&attempts, http.DefaultTransport}}, nil, fastRetry())
	if _, err = c.CreateImage(context.Background(), "tok", 1, nil); err == nil {
		t.Fatal("want an error")
	}
	if got := attempts.Load(); got != 1 {
		t.Errorf("attempts = %d, want 1 (a POST that may have landed is not repeated)", got)
	}
}

func TestRetryHonoursContext(t *testing.T) {
	srv, calls := flaky(t, 100, http.StatusServiceUnavailable, "")
	c := New(srv.URL, srv.Client(), nil, WithRetry(RetryPolicy{Attempts: 5, Initial: time.Hour, Max: time.Hour}))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := c.GetRelease(ctx, "tok", 1)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err = %v, want DeadlineExceeded", err)
	}
	if calls.Load() != 1 {
		t.Errorf("calls = %d, want 1", calls.Load())
	}
}

func TestSecretsScrubbed(t *testing.T) {
	const secret = "s3cr3t-user-token"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// A misbehaving API echoing the credentials.
		w.WriteHeader(http.StatusBadRequest)
		_, _ = io.WriteString(w, `"bad header: `+r.Header.Get("Authorization")+`"`)
	}))
	defer srv.Close()
	c := New(srv.URL, srv.Client(), nil, fastRetry())
	_, err := c.WhoAmI(context.Background(), secret)
	if err == nil || strings.Contains(err.Error(), secret) {
		t.Errorf("err = %v: must exist and not hold the token", err)
	}
	_, err = c.RegistryToken(context.Background(), secret, "reg", []string{"v2/ab"}, []string{"pull"})
	if err == nil {
		t.Fatal("want an error")
	}
	// Basic auth is base64: the raw secret cannot be echoed by accident, but
	// the scrub covers it anyway.
	if strings.Contains(err.Error(), secret) {
		t.Errorf("err = %v holds the builder token", err)
	}
}

type countingTransport struct {
	n    *atomic.Int32
	next http.RoundTripper
}

func (c countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	c.n.Add(1)
	return c.next.RoundTrip(r)
}

package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestParseServices(t *testing.T) {
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"all"}, "executor,ingest,release,scheduler", ""},
		{[]string{"ingest", "release"}, "ingest,release", ""},
		{[]string{"scheduler"}, "scheduler", ""},
		{[]string{"builder"}, "", `unknown service "builder"`},
		{nil, "", "usage"},
	}
	for _, tt := range tests {
		got, err := parseServices(tt.args)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("%v: err %v, want %q", tt.args, err, tt.wantErr)
			}
			continue
		}
		var names []string
		for _, s := range []string{"executor", "ingest", "release", "scheduler"} {
			if got[s] {
				names = append(names, s)
			}
		}
		if err != nil || strings.Join(names, ",") != tt.want {
			t.Errorf("%v: %v %v, want %s", tt.args, names, err, tt.want)
		}
	}
}

func TestServeRefusesBadConfigNamingTheField(t *testing.T) {
	t.Setenv("BALENA_TLD", "example.com")
	t.Setenv("TOKEN_AUTH_BUILDER_TOKEN", "t0k3n-for-the-test")
	t.Setenv("DOCKER_HOST_AMD64", "http://10.0.0.1:2375")
	err := run([]string{"serve", "all"})
	if err == nil || !strings.Contains(err.Error(), "hosts[0].endpoint") || strings.Contains(err.Error(), "t0k3n-for-the-test") {
		t.Fatalf("err = %v", err)
	}
}

func TestPing(t *testing.T) {
	ok := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/ping" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte("OK"))
	}))
	defer ok.Close()
	if err := run([]string{"ping", ok.URL}); err != nil {
		t.Errorf("ping of a live builder: %v", err)
	}
	stopping := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "the builder is shutting down", http.StatusServiceUnavailable)
	}))
	defer stopping.Close()
	if err := run([]string{"ping", strings.TrimPrefix(stopping.URL, "http://")}); err == nil || !strings.Contains(err.Error(), "503") {
		t.Errorf("ping of a stopping builder: %v", err)
	}
}

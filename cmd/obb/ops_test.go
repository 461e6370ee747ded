package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

func TestRenderEvent(t *testing.T) {
	log := func(svc string, l buildv1.Level, text string) *buildv1.Event {
		return &buildv1.Event{Service: svc, Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: text, Level: l}}}
	}
	tests := []struct {
		e    *buildv1.Event
		want string
	}{
		{log("", buildv1.Level_LEVEL_INFO, "Starting build\n"), "[Info]     Starting build"},
		{log("main", buildv1.Level_LEVEL_OUTPUT, "Step 1/2 : FROM busybox"), "[main]     Step 1/2 : FROM busybox"},
		{log("main", buildv1.Level_LEVEL_ERROR, "exit 3"), "[main]     exit 3"},
		{log("", buildv1.Level_LEVEL_ERROR, "Not deploying"), "[Error]    Not deploying"},
		{log("", buildv1.Level_LEVEL_DELTA, "Delta for main ready"), "[Delta]    Delta for main ready"},
		{log("", buildv1.Level_LEVEL_UNSPECIFIED, "\x1b[90m│\x1b[39m main"), "│ main"},
		{&buildv1.Event{Kind: &buildv1.Event_Job{Job: &buildv1.JobUpdate{}}}, ""},
		{&buildv1.Event{Kind: &buildv1.Event_Finished{Finished: &buildv1.BuildFinished{State: buildv1.BuildState_BUILD_STATE_FAILED, Error: "main: exit 3"}}},
			"[Build]    failed: main: exit 3"},
	}
	for _, tt := range tests {
		if got := renderEvent(tt.e); got != tt.want {
			t.Errorf("renderEvent(%v) = %q, want %q", tt.e, got, tt.want)
		}
	}
}

func TestOpsTokenFromTheDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "admin-token"), []byte("obb_file_token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		if r.URL.Path != "/v1/hosts" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(`{"hosts":[{"name":"arm-1","nativeArchs":["aarch64"],"maxConcurrent":4,"running":1,"healthy":true,"plugin":"docker-tcp"}]}`))
	}))
	defer srv.Close()
	t.Setenv("OBB_ADMIN_TOKEN", "")
	var out bytes.Buffer
	if err := opsCmd("hosts", []string{"--admin", srv.URL, "--data-dir", dir, "ls"}, &out); err != nil {
		t.Fatal(err)
	}
	if auth != "Bearer obb_file_token" || !strings.Contains(out.String(), "arm-1") || !strings.Contains(out.String(), "1/4") {
		t.Errorf("auth %q, output:\n%s", auth, out.String())
	}
	if err := opsCmd("hosts", []string{"--admin", srv.URL, "--data-dir", t.TempDir(), "ls"}, &out); err == nil || !strings.Contains(err.Error(), "OBB_ADMIN_TOKEN") {
		t.Errorf("no token anywhere: %v", err)
	}
	if err := opsCmd("hosts", []string{"--token", "x", "frobnicate"}, &out); err == nil || !strings.Contains(err.Error(), "usage") {
		t.Errorf("unknown command: %v", err)
	}
}

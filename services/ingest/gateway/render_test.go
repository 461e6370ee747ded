package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	buildv1 "github.com/open-balena-builder/builder/proto/builder/build/v1"
)

func logEvent(service string, level buildv1.Level, text string, replace bool) *buildv1.Event {
	return &buildv1.Event{Service: service, Kind: &buildv1.Event_Log{Log: &buildv1.LogLine{Text: text, Level: level, Replace: replace}}}
}

func TestRender(t *testing.T) {
	tests := []struct {
		name  string
		e     *buildv1.Event
		want  string
		error bool
		repl  bool
	}{
		{"info", logEvent("", buildv1.Level_LEVEL_INFO, "Building on arm01", false), "\x1b[36m[Info]\x1b[39m     Building on arm01", false, false},
		{"success", logEvent("", buildv1.Level_LEVEL_SUCCESS, "Release successfully created!", false), "\x1b[32m[Success]\x1b[39m  Release successfully created!", false, false},
		{"warn", logEvent("", buildv1.Level_LEVEL_WARN, "slow", false), "\x1b[33m[Warn]\x1b[39m     slow", false, false},
		{"delta", logEvent("", buildv1.Level_LEVEL_DELTA, "Creating image deltas for main...", false), "\x1b[35m[Delta]\x1b[39m    Creating image deltas for main...", false, false},
		{"error", logEvent("", buildv1.Level_LEVEL_ERROR, "Not deploying release.", false), "\x1b[31m[Error]\x1b[39m    Not deploying release.", true, false},
		{"service error", logEvent("main", buildv1.Level_LEVEL_ERROR, "exit 3", false), "\x1b[31m[main]\x1b[39m     exit 3", true, false},
		{"output", logEvent("main", buildv1.Level_LEVEL_OUTPUT, "Step 1/4 : FROM busybox\n", false), "\x1b[34m[main]\x1b[39m     Step 1/4 : FROM busybox", false, false},
		{"progress", logEvent("main", buildv1.Level_LEVEL_OUTPUT, "abc: Pushing", true), "\x1b[34m[main]\x1b[39m     abc: Pushing", false, true},
		{"plain", logEvent("", buildv1.Level_LEVEL_UNSPECIFIED, "│ main │", false), "│ main │", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := render(tt.e)
			if len(got) != 1 || got[0].Message != tt.want || got[0].IsError != tt.error || got[0].Replace != tt.repl {
				t.Errorf("render = %+v, want %q error=%v replace=%v", got, tt.want, tt.error, tt.repl)
			}
		})
	}
	if got := render(&buildv1.Event{Kind: &buildv1.Event_Job{Job: &buildv1.JobUpdate{}}}); len(got) != 0 {
		t.Errorf("a job update rendered as %v", got)
	}
}

func TestArrayWriterStreamsOneJSONArray(t *testing.T) {
	rec := httptest.NewRecorder()
	a := newArrayWriter(rec)
	a.write(buildLogID(42))
	a.write(message{Message: "hello"})
	a.write(errorMessage("broke: %s", "x"))
	a.close()
	var got []map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatalf("not one JSON array: %v\n%s", err, rec.Body)
	}
	if len(got) != 3 || got[0]["resource"] != "buildLogId" || got[0]["value"] != float64(42) || got[2]["isError"] != true {
		t.Errorf("array = %v", got)
	}
}

func TestArrayWriterErasesAfterProgress(t *testing.T) {
	rec := httptest.NewRecorder()
	a := newArrayWriter(rec)
	a.write(message{Message: "l1: Pushing 1/2", Replace: true})
	a.write(message{Message: "l1: Pushing 2/2", Replace: true})
	a.write(message{Message: "l1: Pushed"})
	a.write(message{Message: "done"})
	a.close()
	var got []message
	if err := json.Unmarshal(rec.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, m := range got {
		kinds = append(kinds, fmt.Sprintf("%s%v%v", m.Message, m.Replace, m.Value))
	}
	want := "l1: Pushing 1/2true<nil>,l1: Pushing 2/2true<nil>,falseerase,l1: Pushedfalse<nil>,donefalse<nil>"
	if strings.Join(kinds, ",") != want {
		t.Errorf("elements %s\nwant %s", strings.Join(kinds, ","), want)
	}
}

func TestRPCErrorStatuses(t *testing.T) {
	tests := []struct {
		code codes.Code
		want int
	}{
		{codes.Unauthenticated, http.StatusUnauthorized},
		{codes.NotFound, http.StatusNotFound},
		{codes.InvalidArgument, http.StatusBadRequest},
		{codes.PermissionDenied, http.StatusForbidden},
		{codes.Unavailable, http.StatusServiceUnavailable},
	}
	for _, tt := range tests {
		rec := httptest.NewRecorder()
		rpcError(rec, status.Error(tt.code, "why"))
		var msg string
		if rec.Code != tt.want || json.Unmarshal(rec.Body.Bytes(), &msg) != nil || msg != "why" {
			t.Errorf("%v → %d %q, want %d and a JSON string", tt.code, rec.Code, rec.Body, tt.want)
		}
	}
	for tag, want := range map[string]string{"[Success]": "[Success]  ", "[Info]": "[Info]     ", "[a-very-long-service]": "[a-very-long-service] "} {
		if got := strings.ReplaceAll(prefix("", tag), reset, ""); got != want {
			t.Errorf("prefix(%q) = %q, want %q (padded to column 11, at least one space)", tag, got, want)
		}
	}
}

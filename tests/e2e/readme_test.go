package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

var (
	grpcurlOnce sync.Once
	grpcurlBin  string
	grpcurlErr  error
)

// grpcurl builds grpcurl at the version tools/go.mod pins (make tools).
func grpcurl(t *testing.T) string {
	t.Helper()
	grpcurlOnce.Do(func() {
		root, err := harness.RepoRoot()
		if err != nil {
			grpcurlErr = err
			return
		}
		dir, err := os.MkdirTemp("", "grpcurl-")
		if err != nil {
			grpcurlErr = err
			return
		}
		grpcurlBin = filepath.Join(dir, "grpcurl")
		cmd := exec.Command("go", "build", "-o", grpcurlBin, "github.com/fullstorydev/grpcurl/cmd/grpcurl")
		cmd.Dir = filepath.Join(root, "tools")
		cmd.Env = append(os.Environ(), "GOWORK=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			grpcurlErr = err
			t.Logf("%s", out)
		}
	})
	if grpcurlErr != nil {
		t.Fatalf("build grpcurl: %v", grpcurlErr)
	}
	return grpcurlBin
}

// readmeCall is one `ogrpc [-d '<json>'] 127.0.0.1:9100 [method]` of the
// README.
var readmeCall = regexp.MustCompile(`ogrpc (?:-d '([^']*)' )?127\.0\.0\.1:9100(?: ([A-Za-z0-9_./]+))?`)

// The README's grpcurl examples work as written, against a running
// builder's operator surface (its address and the ids of this stack put
// in).
func TestREADMEGrpcurlExamples(t *testing.T) {
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	calls := readmeCall.FindAllStringSubmatch(string(readme), -1)
	if len(calls) < 6 {
		t.Fatalf("the README has %d grpcurl examples", len(calls))
	}
	bin := grpcurl(t)
	f := newFixture(t, "genericx86-64-ext")
	done := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo readme-" + f.fleet.Slug + "\n"}), harness.PushOptions{})
	if done.IsError {
		t.Fatalf("push:\n%s", done.Text())
	}
	running := headless(t, f, "readme-cancel-"+f.fleet.Slug)

	run := func(token, data, method string) (string, error) {
		args := []string{"-plaintext"}
		if token != "" {
			args = append(args, "-H", "authorization: Bearer "+token)
		}
		if data != "" {
			args = append(args, "-d", data)
		}
		args = append(args, env.AdminAddr)
		if method != "" {
			args = append(args, method)
		}
		cmd := exec.Command(bin, args...)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	ran := map[string]bool{}
	for _, c := range calls {
		data, method := c[1], c[2]
		data = strings.ReplaceAll(data, `"arm-1"`, `"amd64"`)
		id := strconv.FormatInt(done.ReleaseID, 10)
		if strings.HasSuffix(method, "/CancelBuild") {
			id = strconv.FormatInt(running, 10)
		}
		data = strings.ReplaceAll(data, `"42"`, `"`+id+`"`)
		out, err := run(harness.AdminToken, data, method)
		if err != nil {
			t.Errorf("%s: %v\n%s", c[0], err, out)
			continue
		}
		ran[method] = true
		var want string
		switch {
		case method == "list":
			want = "builder.ingest.v1.IngestService"
		case strings.HasSuffix(method, "/ListHosts"):
			want = `"name": "amd64"`
		case strings.HasSuffix(method, "/DrainHost"):
			want = `"draining": true`
		case strings.HasSuffix(method, "/ListBuilds"):
			want = `"buildId": "` + strconv.FormatInt(done.ReleaseID, 10) + `"`
		case strings.HasSuffix(method, "/WatchBuild"):
			want = "readme-" + f.fleet.Slug
		case strings.HasSuffix(method, "/CancelBuild"):
			want = `"buildId": "` + strconv.FormatInt(running, 10) + `"`
		}
		if !strings.Contains(out, want) {
			t.Errorf("%s: output lacks %q:\n%s", c[0], want, out)
		}
		if strings.HasSuffix(method, "/DrainHost") {
			if out, err := run(harness.AdminToken, `{"name":"amd64"}`, "builder.scheduler.v1.SchedulerService/ResumeHost"); err != nil {
				t.Fatalf("ResumeHost: %v\n%s", err, out)
			}
		}
	}
	for _, m := range []string{"list", "builder.scheduler.v1.SchedulerService/ListHosts", "builder.scheduler.v1.SchedulerService/DrainHost",
		"builder.ingest.v1.IngestService/ListBuilds", "builder.ingest.v1.IngestService/WatchBuild", "builder.ingest.v1.IngestService/CancelBuild"} {
		if !ran[m] {
			t.Errorf("the README has no working example of %q", m)
		}
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if r, _ := env.API.Release(running); r.Status == "cancelled" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the build cancelled with grpcurl did not end cancelled")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Without the operator token, nothing.
	if out, err := run("", "", "builder.ingest.v1.IngestService/ListBuilds"); err == nil || !strings.Contains(out, "Unauthenticated") {
		t.Errorf("without a token: %v\n%s", err, out)
	}
}

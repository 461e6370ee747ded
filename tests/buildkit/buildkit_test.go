// Package buildkit pushes a compose project with the real balena-cli
// through a builder whose host runs the buildkit plugin against a
// standalone buildkitd (built from github.com/moby/buildkit by deps.sh).
package buildkit

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

func TestCLIComposePushThroughBuildkitHost(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{Buildkit: true, Logf: t.Logf})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	// The Docker host takes no job: every amd64 build goes to buildkitd.
	resp, err := s.Admin(http.MethodPost, "/v1/hosts/amd64:drain", strings.NewReader("{}"))
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("drain amd64: %v %v", resp, err)
	}

	token := s.API.AddUser("bk")
	fleet := s.API.AddFleet("bk", "fleet", "genericx86-64-ext")
	cli, err := s.NewCLI(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if res, err := cli.Run(ctx, "login", "--token", token); err != nil || res.Code != 0 {
		t.Fatalf("login: %v %+v", err, res)
	}
	dir := t.TempDir()
	files := map[string]string{
		"docker-compose.yml": "version: '2.1'\nservices:\n  web:\n    build: ./web\n  worker:\n    build:\n      context: ./worker\n      args:\n        GREETING: hello\n",
		"web/Dockerfile":     "FROM " + s.BaseImage + "\nRUN echo web-on-buildkit > /web.txt\n",
		"worker/Dockerfile":  "FROM " + s.BaseImage + "\nARG GREETING\nRUN echo \"$GREETING from $(uname -m)\" > /worker.txt && cat /worker.txt\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cli.Run(ctx, "push", fleet.AppName, "--source", dir)
	out := harness.StripANSI(res.Stdout)
	if err != nil || res.Code != 0 {
		t.Fatalf("balena push: %v exit %d\n%s\n%s\n--- buildkitd ---\n%s", err, res.Code, out, res.Stderr, s.Buildkitd.LogTail(40))
	}
	for _, want := range []string{"Building on buildkit", "Release successfully created"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	var rel int64
	for _, r := range s.API.Releases() {
		if r.Application == fleet.ID {
			rel = r.ID
		}
	}
	if r, ok := s.API.Release(rel); !ok || r.Status != "success" {
		t.Fatalf("release %d: %+v", rel, r)
	}
	n := 0
	for _, ri := range s.API.ReleaseImages() {
		if ri.Release != rel {
			continue
		}
		img, _ := s.API.Image(ri.Image)
		if img.Status != "success" || !strings.HasPrefix(img.ContentHash, "sha256:") || img.ImageSize == "" {
			t.Errorf("image %d: %+v", img.ID, img)
		}
		n++
	}
	if n != 2 {
		t.Errorf("release has %d images, want 2", n)
	}
	// The images are in the registry: the Docker daemon pulls them with a
	// registry token for their repositories.
	for _, ri := range s.API.ReleaseImages() {
		if ri.Release != rel {
			continue
		}
		img, _ := s.API.Image(ri.Image)
		repo := strings.TrimPrefix(img.Location, s.Registry.Addr()+"/")
		tok, err := s.RegistryToken(repo, "pull")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.PullFromRegistry(ctx, img.Location+"@"+img.ContentHash, tok); err != nil {
			t.Errorf("pull %s: %v", img.Location, err)
		}
	}
}

// Package image builds the builder's container image (scripts/image.sh, as
// `make image` does) on the test stack's daemon, runs it with host
// networking against the stack's API, registry and Docker host, and pushes a
// compose project through it with the real balena-cli.
package image

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

func docker(t *testing.T, host string, args ...string) string {
	t.Helper()
	cmd := exec.Command("docker", args...)
	cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("docker %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return strings.TrimSpace(out.String())
}

func freeAddr(t *testing.T) string {
	p, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return "127.0.0.1:" + strconv.Itoa(p)
}

func TestImagePushesWithTheRealCLI(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	host := s.AMD64.Host()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}

	// Build it as `make image` does, offline.
	const img = "open-balena-builder:e2e"
	build := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "image.sh"))
	build.Env = append(os.Environ(), "DOCKER_HOST="+host, "IMAGE="+img, "VERSION=e2e")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("scripts/image.sh: %v\n%s", err, out)
	}
	var inspect []struct {
		Config struct {
			User       string
			Entrypoint []string
			Cmd        []string
			Volumes    map[string]any
		}
	}
	if err := json.Unmarshal([]byte(docker(t, host, "image", "inspect", img)), &inspect); err != nil || len(inspect) != 1 {
		t.Fatalf("inspect: %v", err)
	}
	c := inspect[0].Config
	if c.User != "65532:65532" || strings.Join(c.Entrypoint, " ") != "/usr/local/bin/obb" || strings.Join(c.Cmd, " ") != "serve all" || c.Volumes["/var/lib/obb"] == nil {
		t.Errorf("image config: %+v", c)
	}

	// Run it non-root, in the group that may use the Docker socket.
	var st syscall.Stat_t
	if err := syscall.Stat(s.AMD64.Socket(), &st); err != nil {
		t.Fatal(err)
	}
	httpAddr, admin := freeAddr(t), freeAddr(t)
	env := []string{
		"API_HOST=" + s.APIURL, "REGISTRY2_HOST=" + s.Registry.Addr(), "TOKEN_AUTH_BUILDER_TOKEN=" + harness.BuilderToken,
		"DOCKER_HOST_AMD64=unix:///var/run/docker.sock", "DOCKER_BUILDKIT=0", "OBB_BUILD_NETWORK=host",
		"OBB_HTTP_ADDR=" + httpAddr, "OBB_ADMIN_ADDR=" + admin, "OBB_ADMIN_TOKEN=" + harness.AdminToken,
		"OBB_INGEST_ADDR=" + freeAddr(t), "OBB_SCHEDULER_ADDR=" + freeAddr(t), "OBB_EXECUTOR_ADDR=" + freeAddr(t), "OBB_RELEASE_ADDR=" + freeAddr(t),
	}
	args := []string{"run", "-d", "--name", "obb-e2e", "--network", "host", "--group-add", strconv.Itoa(int(st.Gid)),
		"-v", s.AMD64.Socket() + ":/var/run/docker.sock", "-v", "obb-e2e-data:/var/lib/obb"}
	for _, e := range env {
		args = append(args, "-e", e)
	}
	id := docker(t, host, append(args, img)...)
	defer func() {
		if t.Failed() {
			t.Logf("container log:\n%s", docker(t, host, "logs", "--tail", "60", id))
		}
		docker(t, host, "rm", "-f", id)
		docker(t, host, "volume", "rm", "obb-e2e-data")
		docker(t, host, "rmi", img)
	}()
	url := "http://" + httpAddr
	deadline := time.Now().Add(time.Minute)
	for {
		resp, err := harness.Call("GET", url+"/ping", "", nil)
		if err == nil && resp.StatusCode == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the container does not answer /ping: %v\n%s", err, docker(t, host, "logs", id))
		}
		time.Sleep(200 * time.Millisecond)
	}
	if user := docker(t, host, "inspect", "-f", "{{.Config.User}}", id); user != "65532:65532" {
		t.Errorf("the container runs as %q", user)
	}

	// The real CLI pushes a compose project through it.
	token := s.API.AddUser("imaged")
	fleet := s.API.AddFleet("imaged", "fleet", "genericx86-64-ext")
	cli, err := s.NewCLI(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range cli.Env {
		if strings.HasPrefix(e, "BALENARC_BUILDER_URL=") {
			cli.Env[i] = "BALENARC_BUILDER_URL=" + url
		}
	}
	if res, err := cli.Run(ctx, "login", "--token", token); err != nil || res.Code != 0 {
		t.Fatalf("login: %v %+v", err, res)
	}
	dir := t.TempDir()
	files := map[string]string{
		"docker-compose.yml": "version: '2.1'\nservices:\n  web:\n    build: ./web\n  worker:\n    build: ./worker\n",
		"web/Dockerfile":     "FROM busybox\nRUN echo web > /web.txt\n",
		"worker/Dockerfile":  "FROM busybox\nRUN echo worker > /worker.txt\n",
	}
	for name, body := range files {
		p := filepath.Join(dir, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	res, err := cli.Run(ctx, "push", fleet.AppName, "--source", dir)
	if err != nil || res.Code != 0 {
		t.Fatalf("balena push through the image: %v exit %d\n%s\n%s", err, res.Code, res.Stdout, res.Stderr)
	}
	var rel int64
	for _, r := range s.API.Releases() {
		if r.Application == fleet.ID {
			rel = r.ID
		}
	}
	if r, _ := s.API.Release(rel); r.Status != "success" || !r.IsFinal {
		t.Errorf("release %d: %q final %v\n%s", rel, r.Status, r.IsFinal, res.Stdout)
	}
	if !strings.Contains(harness.StripANSI(res.Stdout), "Release successfully created") {
		t.Errorf("CLI output:\n%s", res.Stdout)
	}
	if logs := docker(t, host, "logs", id); strings.Contains(logs, token) || strings.Contains(logs, harness.AdminToken) {
		t.Error("a token is in the container's log")
	}
}

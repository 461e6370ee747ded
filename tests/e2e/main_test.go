// Package e2e pushes projects through the real builder binary, with real
// Docker daemons (amd64 and an arm64 one under qemu binfmt), a real registry
// with token auth and the open-balena-api stand-in.
package e2e

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/tests/harness"
)

var env *harness.Stack

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	s, err := harness.Start(ctx, harness.Options{ARM64: true,
		// RUN steps on the amd64 host get host networking: they reach the
		// builder's loopback (TestRunStepOnTheBuildersLoopbackGetsNothing).
		// Two pushes per user (TestTooManyPushesOfOneUserAre429); an upload
		// silent for 10 s is cut off (TestSilentUploadIsCutOff).
		Env:  []string{"OBB_BUILD_NETWORK=host", "OBB_MAX_BUILDS_PER_USER=2", "OBB_UPLOAD_MIN_RATE=1", "OBB_UPLOAD_RATE_WINDOW=10s"},
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }})
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot start the stack:", err)
		os.Exit(1)
	}
	env = s
	code := m.Run()
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- obb log (tail) ---\n%s\n", s.BuilderLogTail(80))
	}
	s.Stop()
	os.Exit(code)
}

// fixture is a user with a fleet of a device type.
type fixture struct {
	token string
	fleet apistandin.Fleet
}

var fleetCount int

func newFixture(t testing.TB, deviceType string) fixture {
	t.Helper()
	fleetCount++
	user := fmt.Sprintf("user%d", fleetCount)
	return fixture{
		token: env.API.AddUser(user),
		fleet: env.API.AddFleet(user, fmt.Sprintf("fleet%d", fleetCount), deviceType),
	}
}

// project writes a project directory from a map of files.
func project(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func push(t *testing.T, f fixture, dir string, o harness.PushOptions) *harness.PushResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o.Slug, o.Token = f.fleet.Slug, f.token
	res, err := harness.Push(ctx, env.BuilderURL, dir, o)
	if err != nil {
		t.Fatalf("push: %v", err)
	}
	return res
}

// imagesOf returns the images of a release.
func imagesOf(t *testing.T, releaseID int64) []apistandin.Image {
	t.Helper()
	var out []apistandin.Image
	for _, ri := range env.API.ReleaseImages() {
		if ri.Release == releaseID {
			img, ok := env.API.Image(ri.Image)
			if !ok {
				t.Fatalf("release_image %d names a missing image %d", ri.ID, ri.Image)
			}
			out = append(out, img)
		}
	}
	return out
}

// waitRelease polls until the release leaves "running".
func waitRelease(t *testing.T, id int64) apistandin.Release {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r, ok := env.API.Release(id)
		if ok && r.Status != "running" {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("release %d still %q after 3 minutes", id, r.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func writeFile(dir, name, body string) error {
	p := filepath.Join(dir, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(body), 0o644)
}

// plainTar is an uncompressed tar of dir (a docker build context).
func plainTar(dir string) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		gz, err := gzip.NewReader(harness.TarGz(dir))
		if err != nil {
			pw.CloseWithError(err)
			return
		}
		_, err = io.Copy(pw, gz)
		pw.CloseWithError(err)
	}()
	return pr
}

// registryToken gets a token for repo with the builder token.
func registryToken(t testing.TB, repo, actions string) string {
	t.Helper()
	tok, err := env.RegistryToken(repo, actions)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

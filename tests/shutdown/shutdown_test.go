// Package shutdown stops a builder in the middle of builds, as systemd or
// docker stop does (SIGTERM): pushes are refused with 503, a build that ends
// within OBB_SHUTDOWN_GRACE ends well, the rest are cancelled, and the
// process exits 0 with nothing left running.
package shutdown

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/platform/sqlstore"
	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

func project(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/Dockerfile", []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func headless(t *testing.T, s *harness.Stack, slug, token, dockerfile string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := harness.PushHeadless(ctx, s.BuilderURL, project(t, dockerfile), harness.PushOptions{Slug: slug, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// running lists the host's running containers whose command has marker.
func running(t *testing.T, s *harness.Stack, marker string) int {
	t.Helper()
	var list []struct{ Command string }
	if err := s.AMD64.Engine().JSON(context.Background(), http.MethodGet, "/containers/json", nil, nil, &list); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, c := range list {
		if strings.Contains(c.Command, marker) {
			n++
		}
	}
	return n
}

// waitRunning waits (up to a minute) for a build container whose command
// has marker.
func waitRunning(t *testing.T, s *harness.Stack, marker string) {
	t.Helper()
	for i := 0; running(t, s, marker) == 0; i++ {
		if i == 600 {
			t.Fatalf("no build container runs %q", marker)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestSIGTERMFinishesWhatItCanAndCancelsTheRest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{Env: []string{"OBB_SHUTDOWN_GRACE=10s"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	token := s.API.AddUser("ops")
	fleet := s.API.AddFleet("ops", "stopping", "genericx86-64-ext")

	long := headless(t, s, fleet.Slug, token, "FROM busybox\nRUN echo long && sleep 300\n")
	waitRunning(t, s, "sleep 300")
	quick := headless(t, s, fleet.Slug, token, "FROM busybox\nRUN sleep 2\n")

	stopped := make(chan error, 1)
	go func() { stopped <- s.StopBuilder(syscall.SIGTERM, 2*time.Minute) }()
	time.Sleep(500 * time.Millisecond) // the signal has arrived; the grace is 10 s
	res, err := harness.Push(ctx, s.BuilderURL, project(t, "FROM busybox\n"), harness.PushOptions{Slug: fleet.Slug, Token: token})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusServiceUnavailable || !strings.Contains(res.Body, "shutting down") {
		t.Errorf("a push while stopping: %d %q, want 503", res.Status, res.Body)
	}
	// The load balancer's check says so too, and sends pushes elsewhere.
	if ping, err := harness.Call(http.MethodGet, s.BuilderURL+"/ping", "", nil); err != nil || ping.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("GET /ping while stopping: %v %v, want 503", ping, err)
	}
	if err := <-stopped; err != nil {
		t.Fatalf("obb did not exit 0: %v\n%s", err, s.BuilderLogTail(40))
	}

	for id, want := range map[int64]string{quick: "success", long: "cancelled"} {
		r, ok := s.API.Release(id)
		if !ok || r.Status != want {
			t.Errorf("release %d is %q, want %s", id, r.Status, want)
		}
	}
	if n := running(t, s, "sleep 300"); n != 0 {
		t.Errorf("%d build containers still run", n)
	}
	entries, err := os.ReadDir(s.DataDir + "/builds")
	if err != nil || len(entries) != 0 {
		t.Errorf("left in the data dir: %v %v", entries, err)
	}
	for _, ri := range s.API.ReleaseImages() {
		if ri.Release != long {
			continue
		}
		img, _ := s.API.Image(ri.Image)
		if img.Status != "cancelled" || !strings.Contains(img.BuildLog+img.ErrorMessage, "the builder is shutting down") {
			t.Errorf("the long build's image: %s, log %q, error %q; want cancelled, saying why", img.Status, img.BuildLog, img.ErrorMessage)
		}
	}
}

// kill -9 in the middle of a build, then a restart: the release is
// settled failed ("the builder restarted during this build") within
// seconds, no build container runs on, the data dir is clean.
// With the in-flight store in SQLite (the default) and in PostgreSQL
// (OBB_DATABASE_URL).
func TestKilledBuilderIsSettledAtRestart(t *testing.T) {
	t.Run("sqlite", func(t *testing.T) { testKilledBuilder(t, nil) })
	t.Run("postgres", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		pg, err := stack.StartPostgres(ctx, t.Logf)
		if err != nil {
			t.Fatal(err)
		}
		defer pg.Stop()
		testKilledBuilder(t, []string{"OBB_DATABASE_URL=" + pg.URL()})
		// The builder kept its builds there (nothing else opened it).
		if out, err := pg.SQL(ctx, "SELECT count(*) FROM obb_schema_migrations"); err != nil || out != strconv.Itoa(sqlstore.SchemaVersion()) {
			t.Errorf("the builder did not migrate PostgreSQL: %q %v", out, err)
		}
	})
}

func testKilledBuilder(t *testing.T, env []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	token := s.API.AddUser("ops")
	fleet := s.API.AddFleet("ops", "killed", "genericx86-64-ext")

	id := headless(t, s, fleet.Slug, token, "FROM busybox\nRUN echo killed && sleep 301\n")
	waitRunning(t, s, "sleep 301")
	if len(plugins(t, s)) == 0 {
		t.Fatal("no plugin process seen while building (the check below would prove nothing)")
	}
	if err := s.StopBuilder(syscall.SIGKILL, time.Minute); err == nil {
		t.Fatal("obb exited 0 after SIGKILL?")
	}
	if r, _ := s.API.Release(id); r.Status != "running" {
		t.Fatalf("before the restart the release is %q", r.Status)
	}
	for i := 0; len(plugins(t, s)) > 0; i++ {
		if i == 100 {
			t.Fatalf("the killed builder's plugin processes live on: %v", plugins(t, s))
		}
		time.Sleep(100 * time.Millisecond)
	}
	restart := time.Now()
	if err := s.RestartBuilder(ctx); err != nil {
		t.Fatal(err)
	}
	var status string
	for i := 0; i < 100; i++ { // settled within 10 s
		r, _ := s.API.Release(id)
		if status = r.Status; status != "running" {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if status != "failed" {
		t.Fatalf("10 s after the restart the release is %q, want failed", status)
	}
	t.Logf("settled %s after the restart began", time.Since(restart).Round(time.Millisecond))
	for _, ri := range s.API.ReleaseImages() {
		if ri.Release == id {
			if img, _ := s.API.Image(ri.Image); img.Status != "failed" || !strings.Contains(img.ErrorMessage, "the builder restarted during this build") {
				t.Errorf("image %d: %s %q", img.ID, img.Status, img.ErrorMessage)
			}
		}
	}
	for i := 0; running(t, s, "sleep 301") > 0; i++ {
		if i == 300 { // the daemon ends a build whose client went away
			t.Fatal("the killed build's container still runs")
		}
		time.Sleep(100 * time.Millisecond)
	}
	entries, err := os.ReadDir(s.DataDir + "/builds")
	if err != nil || len(entries) != 0 {
		t.Errorf("left in the data dir: %v %v", entries, err)
	}
	// The builder works on.
	res, err := harness.Push(ctx, s.BuilderURL, project(t, "FROM busybox\n"), harness.PushOptions{Slug: fleet.Slug, Token: token})
	if err != nil || res.IsError {
		t.Fatalf("a push after the restart: %v %s", err, res.Text())
	}
}

// plugins lists the running executor plugin processes of this stack (by
// their binary under the stack's root).
func plugins(t *testing.T, s *harness.Stack) []string {
	t.Helper()
	procs, _ := filepath.Glob("/proc/[0-9]*/exe")
	var out []string
	for _, p := range procs {
		exe, err := os.Readlink(p)
		if err == nil && strings.HasPrefix(exe, s.Root) && strings.Contains(exe, "obb-plugin-") {
			out = append(out, p+" → "+exe)
		}
	}
	return out
}

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// The trust boundary, tried as an attacker would: on the public port, from
// a RUN step on the builder's loopback, and as another tenant.

// headless starts a build that runs until cancelled and returns its id.
func headless(t *testing.T, f fixture, marker string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	id, err := harness.PushHeadless(ctx, env.BuilderURL, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo " + marker + " && sleep 120\n"}),
		harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// status calls the builder and returns the status and up to 64 KiB of the
// body (a running build's log streams on: it is not read to the end).
func status(t *testing.T, method, url, token string) (int, string) {
	t.Helper()
	var body io.Reader
	if method == http.MethodPost {
		body = strings.NewReader("{}")
	}
	resp, err := harness.Call(method, url, token, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b := make([]byte, 64<<10)
	n, _ := io.ReadAtLeast(resp.Body, b, 1)
	return resp.StatusCode, string(b[:n])
}

func TestPublicPortShowsUsersOnlyTheirOwnBuilds(t *testing.T) {
	owner := newFixture(t, "genericx86-64-ext")
	other := newFixture(t, "genericx86-64-ext")
	id := itoa(headless(t, owner, "owners-build"))
	u := env.BuilderURL
	type who struct {
		name, token string
	}
	anonymous, bogus, another, operator, theOwner := who{"anonymous", ""}, who{"bogus token", "bogus-0123456789"},
		who{"another user", other.token}, who{"operator token", harness.AdminToken}, who{"owner", owner.token}
	tests := []struct {
		method, path string
		want         map[who]int
	}{
		// Another user sees what the API lets them access: open-balena-api
		// gives every user every fleet (default-user role, unfiltered
		// application.all), so they see the build as they could push to
		// its fleet. A token the API denies the fleet gets 404: the ingest
		// unit tests (TestBuildsAreShownToWhoCanAccessTheirFleet) hold that.
		{"GET", "/v1/builds", map[who]int{anonymous: 401, bogus: 401, another: 200, operator: 401, theOwner: 200}},
		{"GET", "/v1/builds/" + id, map[who]int{anonymous: 401, bogus: 401, another: 200, operator: 401, theOwner: 200}},
		{"GET", "/v1/builds/" + id + "/logs", map[who]int{anonymous: 401, bogus: 401, another: 200, operator: 401, theOwner: 200}},
		{"POST", "/v1/builds/" + id + ":cancel", map[who]int{anonymous: 401, bogus: 401, operator: 401}},
		// Operator routes are not on the public port at all.
		{"GET", "/v1/hosts", map[who]int{anonymous: 404, bogus: 404, another: 404, operator: 404, theOwner: 404}},
		{"POST", "/v1/hosts/amd64:drain", map[who]int{anonymous: 404, operator: 404, theOwner: 404}},
		{"POST", "/v1/hosts/amd64:resume", map[who]int{anonymous: 404, operator: 404}},
		{"GET", "/metrics", map[who]int{anonymous: 404, operator: 404}},
	}
	for _, tt := range tests {
		for _, c := range []who{anonymous, bogus, another, operator, theOwner} {
			want, ok := tt.want[c]
			if !ok {
				continue
			}
			t.Run(tt.method+" "+tt.path+" as "+c.name, func(t *testing.T) {
				code, body := status(t, tt.method, u+tt.path, c.token)
				if code != want {
					t.Fatalf("%d, want %d: %.300s", code, want, body)
				}
				if code == 401 && !strings.Contains(body, `"message"`) {
					t.Errorf("401 without a JSON error: %q", body)
				}
				shows := strings.Contains(body, `"buildId":"`+id+`"`) || strings.Contains(body, "Starting build for "+owner.fleet.AppName)
				if code != 200 && shows {
					t.Errorf("%s sees the owner's build: %.300s", c.name, body)
				}
				if code == 200 && (tt.path != "/v1/builds" || c == theOwner) && !shows {
					t.Errorf("%s does not see the build: %.300s", c.name, body)
				}
			})
		}
	}
	if r, _ := env.API.Release(mustInt(t, id)); r.Status != "running" {
		t.Fatalf("after everyone else tried, the release is %q, want running", r.Status)
	}
	// The owner cancels; the log says who did.
	if code, body := status(t, "POST", u+"/v1/builds/"+id+":cancel", owner.token); code != 200 {
		t.Fatalf("owner's cancel: %d %s", code, body)
	}
	if r := waitRelease(t, mustInt(t, id)); r.Status != "cancelled" {
		t.Errorf("release %q after the owner's cancel", r.Status)
	}
	_, body := status(t, "GET", u+"/v1/builds/"+id, owner.token)
	if !strings.Contains(body, "cancelled by user") {
		t.Errorf("the build does not say who cancelled it: %s", body)
	}
}

func TestOperatorSurfaceNeedsTheOperatorToken(t *testing.T) {
	owner := newFixture(t, "genericx86-64-ext")
	id := itoa(headless(t, owner, "seen-by-the-operator"))
	defer status(t, "POST", env.AdminURL+"/v1/builds/"+id+":cancel", harness.AdminToken)
	for _, tt := range []struct {
		method, path string
	}{{"GET", "/v1/builds"}, {"GET", "/v1/builds/" + id}, {"GET", "/v1/hosts"}, {"GET", "/metrics"}, {"POST", "/v1/hosts/nope:drain"}} {
		for _, tok := range []string{"", "bogus", owner.token} {
			if code, body := status(t, tt.method, env.AdminURL+tt.path, tok); code != 401 {
				t.Errorf("%s %s with %q: %d, want 401: %.200s", tt.method, tt.path, tok, code, body)
			}
		}
	}
	code, body := status(t, "GET", env.AdminURL+"/v1/builds", harness.AdminToken)
	if code != 200 || !strings.Contains(body, `"buildId":"`+id+`"`) || !strings.Contains(body, owner.fleet.Slug) {
		t.Errorf("operator's list: %d %.500s", code, body)
	}
	if code, body := status(t, "GET", env.AdminURL+"/v1/hosts", harness.AdminToken); code != 200 || !strings.Contains(body, `"amd64"`) {
		t.Errorf("operator's hosts: %d %.500s", code, body)
	}
	if code, _ := status(t, "POST", env.AdminURL+"/v1/builds/"+id+":cancel", harness.AdminToken); code != 200 {
		t.Errorf("operator's cancel: %d", code)
	}
	if r := waitRelease(t, mustInt(t, id)); r.Status != "cancelled" {
		t.Errorf("release %q after the operator's cancel", r.Status)
	}
}

func TestTooManyPushesOfOneUserAre429(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	before := len(env.API.Releases())
	a, b := headless(t, f, "first"), headless(t, f, "second") // OBB_MAX_BUILDS_PER_USER=2 in this suite
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}), harness.PushOptions{Headless: true})
	if res.Status != http.StatusTooManyRequests || !strings.Contains(res.Body, "OBB_MAX_BUILDS_PER_USER") {
		t.Errorf("third push: %d %q, want 429 naming the limit", res.Status, res.Body)
	}
	if n := len(env.API.Releases()); n != before+2 {
		t.Errorf("%d releases created, want 2", n-before)
	}
	// Another user is not held back by this one.
	g := newFixture(t, "genericx86-64-ext")
	if res := push(t, g, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}), harness.PushOptions{}); res.IsError {
		t.Errorf("another user's push: %s", res.Text())
	}
	for _, id := range []int64{a, b} {
		if code, body := status(t, "POST", env.BuilderURL+"/v1/builds/"+itoa(id)+":cancel", f.token); code != 200 {
			t.Fatalf("cancel %d: %d %s", id, code, body)
		}
		waitRelease(t, id)
	}
	// The slots are given back when the builds end.
	if res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}), harness.PushOptions{}); res.IsError {
		t.Errorf("push after the others ended: %d %s %s", res.Status, res.Body, res.Text())
	}
}

var probeLine = regexp.MustCompile(`probe: (\S+) (.+): (.+)`)

// A RUN step with host networking on a Docker host of the builder's own
// machine reaches every internal port and the admin listener on loopback:
// each call it makes without the builder's credentials is refused.
func TestRunStepOnTheBuildersLoopbackGetsNothing(t *testing.T) {
	dir := project(t, nil)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(dir, "probe"), "./tests/cmd/probe")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the probe: %v\n%s", err, out)
	}
	df := fmt.Sprintf("FROM busybox\nCOPY probe /probe\nRUN /probe ingest=%s scheduler=%s executor=%s release=%s admin=%s\n",
		env.Ingest, env.Scheduler, env.Executor, env.Release, env.AdminAddr)
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(df), 0o644); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, dir, harness.PushOptions{})
	text := res.Text()
	if res.IsError {
		t.Fatalf("the probe's build failed:\n%s", text)
	}
	calls := 0
	for _, m := range probeLine.FindAllStringSubmatch(text, -1) {
		calls++
		if got := strings.TrimSpace(m[3]); got != "Unauthenticated" && got != "HTTP 401" {
			t.Errorf("%s %s answered %s", m[1], m[2], got)
		}
	}
	if calls != 21 {
		t.Errorf("%d probe results, want 21 (host networking on the build host reaches loopback?):\n%s", calls, text)
	}
	if hosts, _ := status(t, "GET", env.AdminURL+"/v1/hosts", harness.AdminToken); hosts != 200 {
		t.Errorf("hosts after the probe: %d", hosts)
	}
	_, body := status(t, "GET", env.AdminURL+"/v1/hosts", harness.AdminToken)
	if strings.Contains(body, `"draining":true`) || strings.Contains(body, "127.0.0.1:1") {
		t.Errorf("the probe changed the host pool: %s", body)
	}
}

func mustInt(t *testing.T, s string) int64 {
	t.Helper()
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// A user names another fleet's image, in compose image: and in FROM: the
// build fails (its registry token covers its own image only, and the host
// keeps no copy under the other image's name), the release ends failed.
func TestCrossFleetImagesAreRefused(t *testing.T) {
	victim := newFixture(t, "genericx86-64-ext")
	res := push(t, victim, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo victims-secret > /secret\n"}), harness.PushOptions{})
	if res.IsError {
		t.Fatalf("the victim's push: %s", res.Text())
	}
	imgs := imagesOf(t, res.ReleaseID)
	if len(imgs) != 1 || imgs[0].Location == "" {
		t.Fatalf("victim's images: %+v", imgs)
	}
	loc := imgs[0].Location
	var inspect map[string]any
	if err := env.AMD64.Engine().JSON(context.Background(), http.MethodGet, "/images/"+loc+":latest/json", nil, nil, &inspect); err == nil {
		t.Errorf("the host keeps the victim's image as %s:latest", loc)
	}

	attacker := newFixture(t, "genericx86-64-ext")
	for name, files := range map[string]map[string]string{
		"compose image:": {"docker-compose.yml": "version: '2.1'\nservices:\n  stolen:\n    image: " + loc + "\n"},
		"FROM":           {"Dockerfile": "FROM " + loc + "\nRUN cat /secret\n"},
	} {
		t.Run(name, func(t *testing.T) {
			res := push(t, attacker, project(t, files), harness.PushOptions{})
			text := res.Text()
			if !res.IsError || strings.Contains(text, "victims-secret") {
				t.Fatalf("the attacker's build did not fail:\n%s", text)
			}
			if !strings.Contains(text, "denied") && !strings.Contains(text, "unauthorized") && !strings.Contains(text, "authorization failed") {
				t.Errorf("the failure does not say access was denied:\n%s", text)
			}
			if r := waitRelease(t, res.ReleaseID); r.Status != "failed" {
				t.Errorf("the attacker's release is %q, want failed", r.Status)
			}
		})
	}
}

// A 4 GiB gzip bomb of zeros (about 4 MB on the wire) is refused after a
// small part of it, with flat memory and nothing left in the data dir.
func TestGzipBombStopsEarly(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	pr, pw := io.Pipe()
	var produced int64
	go func() {
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestCompression)
		tw := tar.NewWriter(zw)
		zeros := make([]byte, 1<<20)
		var err error
		for i := 0; err == nil && i < 4096; i++ {
			if err = tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("zeros/%04d", i), Mode: 0o644, Size: 1 << 20, Typeflag: tar.TypeReg}); err == nil {
				_, err = tw.Write(zeros)
				produced += 1 << 20
			}
		}
		if err == nil {
			err = tw.Close()
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	before := len(env.API.Releases())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := harness.PushBody(ctx, env.BuilderURL, pr, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
	pr.CloseWithError(errors.New("the test is over"))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusBadRequest || !strings.Contains(res.Body, "OBB_MAX_EXPANSION_RATIO") {
		t.Fatalf("bomb: %d %q, want 400 naming OBB_MAX_EXPANSION_RATIO", res.Status, res.Body)
	}
	if n := len(env.API.Releases()); n != before {
		t.Errorf("%d releases created", n-before)
	}
	uploadsGone(t)
	rss, err := env.BuilderPeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("the bomb produced %d MiB of tar before the builder hung up; builder peak RSS so far %d MiB", produced>>20, rss>>20)
	if rss > 150<<20 {
		t.Errorf("builder peak RSS %d MiB", rss>>20)
	}
}

// An upload that stops sending is cut off with 408 (OBB_UPLOAD_MIN_RATE=1
// over OBB_UPLOAD_RATE_WINDOW=10s in this suite), and leaves nothing.
func TestSilentUploadIsCutOff(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte{0x1f, 0x8b, 0x08, 0x00}) // a gzip header, then nothing
	before := len(env.API.Releases())
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := harness.PushBody(ctx, env.BuilderURL, pr, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != http.StatusRequestTimeout || !strings.Contains(res.Body, "OBB_UPLOAD_MIN_RATE") {
		t.Fatalf("silent upload: %d %q, want 408 naming OBB_UPLOAD_MIN_RATE", res.Status, res.Body)
	}
	if n := len(env.API.Releases()); n != before {
		t.Errorf("%d releases created", n-before)
	}
	uploadsGone(t)
}

// uploadsGone waits (a little: ingest removes an upload once its stream
// has ended, which may be just after the answer) for the data dir to hold
// no upload.
func uploadsGone(t *testing.T) {
	t.Helper()
	var entries []os.DirEntry
	var err error
	for range 100 {
		if entries, err = os.ReadDir(env.DataDir + "/builds"); err == nil && len(entries) == 0 {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Errorf("left in the data dir: %v %v", entries, err)
}

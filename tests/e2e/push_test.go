package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// archProject prints the machine in a RUN step. Each fixture gets its own
// (the fleet in the step), so no test sees another one's layer cache.
func archProject(f fixture) string {
	return "FROM busybox\nRUN echo \"machine: $(uname -m)\" # " + f.fleet.Slug + "\nRUN echo built > /built.txt\n"
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

func TestPushAmd64BuildsPushesAndRecordsRelease(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": archProject(f)}), harness.PushOptions{})
	text := res.Text()
	if res.Status != 200 || res.IsError {
		t.Fatalf("status %d, isError %v:\n%s%s", res.Status, res.IsError, res.Body, text)
	}
	if !res.FirstIsBuildLogID || res.ReleaseID == 0 {
		t.Fatalf("first element is not buildLogId with the release id: %+v", res.Messages[:1])
	}
	for _, want := range []string{
		"[Info] Starting build for " + f.fleet.AppName,
		"[Info] Building on amd64",
		"[main] Step 1/3 : FROM busybox",
		"machine: x86_64",
		"[Info] Uploading images",
		"[Success] Successfully uploaded images",
		"[Success] Release successfully created!",
		fmt.Sprintf("(id: %d)", res.ReleaseID),
		"Service", "Image Size", "Build Time",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q:\n%s", want, text)
		}
	}

	rel, ok := env.API.Release(res.ReleaseID)
	if !ok {
		t.Fatalf("release %d not in the API", res.ReleaseID)
	}
	if rel.Status != "success" || rel.Source != "cloud" || !rel.IsFinal || rel.EndTimestamp == nil {
		t.Errorf("release = status %q source %q final %v end %v", rel.Status, rel.Source, rel.IsFinal, rel.EndTimestamp)
	}
	if target, _ := env.API.FleetTarget(f.fleet.ID); target != rel.ID {
		t.Errorf("fleet target = %d, want the new release %d", target, rel.ID)
	}
	var comp map[string]any
	if err := json.Unmarshal(rel.Composition, &comp); err != nil || comp["services"].(map[string]any)["main"] == nil {
		t.Errorf("composition has no main service: %s", rel.Composition)
	}
	imgs := imagesOf(t, rel.ID)
	if len(imgs) != 1 {
		t.Fatalf("release has %d images, want 1", len(imgs))
	}
	img := imgs[0]
	if img.Status != "success" || img.PushTimestamp == nil || !digestRE.MatchString(img.ContentHash) ||
		img.ImageSize == "" || img.ImageSize == "0" || img.ProjectType != "Standard Dockerfile" ||
		!strings.Contains(img.Dockerfile, "RUN echo built") || !strings.Contains(img.BuildLog, "machine: x86_64") {
		t.Errorf("image = %+v", img)
	}
	if !strings.HasPrefix(img.Location, env.Registry.Addr()+"/v2/") {
		t.Errorf("image location %q is not in the registry %s", img.Location, env.Registry.Addr())
	}
	assertPullableByDigest(t, img.Location, img.ContentHash)
}

// assertPullableByDigest fetches the manifest from the registry with a
// registry token, as a device would.
func assertPullableByDigest(t *testing.T, location, digest string) {
	t.Helper()
	repo := strings.TrimPrefix(location, env.Registry.Addr()+"/")
	tok := registryToken(t, repo, "pull")

	req, _ := http.NewRequest(http.MethodGet, env.Registry.URL()+"/v2/"+repo+"/manifests/"+digest, nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Docker-Content-Digest") != digest {
		t.Errorf("GET manifest by digest: %d, digest %q, want 200 and %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), digest)
	}
}

func TestPushAarch64BuildsOnTheArm64Host(t *testing.T) {
	f := newFixture(t, "raspberrypi4-64")
	res := push(t, f, project(t, map[string]string{"Dockerfile": archProject(f)}), harness.PushOptions{})
	text := res.Text()
	if res.IsError || !strings.Contains(text, "[Info] Building on arm64") || !strings.Contains(text, "machine: aarch64") || !strings.Contains(text, "DONE") {
		t.Fatalf("aarch64 fleet not built natively on arm64:\n%s", text)
	}
	if strings.Contains(text, "emulat") {
		t.Errorf("a native build mentions emulation:\n%s", text)
	}
	if r := waitRelease(t, res.ReleaseID); r.Status != "success" {
		t.Errorf("release status %q", r.Status)
	}
}

func TestPushEmulatedGoesToTheEmulatingHost(t *testing.T) {
	f := newFixture(t, "raspberrypi4-64")
	dockerfile := strings.Replace(archProject(f), "FROM busybox", "FROM "+harness.ArmBase, 1)
	res := push(t, f, project(t, map[string]string{"Dockerfile": dockerfile}), harness.PushOptions{Emulated: true})
	text := res.Text()
	if res.IsError || !strings.Contains(text, "[Info] Building on amd64") ||
		!strings.Contains(text, "Emulated build requested: building aarch64 on amd64") || !strings.Contains(text, "machine: aarch64") {
		t.Fatalf("emulated aarch64 build not on amd64 under QEMU:\n%s", text)
	}
}

func TestFailingRunFailsImageAndRelease(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo about to fail && exit 3\n"}), harness.PushOptions{})
	text := res.Text()
	if !res.IsError {
		t.Fatalf("a failing RUN did not mark the stream isError:\n%s", text)
	}
	if !strings.Contains(text, "[Error] Some services failed to build:") || !strings.Contains(text, "main:") {
		t.Errorf("no clear failure summary:\n%s", text)
	}
	rel := waitRelease(t, res.ReleaseID)
	if rel.Status != "failed" || rel.EndTimestamp == nil {
		t.Errorf("release status %q end %v, want failed", rel.Status, rel.EndTimestamp)
	}
	imgs := imagesOf(t, rel.ID)
	if len(imgs) != 1 || imgs[0].Status != "failed" || !strings.Contains(imgs[0].ErrorMessage, "3") {
		t.Errorf("image = %+v, want failed with the exit code in error_message", imgs)
	}
	if target, ok := env.API.FleetTarget(f.fleet.ID); ok && target == rel.ID {
		t.Error("a failed release became the fleet target")
	}
}

func TestDraftIsNotFinalNorTarget(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}), harness.PushOptions{Draft: true})
	if res.IsError {
		t.Fatalf("draft push failed:\n%s", res.Text())
	}
	rel := waitRelease(t, res.ReleaseID)
	if rel.Status != "success" || rel.IsFinal {
		t.Errorf("draft release = status %q final %v, want success and not final", rel.Status, rel.IsFinal)
	}
	if target, ok := env.API.FleetTarget(f.fleet.ID); ok && target == rel.ID {
		t.Error("a draft release became the fleet target")
	}
}

func TestHeadlessAnswersAtOnceAndBuildGoesOn(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN sleep 1\n"}), harness.PushOptions{Headless: true})
	var reply struct {
		Started   bool  `json:"started"`
		ReleaseID int64 `json:"releaseId"`
	}
	if err := json.Unmarshal([]byte(res.Body), &reply); err != nil || res.Status != 200 || !reply.Started || reply.ReleaseID == 0 {
		t.Fatalf("headless reply %d %q (%v)", res.Status, res.Body, err)
	}
	if r, _ := env.API.Release(reply.ReleaseID); r.Status != "running" {
		t.Errorf("release already %q when the headless reply came", r.Status)
	}
	if r := waitRelease(t, reply.ReleaseID); r.Status != "success" {
		t.Errorf("detached build ended %q", r.Status)
	}
	// Its log can still be read, by its user with their token.
	resp, err := harness.Call(http.MethodGet, fmt.Sprintf("%s/v1/builds/%d/logs", env.BuilderURL, reply.ReleaseID), f.token, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var sb strings.Builder
	buf := make([]byte, 64<<10)
	for {
		n, err := resp.Body.Read(buf)
		sb.Write(buf[:n])
		if err != nil {
			break
		}
	}
	if !strings.Contains(sb.String(), "Step 2/2 : RUN sleep 1") {
		t.Errorf("GET /v1/builds/%d/logs lacks the build steps:\n%.2000s", reply.ReleaseID, sb.String())
	}
}

func TestEarlyErrorsAreHTTPStatuses(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	dir := project(t, map[string]string{"Dockerfile": "FROM busybox\n"})
	before := len(env.API.Releases())
	tests := []struct {
		name   string
		o      harness.PushOptions
		body   func() *strings.Reader
		status int
	}{
		{"bad token", harness.PushOptions{Slug: f.fleet.Slug, Token: "not-a-real-token-0123456789"}, nil, 401},
		{"no token", harness.PushOptions{Slug: f.fleet.Slug}, nil, 401},
		{"unknown fleet", harness.PushOptions{Slug: "nobody/nothing", Token: f.token}, nil, 404},
		{"not gzip", harness.PushOptions{Slug: f.fleet.Slug, Token: f.token}, func() *strings.Reader { return strings.NewReader("this is not a tar") }, 400},
		{"gzip of garbage", harness.PushOptions{Slug: f.fleet.Slug, Token: f.token}, func() *strings.Reader { return strings.NewReader("\x1f\x8b\x08\x00garbage") }, 400},
		{"no Dockerfile", harness.PushOptions{Slug: f.fleet.Slug, Token: f.token}, nil, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			var res *harness.PushResult
			var err error
			switch {
			case tt.body != nil:
				res, err = harness.PushBody(ctx, env.BuilderURL, tt.body(), tt.o)
			case tt.name == "no Dockerfile":
				res, err = harness.Push(ctx, env.BuilderURL, project(t, map[string]string{"README.md": "hi"}), tt.o)
			default:
				res, err = harness.Push(ctx, env.BuilderURL, dir, tt.o)
			}
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != tt.status {
				t.Errorf("status %d (%s), want %d", res.Status, res.Body, tt.status)
			}
			if strings.Contains(res.Body, f.token) {
				t.Error("the answer contains the user's token")
			}
		})
	}
	if after := len(env.API.Releases()); after != before {
		t.Errorf("%d releases were created by refused pushes", after-before)
	}
	entries, err := os.ReadDir(env.DataDir + "/builds")
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("uploads left behind in %s/builds: %d entries", env.DataDir, len(entries))
	}
}

func TestSecretsStayOutOfLogsAndImages(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	res := push(t, f, project(t, map[string]string{"Dockerfile": "FROM busybox\nCOPY . /src\nRUN ls -laR /src && env\n"}), harness.PushOptions{})
	if res.IsError {
		t.Fatalf("push failed:\n%s", res.Text())
	}
	for name, text := range map[string]string{"response": res.Text(), "builder log": env.BuilderLog()} {
		for secret, what := range map[string]string{f.token: "user token", harness.BuilderToken: "builder token"} {
			if strings.Contains(text, secret) {
				t.Errorf("the %s contains the %s", name, what)
			}
		}
	}
	for _, img := range imagesOf(t, res.ReleaseID) {
		if strings.Contains(img.BuildLog, f.token) {
			t.Error("the image build log contains the user's token")
		}
	}
}

func TestDrainedNativeHostFallsBackToEmulation(t *testing.T) {
	hostAction := func(name, action string) string {
		resp, err := env.Admin(http.MethodPost, "/v1/hosts/"+name+":"+action, strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out struct {
			Host struct {
				Name     string `json:"name"`
				Draining bool   `json:"draining"`
			} `json:"host"`
		}
		json.NewDecoder(resp.Body).Decode(&out)
		if resp.StatusCode != 200 || out.Host.Name != name {
			t.Fatalf("POST /v1/hosts/%s:%s = %d %+v", name, action, resp.StatusCode, out)
		}
		return fmt.Sprint(out.Host.Draining)
	}
	if got := hostAction("arm64", "drain"); got != "true" {
		t.Fatalf("drained host reports draining=%s", got)
	}
	defer hostAction("arm64", "resume")

	f := newFixture(t, "raspberrypi4-64")
	dockerfile := strings.Replace(archProject(f), "FROM busybox", "FROM "+harness.ArmBase, 1)
	res := push(t, f, project(t, map[string]string{"Dockerfile": dockerfile}), harness.PushOptions{})
	text := res.Text()
	if res.IsError || !strings.Contains(text, "[Info] Building on amd64") ||
		!strings.Contains(text, "[Warn] No native aarch64 host is available: building on amd64 under QEMU emulation") ||
		!strings.Contains(text, "machine: aarch64") {
		t.Fatalf("with arm64 drained, the aarch64 build did not fall back to emulation on amd64:\n%s", text)
	}

	resp, err := env.Admin(http.MethodPost, "/v1/hosts/nope:drain", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("draining an unknown host: %d, want 404", resp.StatusCode)
	}
}

// A wrong token is answered before the upload is read: a body that never
// ends must not keep the answer back.
func TestTokenCheckedBeforeTheBodyIsRead(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	for _, o := range []harness.PushOptions{
		{Slug: f.fleet.Slug, Token: "wrong-token-0123456789abcdef"},
		{Slug: "nobody/nothing", Token: f.token},
	} {
		pr, pw := io.Pipe()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		stop := context.AfterFunc(ctx, func() { pw.CloseWithError(ctx.Err()) }) // unblock the client's body writer
		res, err := harness.PushBody(ctx, env.BuilderURL, pr, o)
		stop()
		cancel()
		pw.Close()
		if err != nil {
			t.Fatalf("%+v: %v (the builder waited for the body)", o.Slug, err)
		}
		if res.Status != 401 && res.Status != 404 {
			t.Errorf("%s: status %d", o.Slug, res.Status)
		}
	}
}

func TestMetricsForOperators(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	if res := push(t, f, project(t, map[string]string{"Dockerfile": archProject(f)}), harness.PushOptions{}); res.IsError {
		t.Fatalf("push failed:\n%s", res.Text())
	}
	// On the admin address, with the operator token (Prometheus:
	// authorization.credentials_file).
	resp, err := env.Admin(http.MethodGet, "/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GET /metrics on the admin address: %d", resp.StatusCode)
	}
	for _, want := range []string{
		`obb_ingest_builds_total{state="succeeded"}`,
		`obb_ingest_build_duration_seconds_bucket{state="succeeded"`,
		`obb_ingest_upload_bytes_total`,
		`obb_scheduler_jobs_total{state="succeeded"}`,
		`obb_scheduler_host_slots{draining="false",healthy="true",host="amd64"} 2`,
		`obb_scheduler_host_running{`,
		`go_goroutines`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("GET /metrics lacks %s", want)
		}
	}
	if t.Failed() {
		t.Logf("GET /metrics:\n%.4000s", body)
	}
}

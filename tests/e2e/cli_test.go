package e2e

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// cli returns a logged-in balena-cli for a fixture's user.
func cli(t *testing.T, f fixture) *harness.CLI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := env.NewCLI(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if f.token != "" {
		res, err := c.Run(ctx, "login", "--token", f.token)
		if err != nil || res.Code != 0 {
			t.Fatalf("balena login: %v %+v", err, res)
		}
	}
	return c
}

func balenaPush(t *testing.T, c *harness.CLI, f fixture, dir string, flags ...string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := c.Run(ctx, append([]string{"push", f.fleet.AppName, "--source", dir}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// plain collapses a CLI's output as balena-cli's own tests compare it.
func plain(s string) string {
	var lines []string
	for _, l := range strings.Split(harness.StripANSI(strings.ReplaceAll(s, "\r", "\n")), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func TestCLIPlainPush(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	c := cli(t, f)
	res := balenaPush(t, c, f, project(t, map[string]string{"Dockerfile": archProject(f)}))
	out := plain(res.Stdout)
	if res.Code != 0 {
		t.Fatalf("balena push exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, out, res.Stderr)
	}
	t.Log(out)
}

func releaseCount() int { return len(env.API.Releases()) }

func TestCLIFlags(t *testing.T) {
	t.Run("plain push updates the fleet target", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": archProject(f)}))
		out := plain(res.Stdout)
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s\n%s", res.Code, out, res.Stderr)
		}
		id := releaseIDFrom(t, out)
		if r := waitRelease(t, id); r.Status != "success" || !r.IsFinal {
			t.Errorf("release %+v", r)
		}
		if target, _ := env.API.FleetTarget(f.fleet.ID); target != id {
			t.Errorf("fleet target %d, want %d", target, id)
		}
		imgs := imagesOf(t, id)
		if len(imgs) != 1 || imgs[0].Status != "success" {
			t.Fatalf("images %+v", imgs)
		}
		assertPullableByDigest(t, imgs[0].Location, imgs[0].ContentHash)
		for _, want := range []string{"[Info] Starting build for " + f.fleet.AppName + ", user", "[Info] Building on amd64", "[Success] Release successfully created!", "│ Service │ Image Size │ Build Time │"} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if strings.Contains(res.Stdout, "\x1b[36m[Info]") == false || strings.Contains(res.Stdout, "\x1b[32m[Success]") == false {
			t.Error("output lacks balenaCloud's colours")
		}
	})

	t.Run("draft is neither final nor the target", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}), "--draft")
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s", res.Code, plain(res.Stdout))
		}
		r := waitRelease(t, releaseIDFrom(t, plain(res.Stdout)))
		if r.Status != "success" || r.IsFinal {
			t.Errorf("draft release: status %q final %v", r.Status, r.IsFinal)
		}
		if target, ok := env.API.FleetTarget(f.fleet.ID); ok && target == r.ID {
			t.Error("the draft became the fleet target")
		}
	})

	t.Run("nocache runs a cached step again", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		c := cli(t, f)
		dir := project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo cache-me-" + f.fleet.AppName + "\n"})
		for i, tc := range []struct {
			flags     []string
			wantCache bool
		}{{nil, false}, {nil, true}, {[]string{"--nocache"}, false}} {
			res := balenaPush(t, c, f, dir, tc.flags...)
			out := plain(res.Stdout)
			if res.Code != 0 {
				t.Fatalf("push %d: exit %d\n%s", i, res.Code, out)
			}
			if got := strings.Contains(out, "Using cache"); got != tc.wantCache {
				t.Errorf("push %d %v: Using cache = %v, want %v\n%s", i, tc.flags, got, tc.wantCache, out)
			}
		}
	})

	t.Run("emulated goes to the emulating host", func(t *testing.T) {
		f := newFixture(t, "raspberrypi4-64")
		dockerfile := strings.Replace(archProject(f), "FROM busybox", "FROM "+harness.ArmBase, 1)
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": dockerfile}), "--emulated")
		out := plain(res.Stdout)
		if res.Code != 0 || !strings.Contains(out, "[Info] Building on amd64") ||
			!strings.Contains(out, "Emulated build requested: building aarch64 on amd64 under QEMU") || !strings.Contains(out, "machine: aarch64") {
			t.Fatalf("exit %d\n%s", res.Code, out)
		}
	})

	t.Run("dockerfile picks an alternative file", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{
			"Dockerfile":            "FROM busybox\nRUN exit 9\n",
			"deploy/Dockerfile.alt": "FROM busybox\nRUN echo from-the-alternative\n",
		}), "--dockerfile", "deploy/Dockerfile.alt")
		out := plain(res.Stdout)
		if res.Code != 0 || !strings.Contains(out, "from-the-alternative") {
			t.Fatalf("exit %d\n%s", res.Code, out)
		}
		imgs := imagesOf(t, releaseIDFrom(t, out))
		if len(imgs) != 1 || !strings.Contains(imgs[0].Dockerfile, "from-the-alternative") {
			t.Errorf("image dockerfile %+v", imgs)
		}
	})

	t.Run("release tags and note are set by the CLI afterwards", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}),
			"--release-tag", "purpose", "e2e", "owner", "obb", "--note", "pushed by the e2e suite")
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s\n%s", res.Code, plain(res.Stdout), res.Stderr)
		}
		id := releaseIDFrom(t, plain(res.Stdout))
		tags := map[string]string{}
		for _, tag := range env.API.ReleaseTags() {
			if tag.Release == id {
				tags[tag.TagKey] = tag.Value
			}
		}
		if tags["purpose"] != "e2e" || tags["owner"] != "obb" {
			t.Errorf("release tags %v", tags)
		}
		if r, _ := env.API.Release(id); r.Note != "pushed by the e2e suite" {
			t.Errorf("release note %q", r.Note)
		}
	})

	t.Run("failing build", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		res := balenaPush(t, cli(t, f), f, project(t, map[string]string{"Dockerfile": "FROM busybox\nRUN echo failing && exit 7\n"}))
		out := plain(res.Stdout + "\n" + res.Stderr)
		if res.Code != 1 || !strings.Contains(out, "Remote build failed") || !strings.Contains(out, "[Error] Build failed: main:") {
			t.Fatalf("exit %d\n%s", res.Code, out)
		}
		id := releaseIDFrom(t, out)
		if r := waitRelease(t, id); r.Status != "failed" {
			t.Errorf("release status %q", r.Status)
		}
		imgs := imagesOf(t, id)
		if len(imgs) != 1 || imgs[0].Status != "failed" || !strings.Contains(imgs[0].ErrorMessage, "7") {
			t.Errorf("image %+v", imgs)
		}
	})

	t.Run("not logged in", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		before := releaseCount()
		res := balenaPush(t, cli(t, fixture{fleet: f.fleet}), f, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}))
		if out := plain(res.Stdout + res.Stderr); res.Code != 1 || !strings.Contains(out, "Login required") {
			t.Errorf("exit %d\n%s", res.Code, out)
		}
		if releaseCount() != before {
			t.Error("a release was created")
		}
	})

	t.Run("unknown fleet", func(t *testing.T) {
		f := newFixture(t, "genericx86-64-ext")
		before := releaseCount()
		other := f
		other.fleet.AppName = "nosuchfleet"
		res := balenaPush(t, cli(t, f), other, project(t, map[string]string{"Dockerfile": "FROM busybox\n"}))
		if out := plain(res.Stdout + res.Stderr); res.Code != 1 || !strings.Contains(strings.ToLower(out), "not found") {
			t.Errorf("exit %d\n%s", res.Code, out)
		}
		if releaseCount() != before {
			t.Error("a release was created")
		}
	})
}

var releaseLine = regexp.MustCompile(`\(id: (\d+)\)`)

// releaseIDFrom finds the release id the builder printed.
func releaseIDFrom(t *testing.T, out string) int64 {
	t.Helper()
	m := releaseLine.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no release id in the output:\n%s", out)
	}
	id, _ := strconv.ParseInt(m[1], 10, 64)
	return id
}

func TestCLIOverHTTPSWithAPrivateCA(t *testing.T) {
	front, err := env.StartFront("obb-e2e.test")
	if err != nil {
		t.Fatal(err)
	}
	defer front.Stop()
	f := newFixture(t, "genericx86-64-ext")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	c, err := env.NewCLI(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	front.HTTPSEnv(c)
	if res, err := c.Run(ctx, "login", "--token", f.token); err != nil || res.Code != 0 {
		t.Fatalf("login over https: %v %+v", err, res)
	}
	res := balenaPush(t, c, f, project(t, map[string]string{"Dockerfile": archProject(f)}))
	out := plain(res.Stdout)
	if res.Code != 0 || !strings.Contains(out, "machine: x86_64") {
		t.Fatalf("push over https: exit %d\n%s\n%s", res.Code, out, res.Stderr)
	}
	if r := waitRelease(t, releaseIDFrom(t, out)); r.Status != "success" {
		t.Errorf("release %q", r.Status)
	}
}

package sdktest

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// newSpec returns a spec for env with a fresh job id and image ref.
func newSpec(t *testing.T, env Env, buildArgs map[string]string) *pluginv1.BuildSpec {
	ref := env.ImageRef(t)
	repo := ref
	if i := strings.IndexByte(ref, '/'); i >= 0 {
		repo = ref[i+1:] // the registry host is not part of the token scope
	}
	return &pluginv1.BuildSpec{
		JobId:         fmt.Sprintf("contract-%d", time.Now().UnixNano()),
		Host:          env.Host,
		Platform:      env.Platform,
		Dockerfile:    "Dockerfile",
		BuildArgs:     buildArgs,
		Labels:        map[string]string{"io.openbalena.builder.contract": t.Name()},
		ImageRef:      ref,
		RegistryToken: env.RegistryToken(t, repo),
	}
}

func testBuild(t *testing.T, exec sdk.Executor, env Env) {
	// The greeting is put together by the shell from a shell variable and
	// the build arg, so "hello-from-build" can only come from the RUN's
	// output, not from an echo of the step (BuildKit prints steps with their
	// build args expanded, but not the shell's own variables).
	dockerfile := fmt.Sprintf("FROM %s\nARG WHO\nRUN x=hello; echo \"$x-from-$WHO\"\n", env.BaseImage)
	spec := newSpec(t, env, map[string]string{"WHO": "build"})
	spec.Nocache = true // the RUN must run, not come from the cache
	rec := &LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err != nil {
		t.Fatalf("Build: %v\nlogs:\n%s", err, rec)
	}
	t.Logf("build logs:\n%s", rec)
	if _, ok := rec.Find("hello-from-build"); !ok {
		t.Errorf("no log line contains hello-from-build; logs:\n%s", rec)
	}
	if !digestRE.MatchString(res.GetDigest()) {
		t.Errorf("result digest %q, want sha256:<64 hex>", res.GetDigest())
	}
	if res.GetSize() <= 0 || res.GetImageId() == "" {
		t.Errorf("result %v, want an image id and a size > 0", res)
	}
	for _, l := range rec.Lines() {
		if spec.GetRegistryToken() != "" && strings.Contains(l.GetText(), spec.GetRegistryToken()) {
			t.Errorf("a log line echoes the registry token")
		}
		if l.GetError() {
			t.Errorf("error line in a successful build: %q", l.GetText())
		}
	}
	checkImage(t, env, spec, res)
}

func testBuildFails(t *testing.T, exec sdk.Executor, env Env) {
	dockerfile := fmt.Sprintf("FROM %s\nRUN exit 3\n", env.BaseImage)
	spec := newSpec(t, env, nil)
	rec := &LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err == nil {
		t.Fatalf("Build of RUN exit 3 succeeded: %v", res)
	}
	if !strings.Contains(err.Error(), "exit 3") && !strings.Contains(err.Error(), "code: 3") {
		t.Errorf("Build error %q mentions neither the command nor its exit code", err)
	}
	errLine := false
	for _, l := range rec.Lines() {
		errLine = errLine || l.GetError()
	}
	if !errLine {
		t.Errorf("no error line in the logs:\n%s", rec)
	}
}

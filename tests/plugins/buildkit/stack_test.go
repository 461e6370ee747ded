package buildkit

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"

	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/pluginstack"
	"github.com/open-balena-builder/builder/tests/stack"
)

// bkStack is the contract suite's stack for the buildkit plugin: the
// pluginstack (a dockerd, the API stand-in and the token-auth registry),
// an auth-less registry holding the base image (buildkitd has no image
// store: its bases come from a registry, offline from this one) and a
// buildkitd that reaches both over plain http.
type bkStack struct {
	*pluginstack.Stack
	Buildkitd *stack.Buildkitd
	// Base is the base image, "<plain registry>/library/busybox:latest".
	Base  string
	cache string
	plain string
}

// startStack brings the stack up; everything stops when t ends.
func startStack(t testing.TB) *bkStack {
	t.Helper()
	s := &bkStack{Stack: pluginstack.Start(t, "buildkit-test")}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cache, err := harness.Deps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	s.cache = cache
	plain, err := stack.StartRegistry(ctx, "", stack.TokenAuth{}, t.Logf)
	if err != nil {
		t.Fatalf("base image registry: %v", err)
	}
	t.Cleanup(func() { _ = plain.Stop() })
	s.plain = plain.Addr()
	s.Base = plain.Addr() + "/library/busybox:latest"
	pushImage(t, s.Dockerd.Host(), "busybox", s.Base, "")
	s.Buildkitd = s.startBuildkitd(t, "buildkitd")
	return s
}

// startBuildkitd starts a buildkitd of the stack (a fresh one each call).
func (s *bkStack) startBuildkitd(t testing.TB, name string) *stack.Buildkitd {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	bk, err := stack.StartBuildkitd(ctx, "", stack.BuildkitdOptions{
		Name: name, Binary: filepath.Join(s.cache, "buildkitd"), HTTPRegistries: []string{s.RegistryAddr, s.plain},
	}, t.Logf)
	if err != nil {
		t.Fatalf("buildkitd: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log tail:\n%s", name, bk.LogTail(40))
		}
		if err := bk.Stop(); err != nil {
			t.Errorf("stop %s: %v", name, err)
		}
	})
	return bk
}

// env is the contract suite's environment for the stack's buildkitd.
func (s *bkStack) env() sdktest.Env {
	env := s.Env(&pluginv1.HostConfig{Name: "buildkit-test", Endpoint: s.Buildkitd.Host(), Buildkit: true})
	env.BaseImage = s.Base
	env.NoImageStore = true
	return env
}

// pushImage tags src as dst on the dockerd and pushes it (with a registry
// token, or none).
func pushImage(t testing.TB, dockerHost, src, dst, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := client.NewClientWithOpts(client.WithHost(dockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.ImageTag(ctx, src, dst); err != nil {
		t.Fatalf("tag %s %s: %v", src, dst, err)
	}
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{RegistryToken: token})
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.ImagePush(ctx, dst, image.PushOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("push %s: %v", dst, err)
	}
	defer body.Close()
	if err := sdktest.ProgressResult(body); err != nil {
		t.Fatalf("push %s: %v", dst, err)
	}
}

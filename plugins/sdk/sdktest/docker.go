package sdktest

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/client"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// dockerClient connects to env.DockerHost for the suite's own checks.
func dockerClient(t *testing.T, env Env) *client.Client {
	t.Helper()
	c, err := client.NewClientWithOpts(client.WithHost(env.DockerHost), client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatalf("docker client for %s: %v", env.DockerHost, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// checkImage verifies that the host kept no tag of the job's image (another
// tenant of the host could build on it), that the registry has the pushed
// digest, and that the image pulled by it has the spec's labels and is what
// the result describes. It returns the image's reference by digest.
func checkImage(t *testing.T, env Env, spec *pluginv1.BuildSpec, res *pluginv1.Result) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := dockerClient(t, env)
	checkNoTag(t, env, spec.GetImageRef()+":latest")
	byDigest := spec.GetImageRef() + "@" + res.GetDigest()
	checkNoTag(t, env, byDigest)
	checkPull(t, env, spec, byDigest)
	img, err := c.ImageInspect(ctx, byDigest)
	if err != nil {
		t.Fatalf("inspect %s: %v", byDigest, err)
	}
	if img.ID != res.GetImageId() {
		t.Errorf("result image id %q, daemon has %q", res.GetImageId(), img.ID)
	}
	if !env.NoImageStore && img.Size != res.GetSize() {
		t.Errorf("result size %d, daemon's image size %d", res.GetSize(), img.Size)
	}
	for k, v := range spec.GetLabels() {
		if img.Config == nil || img.Config.Labels[k] != v {
			t.Errorf("image lacks label %s=%s", k, v)
		}
	}
	if !slices.Contains(img.RepoDigests, byDigest) {
		t.Errorf("image repo digests %v, want %s (pushed)", img.RepoDigests, byDigest)
	}
	return byDigest
}

// checkNoTag fails when the host still has ref after the job.
func checkNoTag(t *testing.T, env Env, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := dockerClient(t, env).ImageInspect(ctx, ref); !cerrdefs.IsNotFound(err) {
		t.Errorf("the host still has %s after the job (inspect: %v): another tenant could use it", ref, err)
	}
}

// containersWith returns the containers (any state) whose command
// contains marker.
func containersWith(t *testing.T, env Env, marker string) []container.Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	all, err := dockerClient(t, env).ContainerList(ctx, container.ListOptions{All: true})
	if err != nil {
		t.Fatalf("list containers: %v", err)
	}
	var out []container.Summary
	for _, c := range all {
		if strings.Contains(c.Command, marker) {
			out = append(out, c)
		}
	}
	return out
}

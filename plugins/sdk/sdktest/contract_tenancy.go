package sdktest

import (
	"bytes"
	"context"
	"fmt"
	"testing"

	"github.com/docker/docker/api/types/image"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// testTenancy plays two tenants of one host. Job A builds and pushes; its
// tag is gone afterwards, while the layer cache still serves an identical
// build. Then A's image is put back on the host under its name (as if a
// job had left it there) and other jobs name it: as pull_image and as
// FROM. Their registry tokens cover only their own repositories, so both
// fail: the plugin neither uses the host's copy nor pulls it.
func testTenancy(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 4*buildTimeout)
	defer cancel()
	c := dockerClient(t, env)
	dockerfile := fmt.Sprintf("FROM %s\nRUN echo one > /one\nRUN echo two > /two\nRUN s=tenant; echo \"$s-a\"\n", env.BaseImage)

	a := newSpec(t, env, nil)
	rec := &LogRecorder{}
	resA, err := exec.Build(ctx, a, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err != nil {
		t.Fatalf("job A: %v\nlogs:\n%s", err, rec)
	}
	aRef := checkImage(t, env, a, resA) // tag gone, image in the registry

	// The layer cache is still shared: an identical build hits it.
	b := newSpec(t, env, nil)
	rec = &LogRecorder{}
	if _, err := exec.Build(ctx, b, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink()); err != nil {
		t.Fatalf("job B: %v\nlogs:\n%s", err, rec)
	}
	if !hasLine(rec, "Using cache") && !hasLine(rec, "CACHED") {
		t.Errorf("job B, identical to A, got no cache hit; logs:\n%s", rec)
	}
	if hasLine(rec, "tenant-a") { // the last step too: its image stays, by id
		t.Errorf("job B ran A's last step again: the built image went with its tag; logs:\n%s", rec)
	}
	checkNoTag(t, env, b.GetImageRef()+":latest")

	// A's image on the host under its name.
	if err := c.ImageTag(ctx, aRef, a.GetImageRef()+":latest"); err != nil {
		t.Fatalf("tag %s: %v", aRef, err)
	}
	defer untagRef(t, env, a.GetImageRef()+":latest")

	t.Run("pull_image of another repository", func(t *testing.T) {
		spec := newSpec(t, env, nil)
		spec.PullImage = a.GetImageRef()
		spec.Dockerfile, spec.Labels = "", nil
		rec := &LogRecorder{}
		res, err := exec.Build(ctx, spec, bytes.NewReader(nil), rec.Sink())
		if err == nil {
			t.Fatalf("pull_image of another job's repository succeeded (%v); logs:\n%s", res, rec)
		}
		if hasLine(rec, "using the copy on the host") {
			t.Errorf("the host's copy was used; logs:\n%s", rec)
		}
		if l, ok := rec.Find("could not pull " + a.GetImageRef()); !ok || !l.GetError() {
			t.Errorf("no error line naming the image; logs:\n%s", rec)
		}
		checkNoTag(t, env, spec.GetImageRef()+":latest")
	})
	t.Run("FROM another repository", func(t *testing.T) {
		spec := newSpec(t, env, nil)
		rec := &LogRecorder{}
		df := "FROM " + a.GetImageRef() + "\nRUN s=stolen; echo \"$s-build\"\n"
		res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink())
		if err == nil || hasLine(rec, "stolen-build") {
			t.Fatalf("a build FROM another job's repository ran (%v, %v); logs:\n%s", res, err, rec)
		}
		t.Logf("refused: %v", err)
		checkNoTag(t, env, spec.GetImageRef()+":latest")
	})
}

// untagRef removes ref from the host, whatever happened.
func untagRef(t *testing.T, env Env, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	_, _ = dockerClient(t, env).ImageRemove(ctx, ref, image.RemoveOptions{})
}

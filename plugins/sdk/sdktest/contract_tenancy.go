package sdktest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// testTenancy plays tenants of one host. Job A builds and pushes an image
// holding a secret of A's; its tag is gone afterwards, while the layer
// cache still serves an identical build. Then A's image is put back on the
// host under its name (as if a job had left it there) and other jobs try to
// take it: as pull_image, as FROM, as COPY --from, and by its image id (the
// classic builder and image inspect resolve an id prefix, of any length, to
// any image on the host), also through the ONBUILD trigger of a base image. Their registry tokens cover only their own
// repositories, so all fail, the secret shows in no log, and nothing is
// pushed to their repositories. A job of A's own repository can build FROM
// A's image (with its own token); after that, A's image named by digest
// (which BuildKit could take from its own store) is refused to others too.
// A base image a job did not pull stays on the host.
func testTenancy(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*buildTimeout)
	defer cancel()
	c := dockerClient(t, env)
	secret := "secret-" + randomHex(t, 8)
	// The shell puts the secret's file content together: it shows in a log
	// only when a RUN prints the file.
	dockerfile := fmt.Sprintf("FROM %s\nRUN echo one > /one\nRUN echo two > /two\nRUN s=tenant; echo \"$s-a\"; echo \"$s-%s\" > /secret\n", env.BaseImage, secret)
	leaked := "tenant-" + secret

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
	cacheHit := "Using cache" // the classic builder's
	if env.Host.GetBuildkit() {
		cacheHit = "CACHED"
	}
	if !hasLine(rec, cacheHit) {
		t.Errorf("job B, identical to A, got no cache hit (%q); logs:\n%s", cacheHit, rec)
	}
	if hasLine(rec, "tenant-a") { // the last step too: the cache keeps it
		t.Errorf("job B ran A's last step again; logs:\n%s", rec)
	}
	checkNoTag(t, env, b.GetImageRef()+":latest")

	// A's image on the host under its name (a host without an image store
	// has no names: A's image is in the registry and, by its layers and
	// manifest, in the host's cache).
	if !env.NoImageStore {
		if err := c.ImageTag(ctx, aRef, a.GetImageRef()+":latest"); err != nil {
			t.Fatalf("tag %s: %v", aRef, err)
		}
		defer untagRef(t, env, a.GetImageRef()+":latest")
	}
	ids := idNames(t, env, resA.GetImageId())

	// refused runs a job that must fail: no line holds A's secret and
	// nothing reaches the job's repository.
	refused := func(t *testing.T, spec *pluginv1.BuildSpec, files map[string]string) *LogRecorder {
		t.Helper()
		var buildContext []byte
		if files != nil {
			buildContext = ContextTar(t, files)
		}
		rec := &LogRecorder{}
		res, err := exec.Build(ctx, spec, bytes.NewReader(buildContext), rec.Sink())
		if err == nil {
			t.Errorf("the job succeeded (%v); logs:\n%s", res, rec)
		} else {
			t.Logf("refused: %v", err)
		}
		if hasLine(rec, leaked) {
			t.Errorf("a log line holds job A's secret; logs:\n%s", rec)
		}
		checkNoTag(t, env, spec.GetImageRef()+":latest")
		checkNotPushed(t, env, spec)
		return rec
	}

	t.Run("pull_image of another repository", func(t *testing.T) {
		spec := pullSpec(t, env, a.GetImageRef())
		rec := refused(t, spec, nil)
		if hasLine(rec, "using the copy on the host") {
			t.Errorf("the host's copy was used; logs:\n%s", rec)
		}
		if l, ok := rec.Find("could not pull " + a.GetImageRef()); !ok || !l.GetError() {
			t.Errorf("no error line naming the image; logs:\n%s", rec)
		}
	})
	t.Run("FROM another repository", func(t *testing.T) {
		refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": "FROM " + a.GetImageRef() + "\nRUN cat /secret\n"})
	})
	t.Run("COPY --from another repository", func(t *testing.T) {
		df := fmt.Sprintf("FROM %s\nCOPY --from=%s /secret /stolen\nRUN cat /stolen\n", env.BaseImage, a.GetImageRef())
		refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": df})
	})
	for _, id := range ids {
		t.Run("FROM an image id/"+id, func(t *testing.T) {
			refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": "FROM " + id + "\nRUN cat /secret\n"})
		})
		t.Run("COPY --from an image id/"+id, func(t *testing.T) {
			df := fmt.Sprintf("FROM %s\nCOPY --from=%s /secret /stolen\nRUN cat /stolen\n", env.BaseImage, id)
			refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": df})
		})
		t.Run("pull_image of an image id/"+id, func(t *testing.T) {
			rec := refused(t, pullSpec(t, env, id), nil)
			if hasLine(rec, "using the copy on the host") {
				t.Errorf("an image found by id was used; logs:\n%s", rec)
			}
		})
	}
	t.Run("a base image the job did not pull stays", func(t *testing.T) {
		df := fmt.Sprintf("FROM %s AS first\nRUN true\nFROM %s\nRUN cat /secret\n", env.BaseImage, a.GetImageRef())
		refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": df})
		ictx, icancel := context.WithTimeout(context.Background(), buildTimeout)
		defer icancel()
		if _, err := c.ImageInspect(ictx, env.BaseImage); err != nil {
			t.Errorf("the host's %s is gone after a job that did not pull it: %v", env.BaseImage, err)
		}
	})
	t.Run("ONBUILD COPY --from an image id", func(t *testing.T) {
		// An image of the tenant's, on the host under a public name (as if
		// pulled from Docker Hub), whose trigger takes from A's image by id.
		spec := newSpec(t, env, nil)
		rec := &LogRecorder{}
		df := fmt.Sprintf("FROM %s\nONBUILD COPY --from=%s /secret /stolen\n", env.BaseImage, ids[1])
		res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink())
		if err != nil {
			t.Fatalf("build the image with the trigger: %v\nlogs:\n%s", err, rec)
		}
		byDigest := spec.GetImageRef() + "@" + res.GetDigest()
		checkPull(t, env, spec, byDigest)
		trigger := "onbuild/contract:" + randomHex(t, 4)
		if err := c.ImageTag(ctx, byDigest, trigger); err != nil {
			t.Fatalf("tag %s: %v", trigger, err)
		}
		defer untagRef(t, env, trigger)
		refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": "FROM " + trigger + "\nRUN cat /stolen\n"})
	})
	// Last: the job's build takes A's name on the host.
	t.Run("FROM the job's own repository", func(t *testing.T) {
		spec := newSpec(t, env, nil)
		spec.ImageRef, spec.RegistryToken = a.GetImageRef(), a.GetRegistryToken()
		rec := &LogRecorder{}
		df := "FROM " + a.GetImageRef() + "\nRUN s=own; echo \"$s-$(cat /one)\"\n"
		res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink())
		if err != nil {
			t.Fatalf("a build FROM its own repository (with its token): %v\nlogs:\n%s", err, rec)
		}
		if !hasLine(rec, "own-one") {
			t.Errorf("no line own-one; logs:\n%s", rec)
		}
		checkImage(t, env, spec, res) // the pulled base's name is gone too
	})
	// The host keeps the manifests that build pulled, by digest (BuildKit's
	// content store, the daemon's manifest store), and neither builder nor
	// a pull asks the registry again for an image named by digest: naming
	// A's image by digest, under any registry name, must still be A's
	// registry's to grant.
	pinned := "@" + resA.GetDigest()
	for _, name := range []string{a.GetImageRef(), "unreachable.invalid/v2/" + randomHex(t, 16)} {
		t.Run("FROM another repository by digest/"+strings.SplitN(name, "/", 2)[0], func(t *testing.T) {
			refused(t, newSpec(t, env, nil), map[string]string{"Dockerfile": "FROM " + name + pinned + "\nRUN cat /secret\n"})
		})
		t.Run("pull_image of another repository by digest/"+strings.SplitN(name, "/", 2)[0], func(t *testing.T) {
			rec := refused(t, pullSpec(t, env, name+pinned), nil)
			if hasLine(rec, "using the copy on the host") {
				t.Errorf("the host's copy was used; logs:\n%s", rec)
			}
		})
	}
}

// pullSpec is a spec of a compose service with only image: img.
func pullSpec(t *testing.T, env Env, img string) *pluginv1.BuildSpec {
	spec := newSpec(t, env, nil)
	spec.PullImage = img
	spec.Dockerfile, spec.Labels = "", nil
	return spec
}

// idNames are names of the image id on the host: its shortest prefix no
// other image shares, its short id and the full sha256: form.
func idNames(t *testing.T, env Env, id string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	all, err := dockerClient(t, env).ImageList(ctx, image.ListOptions{All: true})
	if err != nil {
		t.Fatalf("list images: %v", err)
	}
	hex := strings.TrimPrefix(id, "sha256:")
	n := 1
	for ; n < len(hex); n++ {
		unique := true
		for _, img := range all {
			other := strings.TrimPrefix(img.ID, "sha256:")
			if other != hex && strings.HasPrefix(other, hex[:n]) {
				unique = false
				break
			}
		}
		if unique {
			break
		}
	}
	return []string{hex[:n], hex[:12], "sha256:" + hex}
}

// checkNotPushed fails when the registry has an image in the job's
// repository (spec.image_ref:latest, pulled with the job's token).
func checkNotPushed(t *testing.T, env Env, spec *pluginv1.BuildSpec) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{RegistryToken: spec.GetRegistryToken()})
	if err != nil {
		t.Fatal(err)
	}
	ref := spec.GetImageRef() + ":latest"
	c := dockerClient(t, env)
	body, err := c.ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err == nil {
		err = ProgressResult(body)
		_ = body.Close()
	}
	if err == nil {
		t.Errorf("the registry has %s: the refused job pushed to its repository", ref)
		untagRef(t, env, ref)
		return
	}
	if msg := err.Error(); !strings.Contains(msg, "manifest unknown") && !strings.Contains(msg, "not found") {
		t.Logf("pull %s: %v (taken as not pushed)", ref, err)
	}
}

// pullResult reads a pull's message stream to its end and returns the
// error it reports.
// ProgressResult reads a Docker Engine progress stream (pull, push) to its
// end and returns the error it reports, if any.
func ProgressResult(body io.Reader) error {
	dec := json.NewDecoder(body)
	for {
		var m jsonmessage.JSONMessage
		if err := dec.Decode(&m); errors.Is(err, io.EOF) {
			return nil
		} else if err != nil {
			return err
		}
		if m.Error != nil {
			return errors.New(m.Error.Message)
		}
	}
}

// untagRef removes ref from the host, whatever happened.
func untagRef(t *testing.T, env Env, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	_, _ = dockerClient(t, env).ImageRemove(ctx, ref, image.RemoveOptions{})
}

// testBuildKitTenancy covers what BuildKit shares beyond its layer cache:
// cache mounts (RUN --mount=type=cache), which every build on a daemon
// shares by id unless namespaced, must be each build's own; and a custom
// frontend (# syntax=, BUILDKIT_SYNTAX), which could build anything the
// plugin never sees, must be refused.
func testBuildKitTenancy(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*buildTimeout)
	defer cancel()
	t.Run("cache mounts are the build's own", func(t *testing.T) {
		secret := "cached-" + randomHex(t, 8)
		a := newSpec(t, env, nil)
		rec := &LogRecorder{}
		df := fmt.Sprintf("FROM %s\nRUN --mount=type=cache,target=/root/.cache s=tenant; echo \"$s-%s\" > /root/.cache/a.txt\n", env.BaseImage, secret)
		if _, err := exec.Build(ctx, a, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink()); err != nil {
			t.Fatalf("job A: %v\nlogs:\n%s", err, rec)
		}
		for _, args := range []map[string]string{nil, {"BUILDKIT_CACHE_MOUNT_NS": ""}} {
			b := newSpec(t, env, args)
			rec = &LogRecorder{}
			df = fmt.Sprintf("FROM %s\nRUN --mount=type=cache,target=/root/.cache cat /root/.cache/a.txt || echo nothing-cached\n", env.BaseImage)
			if _, err := exec.Build(ctx, b, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink()); err != nil {
				t.Fatalf("job B: %v\nlogs:\n%s", err, rec)
			}
			if hasLine(rec, "tenant-"+secret) || !hasLine(rec, "nothing-cached") {
				t.Errorf("job B (build args %v) read job A's cache mount; logs:\n%s", args, rec)
			}
		}
	})
	for name, spec := range map[string]func(t *testing.T) (*pluginv1.BuildSpec, string){
		"syntax directive": func(t *testing.T) (*pluginv1.BuildSpec, string) {
			return newSpec(t, env, nil), "# syntax=" + env.ImageRef(t) + "\n"
		},
		"BUILDKIT_SYNTAX build arg": func(t *testing.T) (*pluginv1.BuildSpec, string) {
			return newSpec(t, env, map[string]string{"BUILDKIT_SYNTAX": env.ImageRef(t)}), ""
		},
	} {
		t.Run("a custom frontend is refused/"+name, func(t *testing.T) {
			s, head := spec(t)
			rec := &LogRecorder{}
			df := head + fmt.Sprintf("FROM %s\nRUN s=front; echo \"$s-end-ran\"\n", env.BaseImage)
			res, err := exec.Build(ctx, s, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": df})), rec.Sink())
			if err == nil || hasLine(rec, "front-end-ran") {
				t.Fatalf("a build with a custom frontend ran (%v, %v); logs:\n%s", res, err, rec)
			}
			if !strings.Contains(err.Error(), "frontend") {
				t.Errorf("Build error %q does not name the frontend", err)
			}
			checkNoTag(t, env, s.GetImageRef()+":latest")
		})
	}
}

package sdktest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// secretDest is the build secret of the secrets tests, at
// /run/secrets/app/token in the RUN steps.
const secretDest = "app/token"

// testSecrets builds with a secret on a BuildKit host: a RUN reads it, and
// no layer of the pushed image holds its content or its file.
func testSecrets(t *testing.T, exec sdk.Executor, env Env) {
	secret := "s3cr3t-" + randomHex(t, 16)
	dockerfile := fmt.Sprintf("FROM %s\n"+
		"RUN cat /run/secrets/app/token > /dev/null && echo secret-seen-$(wc -c < /run/secrets/app/token)\n"+
		"RUN ls -la /run/secrets 2>&1 || echo no-secrets-dir\n", env.BaseImage)
	spec := newSpec(t, env, nil)
	spec.Nocache = true
	spec.Secrets = []*pluginv1.Secret{{Dest: secretDest, Content: []byte(secret)}}
	rec := &LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err != nil {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the build error holds the secret")
		}
		t.Fatalf("Build with a secret: %v\nlogs:\n%s", redact(err.Error(), secret), redact(rec.String(), secret))
	}
	t.Logf("build logs:\n%s", redact(rec.String(), secret))
	if want := fmt.Sprintf("secret-seen-%d", len(secret)); !hasLine(rec, want) {
		t.Errorf("no log line contains %s (the RUN did not read the secret)", want)
	}
	for _, l := range rec.Lines() {
		if strings.Contains(l.GetText(), secret) {
			t.Errorf("a log line holds the secret")
		}
		if l.GetError() {
			t.Errorf("error line in a successful build: %q", redact(l.GetText(), secret))
		}
	}
	ref := checkImage(t, env, spec, res)
	checkNoSecretInImage(t, env, ref, []byte(secret), "run/secrets/"+secretDest)
}

// testSecretsClassic asks a classic-builder host for a build with a secret:
// it must refuse with an invalid-argument error naming BuildKit, before
// building anything.
func testSecretsClassic(t *testing.T, exec sdk.Executor, env Env) {
	secret := "s3cr3t-" + randomHex(t, 16)
	spec := newSpec(t, env, nil)
	spec.Nocache = true
	spec.Secrets = []*pluginv1.Secret{{Dest: secretDest, Content: []byte(secret)}}
	// The marker is put together by the shell: only a running RUN prints it.
	dockerfile := fmt.Sprintf("FROM %s\nRUN s=ran; echo \"$s-%s\"\n", env.BaseImage, spec.GetJobId())
	rec := &LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err == nil {
		t.Fatalf("Build with a secret on a classic-builder host succeeded: %v", res)
	}
	t.Logf("Build error: %v", redact(err.Error(), secret))
	if !strings.Contains(err.Error(), "BuildKit") {
		t.Errorf("Build error %q does not mention BuildKit", redact(err.Error(), secret))
	}
	if !errors.Is(err, sdk.ErrInvalidArgument) {
		t.Errorf("Build error %q does not wrap sdk.ErrInvalidArgument", redact(err.Error(), secret))
	}
	if strings.Contains(err.Error(), secret) || strings.Contains(rec.String(), secret) {
		t.Errorf("the error or the logs hold the secret")
	}
	if hasLine(rec, "ran-"+spec.GetJobId()) {
		t.Errorf("the RUN ran although the build was refused; logs:\n%s", rec)
	}
	if n := len(containersWith(t, env, spec.GetJobId())); n > 0 {
		t.Errorf("%d build containers exist for a refused build", n)
	}
	ictx, icancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer icancel()
	if _, err := dockerClient(t, env).ImageInspect(ictx, spec.GetImageRef()+":latest"); !cerrdefs.IsNotFound(err) {
		t.Errorf("inspect %s:latest after a refused build: %v, want not found", spec.GetImageRef(), err)
	}
}

// localOnlyImage is the tag of the base image that exists on the host only.
const localOnlyImage = "localonly/busybox:contract"

// testPullImage makes a spec with pull_image of an image that only the host
// has: the pull fails, the plugin says so and uses the host's copy, which
// ends up in the registry under image_ref.
func testPullImage(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	if env.NoImageStore {
		testPullImageFromRegistry(t, exec, env)
		return
	}
	c := dockerClient(t, env)
	if err := c.ImageTag(ctx, env.BaseImage, localOnlyImage); err != nil {
		t.Fatalf("tag %s as %s: %v", env.BaseImage, localOnlyImage, err)
	}
	local, err := c.ImageInspect(ctx, localOnlyImage)
	if err != nil {
		t.Fatalf("inspect %s: %v", localOnlyImage, err)
	}
	spec := newSpec(t, env, nil)
	spec.PullImage = localOnlyImage
	spec.Dockerfile, spec.Labels = "", nil
	rec := &LogRecorder{}

	res, err := exec.Build(ctx, spec, bytes.NewReader(nil), rec.Sink())
	if err != nil {
		t.Fatalf("Build with pull_image %s: %v\nlogs:\n%s", localOnlyImage, err, rec)
	}
	t.Logf("logs:\n%s", rec)
	fallback, ok := rec.Find("could not pull " + localOnlyImage + ": ")
	if !ok || !strings.HasSuffix(fallback.GetText(), "; using the copy on the host") {
		t.Errorf("no line \"could not pull %s: <reason>; using the copy on the host\"", localOnlyImage)
	}
	if !digestRE.MatchString(res.GetDigest()) {
		t.Errorf("result digest %q, want sha256:<64 hex>", res.GetDigest())
	}
	if res.GetImageId() != local.ID {
		t.Errorf("result image id %q, want %s's %q", res.GetImageId(), localOnlyImage, local.ID)
	}
	// The registry has the manifest (checkImage pulls it by digest), and the
	// host's own copy, which the job did not pull, is still there.
	checkImage(t, env, spec, res)
	if _, err := c.ImageInspect(ctx, localOnlyImage); err != nil {
		t.Errorf("the host's own %s is gone after the job: %v", localOnlyImage, err)
	}
}

// testPullImageFromRegistry makes a spec with pull_image of BaseImage, on
// a host without an image store: the plugin takes it from its registry
// and pushes it as image_ref.
func testPullImageFromRegistry(t *testing.T, exec sdk.Executor, env Env) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	spec := newSpec(t, env, nil)
	spec.PullImage = env.BaseImage
	spec.Dockerfile, spec.Labels = "", nil
	rec := &LogRecorder{}
	res, err := exec.Build(ctx, spec, bytes.NewReader(nil), rec.Sink())
	if err != nil {
		t.Fatalf("Build with pull_image %s: %v\nlogs:\n%s", env.BaseImage, err, rec)
	}
	t.Logf("logs:\n%s", rec)
	if !digestRE.MatchString(res.GetDigest()) {
		t.Errorf("result digest %q, want sha256:<64 hex>", res.GetDigest())
	}
	checkImage(t, env, spec, res)
}

// testTarget builds the first stage of a two-stage Dockerfile: the second
// stage's RUN, which fails, must not run.
func testTarget(t *testing.T, exec sdk.Executor, env Env) {
	dockerfile := fmt.Sprintf("FROM %[1]s AS first\nRUN s=first; echo \"$s-stage-ran\"\n"+
		"FROM %[1]s AS second\nRUN s=second; echo \"$s-stage-ran\"; exit 7\n", env.BaseImage)
	spec := newSpec(t, env, nil)
	spec.Nocache = true
	spec.Target = "first"
	rec := &LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()

	res, err := exec.Build(ctx, spec, bytes.NewReader(ContextTar(t, map[string]string{"Dockerfile": dockerfile})), rec.Sink())
	if err != nil {
		t.Fatalf("Build with target first: %v\nlogs:\n%s", err, rec)
	}
	if !hasLine(rec, "first-stage-ran") {
		t.Errorf("no log line contains first-stage-ran; logs:\n%s", rec)
	}
	if hasLine(rec, "second-stage-ran") {
		t.Errorf("the second stage ran; logs:\n%s", rec)
	}
	checkImage(t, env, spec, res)
}

// checkPull has the daemon pull ref (by digest) from the registry with a
// token for its repository.
func checkPull(t *testing.T, env Env, spec *pluginv1.BuildSpec, ref string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	auth, err := registry.EncodeAuthConfig(registry.AuthConfig{RegistryToken: spec.GetRegistryToken()})
	if err != nil {
		t.Fatal(err)
	}
	body, err := dockerClient(t, env).ImagePull(ctx, ref, image.PullOptions{RegistryAuth: auth})
	if err != nil {
		t.Fatalf("pull %s from the registry: %v", ref, err)
	}
	defer body.Close()
	if err := ProgressResult(body); err != nil {
		t.Fatalf("pull %s from the registry: %v", ref, err)
	}
}

// checkNoSecretInImage exports ref from the daemon (docker save) and scans
// every file of the archive, every layer tar in it (entry by entry), and
// the image config for the secret's content, and the layers for a file
// whose path contains secretPath.
func checkNoSecretInImage(t *testing.T, env Env, ref string, secret []byte, secretPath string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	rc, err := dockerClient(t, env).ImageSave(ctx, []string{ref})
	if err != nil {
		t.Fatalf("save %s: %v", ref, err)
	}
	defer rc.Close()

	files := map[string][]byte{}
	links := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read the saved image: %v", err)
		}
		if hdr.Typeflag == tar.TypeSymlink {
			// docker save links a layer that is in the archive already.
			links[hdr.Name] = path.Join(path.Dir(hdr.Name), hdr.Linkname)
			continue
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read %s of the saved image: %v", hdr.Name, err)
		}
		files[hdr.Name] = b
		if bytes.Contains(b, secret) {
			t.Errorf("%s of the saved image holds the secret", hdr.Name)
		}
	}
	var manifest []struct {
		Config string
		Layers []string
	}
	if err := json.Unmarshal(files["manifest.json"], &manifest); err != nil || len(manifest) != 1 || len(manifest[0].Layers) == 0 {
		t.Fatalf("saved image: manifest.json %q: %v", files["manifest.json"], err)
	}
	if _, ok := files[manifest[0].Config]; !ok {
		t.Errorf("saved image: no config %s", manifest[0].Config)
	}
	for _, layer := range manifest[0].Layers {
		b, ok := files[layer]
		if target, link := links[layer]; link && !ok {
			b, ok = files[target]
		}
		if !ok {
			t.Errorf("saved image: no layer %s", layer)
			continue
		}
		names, err := scanLayer(b, secret, secretPath)
		if err != nil {
			t.Errorf("layer %s: %v", layer, err)
			continue
		}
		n := len(names)
		if n > 8 {
			names = append(names[:8], "…")
		}
		t.Logf("layer %s: %d entries, none with the secret: %s", layer, n, strings.Join(names, " "))
	}
}

// scanLayer reads a layer tar (gzip or not) and fails on an entry whose
// path contains secretPath or whose content holds secret. It returns the
// entries' names.
func scanLayer(b, secret []byte, secretPath string) ([]string, error) {
	var r io.Reader = bytes.NewReader(b)
	if bytes.HasPrefix(b, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return nil, err
		}
		r = zr
	}
	tr := tar.NewReader(r)
	var (
		names []string
		errs  []error
	)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return names, errors.Join(errs...)
		}
		if err != nil {
			return names, errors.Join(append(errs, err)...)
		}
		names = append(names, hdr.Name)
		if strings.Contains(hdr.Name, secretPath) || strings.Contains(hdr.Linkname, secretPath) {
			errs = append(errs, fmt.Errorf("entry %s (%d bytes): a secret's file in a layer", hdr.Name, hdr.Size))
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			return names, errors.Join(append(errs, err)...)
		}
		if bytes.Contains(content, secret) {
			errs = append(errs, fmt.Errorf("entry %s holds the secret", hdr.Name))
		}
	}
}

// hasLine tells whether a log line contains substr.
func hasLine(rec *LogRecorder, substr string) bool {
	_, ok := rec.Find(substr)
	return ok
}

// redact replaces secret in s, for failure messages.
func redact(s, secret string) string { return strings.ReplaceAll(s, secret, "<secret>") }

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

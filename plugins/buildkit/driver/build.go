package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/distribution/reference"
	bkclient "github.com/moby/buildkit/client"
	"github.com/moby/buildkit/exporter/containerimage/exptypes"
	"github.com/moby/buildkit/session"
	"github.com/moby/buildkit/session/secrets/secretsprovider"
	"github.com/moby/buildkit/util/entitlements"
	"github.com/tonistiigi/fsutil"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// maxDockerfileSize bounds the Dockerfile read into memory.
const maxDockerfileSize = 16 << 20

// Build builds spec on buildkitd (or, with pull_image, re-exports that
// image), has buildkitd push it to spec.image_ref:latest and returns its
// image id (config digest), manifest digest and size.
func (d *Driver) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	jobID := spec.GetJobId()

	auths, err := engine.ParseRegistryConfig(jobID, spec.GetRegistryConfig())
	if err != nil {
		return nil, err
	}
	c, err := newClient(ctx, spec.GetHost())
	if err != nil {
		return nil, err
	}
	defer c.Close()
	b := &build{d: d, c: c, spec: spec, auths: auths, own: registryDomain(spec.GetImageRef()), logs: logs}
	b.reg = newRegistryClient(b.own, spec.GetRegistryToken(), auths)
	d.logger.Info("build", "job", jobID, "host", spec.GetHost().GetName(), "platform", spec.GetPlatform(), "pull", spec.GetPullImage() != "")
	res, err := b.run(ctx, buildContext)
	if err != nil {
		return nil, canceled(ctx, jobID, err)
	}
	return res, nil
}

// build is one Build's state.
type build struct {
	d     *Driver
	c     *bkclient.Client
	spec  *pluginv1.BuildSpec
	auths engine.RegistryAuths
	own   string
	reg   *registryClient
	logs  sdk.LogSink
}

func (b *build) info(text string) error { return b.logs(&pluginv1.Log{Text: text, Info: true}) }

func (b *build) run(ctx context.Context, buildContext io.Reader) (*pluginv1.Result, error) {
	spec := b.spec
	dir, err := os.MkdirTemp("", "obb-buildkit-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	ctxDir, dfDir := filepath.Join(dir, "context"), filepath.Join(dir, "dockerfile")
	for _, p := range []string{ctxDir, dfDir} {
		if err := os.Mkdir(p, 0o700); err != nil {
			return nil, err
		}
	}

	var dockerfile []byte
	if img := spec.GetPullImage(); img != "" {
		// A service with only image:: FROM it, nothing else, so that the
		// image's config is kept as it is.
		named, _ := reference.ParseNormalizedNamed(img)
		if err := b.checkPinned(ctx, []string{img}); err != nil {
			return nil, err
		}
		dockerfile = []byte("FROM " + reference.TagNameOnly(named).String() + "\n")
	} else {
		if err := extractTar(buildContext, ctxDir); err != nil {
			return nil, fmt.Errorf("job %s: build context: %w", spec.GetJobId(), err)
		}
		name := spec.GetDockerfile()
		if name == "" {
			name = "Dockerfile"
		}
		dockerfile, err = readContextFile(ctxDir, name)
		if err != nil {
			return nil, fmt.Errorf("job %s: %w", spec.GetJobId(), err)
		}
		asked, err := checkFrontend(spec.GetJobId(), dockerfile, spec.GetBuildArgs())
		if err != nil {
			_ = b.logs(&pluginv1.Log{Text: err.Error(), Error: true})
			return nil, err
		}
		if asked != "" {
			if err := b.info(fmt.Sprintf("Building with buildkitd's built-in Dockerfile frontend (the Dockerfile asks for %s)", asked)); err != nil {
				return nil, err
			}
		}
		if err := b.checkPinned(ctx, imageRefs(dockerfile, spec.GetBuildArgs())); err != nil {
			return nil, err
		}
		var dests []string
		for _, s := range spec.GetSecrets() {
			dests = append(dests, s.GetDest())
		}
		dockerfile = engine.AddSecretMounts(dockerfile, dests)
	}
	if err := os.WriteFile(filepath.Join(dfDir, "Dockerfile"), dockerfile, 0o600); err != nil {
		return nil, err
	}
	ctxFS, err := fsutil.NewFS(ctxDir)
	if err != nil {
		return nil, err
	}
	dfFS, err := fsutil.NewFS(dfDir)
	if err != nil {
		return nil, err
	}

	opt, err := b.solveOpt(ctxFS, dfFS)
	if err != nil {
		return nil, err
	}
	resp, err := b.solve(ctx, opt)
	if err != nil {
		return nil, err
	}
	return b.result(ctx, resp)
}

// solveOpt is the Solve of buildkitd's Dockerfile frontend for spec.
func (b *build) solveOpt(ctxFS, dfFS fsutil.FS) (bkclient.SolveOpt, error) {
	spec := b.spec
	attrs := map[string]string{
		"filename": "Dockerfile",
		// Any cmdline keeps the frontend from forwarding the build to the
		// frontend image a "# syntax=" names: checkFrontend allowed only
		// Docker's own, which dockerfile.v0 is.
		"cmdline": "obb-builtin",
	}
	if p := spec.GetPlatform(); p != "" {
		attrs["platform"] = p
	}
	if t := spec.GetTarget(); t != "" && spec.GetPullImage() == "" {
		attrs["target"] = t
	}
	if spec.GetNocache() {
		attrs["no-cache"] = ""
	}
	for k, v := range spec.GetBuildArgs() {
		if k == syntaxArg {
			continue
		}
		attrs["build-arg:"+k] = v
	}
	// Cache mounts are the build's own, whatever the build args say.
	attrs["build-arg:"+engine.CacheMountNSArg] = "obb/" + spec.GetImageRef()
	for k, v := range spec.GetLabels() {
		attrs["label:"+k] = v
	}
	var ents []string
	switch m := spec.GetHost().GetNetworkMode(); m {
	case "", "default":
	case "none":
		attrs["force-network-mode"] = "none"
	case "host":
		attrs["force-network-mode"] = "host"
		ents = append(ents, string(entitlements.EntitlementNetworkHost))
	default:
		return bkclient.SolveOpt{}, fmt.Errorf("job %s: network_mode %q: buildkitd knows only none, host and its default: %w", spec.GetJobId(), m, sdk.ErrInvalidArgument)
	}

	secrets := make(map[string][]byte, len(spec.GetSecrets()))
	for _, s := range spec.GetSecrets() {
		secrets[s.GetDest()] = s.GetContent()
	}
	ap, err := engine.NewAuthProvider(b.auths, b.own, spec.GetRegistryToken())
	if err != nil {
		return bkclient.SolveOpt{}, err
	}
	opt := bkclient.SolveOpt{
		Frontend:      "dockerfile.v0",
		FrontendAttrs: attrs,
		LocalMounts:   map[string]fsutil.FS{"context": ctxFS, "dockerfile": dfFS},
		Session:       []session.Attachable{secretsprovider.FromMap(secrets), ap},
		Exports: []bkclient.ExportEntry{{
			Type:  bkclient.ExporterImage,
			Attrs: map[string]string{"name": spec.GetImageRef() + ":latest", "push": "true"},
		}},
		AllowedEntitlements: ents,
	}
	if ref := spec.GetCacheRef(); ref != "" {
		opt.CacheImports = []bkclient.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{"ref": ref}}}
		opt.CacheExports = []bkclient.CacheOptionsEntry{{Type: "registry", Attrs: map[string]string{"ref": ref, "mode": "max", "ignore-error": "true"}}}
	}
	return opt, nil
}

// solve runs the Solve and streams its progress to the logs.
func (b *build) solve(ctx context.Context, opt bkclient.SolveOpt) (*bkclient.SolveResponse, error) {
	ch := make(chan *bkclient.SolveStatus)
	p := newProgress(b.logs)
	done := make(chan error, 1)
	go func() {
		var sinkErr error
		for st := range ch {
			if sinkErr == nil {
				sinkErr = p.status(st)
			}
		}
		done <- sinkErr
	}()
	resp, err := b.c.Solve(ctx, nil, opt, ch) // closes ch
	sinkErr := <-done
	if err == nil && sinkErr != nil {
		err = sinkErr
	}
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		msg := solveError(err)
		if img := b.spec.GetPullImage(); img != "" {
			msg = fmt.Sprintf("could not pull %s: %s", img, msg)
		}
		_ = b.logs(&pluginv1.Log{Text: msg, Error: true})
		return nil, errors.New(msg)
	}
	return resp, nil
}

// solveError is a Solve error's message without gRPC's wrapping.
func solveError(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, "desc = "); i >= 0 {
		msg = msg[i+len("desc = "):]
	}
	return msg
}

// result reads the image id and digest from the exporter's response and
// the size from the pushed manifest.
func (b *build) result(ctx context.Context, resp *bkclient.SolveResponse) (*pluginv1.Result, error) {
	dgst := resp.ExporterResponse[exptypes.ExporterImageDigestKey]
	id := resp.ExporterResponse[exptypes.ExporterImageConfigDigestKey]
	if dgst == "" || id == "" {
		return nil, fmt.Errorf("job %s: buildkitd reported no image digest", b.spec.GetJobId())
	}
	named, err := reference.ParseNormalizedNamed(b.spec.GetImageRef())
	if err != nil {
		return nil, err
	}
	body, err := b.reg.manifest(ctx, named, dgst)
	if err != nil {
		return nil, fmt.Errorf("job %s: read the pushed manifest %s@%s: %w", b.spec.GetJobId(), b.spec.GetImageRef(), dgst, err)
	}
	size, err := manifestSize(body)
	if err != nil {
		return nil, fmt.Errorf("job %s: the pushed manifest %s: %w", b.spec.GetJobId(), dgst, err)
	}
	if err := b.info(fmt.Sprintf("Pushed %s@%s", b.spec.GetImageRef(), dgst)); err != nil {
		return nil, err
	}
	return &pluginv1.Result{ImageId: id, Digest: dgst, Size: size}, nil
}

// checkPinned makes sure the job may have every image it names by digest:
// buildkitd serves such an image from its content store when another
// build pulled it, without asking the registry, so the registry is asked
// here with the job's credentials.
func (b *build) checkPinned(ctx context.Context, refs []string) error {
	for _, c := range pinned(refs) {
		if _, err := b.reg.manifest(ctx, c, c.Digest().String()); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			msg := fmt.Sprintf("could not pull %s: %v", reference.FamiliarString(c), err)
			_ = b.logs(&pluginv1.Log{Text: msg, Error: true})
			return fmt.Errorf("job %s: %s", b.spec.GetJobId(), msg)
		}
	}
	return nil
}

// canceled returns err, or a Canceled/DeadlineExceeded error when ctx is
// done (the errors then are only symptoms of the cancel).
func canceled(ctx context.Context, jobID string, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("job %s cancelled: %w", jobID, ctx.Err())
}

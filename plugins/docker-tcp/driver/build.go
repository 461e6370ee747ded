package driver

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Build builds spec with the daemon's classic builder, or with its BuildKit
// when host.buildkit is set, pushes <image_ref>:latest with the spec's
// registry token and returns the image id, the manifest digest and the image
// size (from inspect). With pull_image it pulls that image instead of
// building (buildContext is not read) and pushes it the same way.
// Cancelling ctx, or Cancel(job id), stops the build (and removes the
// classic builder's containers).
//
// registry_config gives the daemon the credentials for private base images
// (and for pull_image); build secrets are mounted in every RUN step, with
// BuildKit only (a classic-builder host refuses them before building).
func (d *Driver) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	auths, err := parseRegistryConfig(spec.GetJobId(), spec.GetRegistryConfig())
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	untrack, err := d.track(spec.GetJobId(), cancel)
	if err != nil {
		return nil, err
	}
	defer untrack()

	c, err := d.newClient(spec.GetHost())
	if err != nil {
		return nil, err
	}
	defer c.Close()

	log := d.logger.With("job", spec.GetJobId(), "host", spec.GetHost().GetName(), "image", spec.GetImageRef())
	// The openBalena registry is the job's own registry, reached with the
	// job's own token only (see tenancy.go); the job's tags go afterwards.
	own := registryDomain(spec.GetImageRef())
	auths = withJobToken(auths, own, spec.GetRegistryToken())
	tags := []string{spec.GetImageRef() + ":latest"}
	var keep string // a built image: kept for the layer cache, by its id only
	defer func() { d.untag(ctx, c, spec.GetJobId(), keep, tags) }()

	start := time.Now()
	var imageID string
	if spec.GetPullImage() != "" {
		var pulled bool
		imageID, pulled, err = d.pull(ctx, c, spec, own, auths, logs)
		if pulled {
			tags = append(tags, spec.GetPullImage())
		}
	} else {
		var fresh []string
		imageID, fresh, err = d.build(ctx, c, spec, own, auths, buildContext, logs)
		tags = append(tags, fresh...)
		keep = imageID
	}
	if err != nil {
		log.Info("build failed", "error", err, "elapsed", time.Since(start))
		return nil, err
	}
	built := time.Now()

	ref := spec.GetImageRef() + ":latest"
	digest, err := push(ctx, c, ref, spec.GetRegistryToken(), logs)
	if err != nil {
		log.Info("push failed", "error", err, "elapsed", time.Since(built))
		return nil, canceled(ctx, spec.GetJobId(), err)
	}
	img, err := c.ImageInspect(ctx, imageID)
	if err != nil {
		return nil, canceled(ctx, spec.GetJobId(), engineError("inspect "+imageID, err))
	}
	log.Info("built and pushed", "image_id", img.ID, "digest", digest, "size", img.Size,
		"build", time.Since(start)-time.Since(built), "push", time.Since(built))
	return &pluginv1.Result{ImageId: img.ID, Digest: digest, Size: img.Size}, nil
}

// build runs the classic builder (or BuildKit) and returns the image id
// and the base images it pulled fresh. On failure or cancellation it makes
// sure the build's containers are gone.
func (d *Driver) build(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, own string, auths registryAuths, buildContext io.Reader, logs sdk.LogSink) (string, []string, error) {
	dockerfile, whole, found, _ := peekDockerfile(buildContext, dockerfileNames(spec))
	buildContext = whole
	bases, unresolved := baseImages(dockerfile, spec.GetBuildArgs())
	fresh, pulled := pullFresh(bases, unresolved || !found, own, auths)
	opts := buildOptions(spec, auths)
	opts.PullParent = fresh
	if spec.GetHost().GetBuildkit() {
		id, err := d.buildKit(ctx, c, spec, opts, auths, buildContext, logs)
		return id, pulled, err
	}
	out := &buildOutput{logs: logs}
	err := runImageBuild(ctx, c, opts, buildContext, out.handle, out.flush)
	if err == nil {
		id, err := out.image()
		return id, pulled, err
	}
	if len(out.containers) > 0 {
		if cerr := removeContainers(context.WithoutCancel(ctx), c, out.containers); cerr != nil {
			d.logger.Warn("build containers left behind", "job", spec.GetJobId(), "error", cerr)
			err = errors.Join(err, cerr)
		}
	}
	return "", pulled, canceled(ctx, spec.GetJobId(), err)
}

// buildKit builds with the daemon's BuildKit (POST /build?version=2, the
// context as the request body) and returns the image id. A build with
// secrets or registry credentials gets a BuildKit session that serves them
// (see startSession); with secrets, the Dockerfile is rewritten on its way
// through the context so that every RUN mounts them (addSecretMounts).
// Cancelling ctx closes the request, which makes the daemon cancel the
// solve; the build is also cancelled by its build id (POST /build/cancel),
// in case the closed connection does not reach the daemon (a proxy in
// between). BuildKit's steps are no containers of the daemon: there are
// none to remove.
func (d *Driver) buildKit(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, opts build.ImageBuildOptions, auths registryAuths, buildContext io.Reader, logs sdk.LogSink) (string, error) {
	opts.BuildID = buildID(spec.GetJobId())
	if len(spec.GetSecrets()) > 0 || len(auths) > 0 {
		s, err := d.startSession(ctx, c, spec.GetJobId(), spec.GetSecrets(), auths)
		if err != nil {
			return "", fmt.Errorf("job %s: BuildKit session: %w", spec.GetJobId(), err)
		}
		defer s.Close()
		opts.SessionID = s.ID()
	}
	var rewriter *dockerfileRewriter
	if secrets := spec.GetSecrets(); len(secrets) > 0 {
		dests := make([]string, len(secrets))
		for i, s := range secrets {
			dests[i] = s.GetDest()
		}
		rewriter = rewriteDockerfile(buildContext, dockerfileNames(spec), func(b []byte) []byte { return addSecretMounts(b, dests) })
		defer rewriter.Close()
		buildContext = rewriter
	}
	cancelled := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(cancelled)
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		defer ccancel()
		if err := c.BuildCancel(cctx, opts.BuildID); err != nil {
			d.logger.Warn("cancel BuildKit build", "job", spec.GetJobId(), "build_id", opts.BuildID, "error", err)
		}
	})
	out := newBuildKitOutput(logs)
	err := runImageBuild(ctx, c, opts, buildContext, out.handle, out.flush)
	if !stop() {
		<-cancelled
	}
	if err != nil {
		if rewriter != nil && rewriter.Err() != nil && ctx.Err() == nil {
			// The build failed because its context could not be rewritten.
			return "", fmt.Errorf("job %s: %w", spec.GetJobId(), rewriter.Err())
		}
		return "", canceled(ctx, spec.GetJobId(), err)
	}
	return out.image()
}

// dockerfileNames are the paths the spec's Dockerfile may have in the
// context: spec.dockerfile, or Dockerfile (or dockerfile, which the daemon
// falls back to) by default.
func dockerfileNames(spec *pluginv1.BuildSpec) []string {
	if name := spec.GetDockerfile(); name != "" {
		return []string{contextPath(name)}
	}
	return []string{"Dockerfile", "dockerfile"}
}

// buildID is the id a BuildKit build is known by on the daemon (for
// POST /build/cancel): the job id and a random suffix, so that two builders
// sharing a daemon cannot cancel each other's builds.
func buildID(jobID string) string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return "obb-" + jobID + "-" + hex.EncodeToString(b)
}

// runImageBuild posts the build, follows its message stream with handle and
// calls flush once it has ended.
func runImageBuild(ctx context.Context, c *client.Client, opts build.ImageBuildOptions, buildContext io.Reader, handle func(*jsonmessage.JSONMessage) error, flush func() error) error {
	resp, err := c.ImageBuild(ctx, buildContext, opts)
	if err != nil {
		return engineError("build", err)
	}
	defer resp.Body.Close()
	if err := readMessages(resp.Body, handle); err != nil {
		return err
	}
	return flush()
}

func buildOptions(spec *pluginv1.BuildSpec, auths registryAuths) build.ImageBuildOptions {
	dockerfile := spec.GetDockerfile()
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	args := make(map[string]*string, len(spec.GetBuildArgs()))
	for k, v := range spec.GetBuildArgs() {
		args[k] = &v
	}
	version := build.BuilderV1
	if spec.GetHost().GetBuildkit() {
		version = build.BuilderBuildKit
	}
	return build.ImageBuildOptions{
		Dockerfile:  dockerfile,
		Platform:    spec.GetPlatform(),
		NoCache:     spec.GetNocache(),
		BuildArgs:   args,
		Labels:      spec.GetLabels(),
		Tags:        []string{spec.GetImageRef() + ":latest"},
		Remove:      true,
		ForceRemove: true,
		NetworkMode: spec.GetHost().GetNetworkMode(),
		Version:     version,
		Target:      spec.GetTarget(),
		AuthConfigs: auths.forDaemon(), // X-Registry-Config, for the classic builder's FROM pulls
	}
}

// canceled returns err, or a Canceled/DeadlineExceeded error when ctx is
// done (the errors then are only symptoms of the cancel: closed streams).
func canceled(ctx context.Context, jobID string, err error) error {
	if ctx.Err() == nil {
		return err
	}
	return fmt.Errorf("job %s cancelled: %w", jobID, ctx.Err())
}

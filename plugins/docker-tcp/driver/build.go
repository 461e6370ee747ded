package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/client"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// Build builds spec with the daemon's classic builder, pushes
// <image_ref>:latest with the spec's registry token and returns the image id,
// the manifest digest and the image size (from inspect). Cancelling ctx, or
// Cancel(job id), stops the build and removes its containers.
func (d *Driver) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	if spec.GetHost().GetBuildkit() {
		return nil, fmt.Errorf("job %s: BuildKit builds (host.buildkit) are not implemented in docker-tcp yet, only the classic builder: %w", spec.GetJobId(), sdk.ErrUnimplemented)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	untrack, err := d.track(spec.GetJobId(), cancel)
	if err != nil {
		return nil, err
	}
	defer untrack()

	c, err := newClient(spec.GetHost())
	if err != nil {
		return nil, err
	}
	defer c.Close()

	log := d.logger.With("job", spec.GetJobId(), "host", spec.GetHost().GetName(), "image", spec.GetImageRef())
	start := time.Now()
	imageID, err := d.build(ctx, c, spec, buildContext, logs)
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

// build runs the classic builder and returns the image id. On failure or
// cancellation it makes sure the build's containers are gone.
func (d *Driver) build(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (string, error) {
	out := &buildOutput{logs: logs}
	err := runImageBuild(ctx, c, spec, buildContext, out)
	if err == nil {
		return out.image()
	}
	if len(out.containers) > 0 {
		if cerr := removeContainers(context.WithoutCancel(ctx), c, out.containers); cerr != nil {
			d.logger.Warn("build containers left behind", "job", spec.GetJobId(), "error", cerr)
			err = errors.Join(err, cerr)
		}
	}
	return "", canceled(ctx, spec.GetJobId(), err)
}

// runImageBuild posts the build and follows its message stream.
func runImageBuild(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, buildContext io.Reader, out *buildOutput) error {
	resp, err := c.ImageBuild(ctx, buildContext, buildOptions(spec))
	if err != nil {
		return engineError("build", err)
	}
	defer resp.Body.Close()
	if err := readMessages(resp.Body, out.handle); err != nil {
		return err
	}
	return out.flush()
}

func buildOptions(spec *pluginv1.BuildSpec) build.ImageBuildOptions {
	dockerfile := spec.GetDockerfile()
	if dockerfile == "" {
		dockerfile = "Dockerfile"
	}
	args := make(map[string]*string, len(spec.GetBuildArgs()))
	for k, v := range spec.GetBuildArgs() {
		args[k] = &v
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
		Version:     build.BuilderV1,
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

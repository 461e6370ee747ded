package engine

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
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
// Cancelling ctx stops the build (and removes the
// classic builder's containers).
//
// registry_config gives the daemon the credentials for private base images
// (and for pull_image); build secrets are mounted in every RUN step, with
// BuildKit only (a classic-builder host refuses them before building).
func (d *Driver) Build(ctx context.Context, spec *pluginv1.BuildSpec, buildContext io.Reader, logs sdk.LogSink) (*pluginv1.Result, error) {
	if err := validateSpec(spec); err != nil {
		return nil, err
	}
	auths, err := ParseRegistryConfig(spec.GetJobId(), spec.GetRegistryConfig())
	if err != nil {
		return nil, err
	}

	c, err := d.newClient(spec.GetHost())
	if err != nil {
		return nil, err
	}
	defer c.Close()

	log := d.logger.With("job", spec.GetJobId(), "host", spec.GetHost().GetName(), "image", spec.GetImageRef())
	// The openBalena registry is the job's own registry, reached with the
	// job's own token only (see doc.go); the job's tags go afterwards.
	own := registryDomain(spec.GetImageRef())
	auths = withJobToken(auths, own, spec.GetRegistryToken())
	u := &untagger{d: d, c: c, jobID: spec.GetJobId(), ctx: ctx}
	defer u.remove([]string{spec.GetImageRef() + ":latest"})

	start := time.Now()
	var imageID string
	if spec.GetPullImage() != "" {
		imageID, err = d.pull(ctx, c, spec, own, auths, u, logs)
	} else {
		imageID, err = d.build(ctx, c, spec, own, auths, u, buildContext, logs)
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

// build runs the classic builder (or BuildKit) and returns the image id.
// Base images are pulled fresh when the Dockerfile asks for it (see
// pullParent); the private ones the classic builder pulled are untagged as
// soon as the build is over. A classic-builder image is kept for the layer
// cache under its cacheName. On failure or cancellation it makes sure the
// build's containers are gone.
func (d *Driver) build(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, own string, auths RegistryAuths, u *untagger, buildContext io.Reader, logs sdk.LogSink) (string, error) {
	// The Dockerfile decides how base images are taken: no build without
	// having read it.
	dockerfile, whole, err := peekDockerfile(buildContext, dockerfileNames(spec))
	buildContext = whole
	if err != nil {
		_ = logs(&pluginv1.Log{Text: err.Error(), Error: true})
		return "", fmt.Errorf("job %s: %w: %w", spec.GetJobId(), err, sdk.ErrInvalidArgument)
	}
	imgs := baseImages(dockerfile, spec.GetBuildArgs())
	var private []string
	before := map[string]string{} // what the host had of them: not this build's to remove
	for _, name := range imgs.names {
		if !privateImage(name, own, auths) {
			continue
		}
		private = append(private, name)
		img, err := localImage(ctx, c, name)
		if err != nil {
			return "", canceled(ctx, spec.GetJobId(), err)
		}
		if img != nil {
			before[name] = img.ID
		}
	}
	opts := buildOptions(spec, auths)
	if err := d.checkPinned(ctx, c, spec, imgs.names, auths, logs); err != nil {
		return "", err
	}
	if spec.GetHost().GetBuildkit() {
		if f := frontend(dockerfile, spec.GetBuildArgs()); f != "" && !OfficialFrontend(f) {
			msg := fmt.Sprintf("the build asks for the BuildKit frontend %s (# syntax= or BUILDKIT_SYNTAX): on a shared build host only docker/dockerfile frontends build", f)
			_ = logs(&pluginv1.Log{Text: msg, Error: true})
			return "", fmt.Errorf("job %s: %s: %w", spec.GetJobId(), msg, sdk.ErrInvalidArgument)
		}
		fresh, err := d.pullParent(ctx, c, spec, imgs, own, auths, logs)
		if err != nil {
			return "", err
		}
		opts.PullParent = fresh
		// BuildKit pulls base images into its own store: it tags nothing.
		d.hold(true, private...)
		defer d.releaseAll(private)
		return d.buildKit(ctx, c, spec, opts, auths, buildContext, logs)
	}
	out := &buildOutput{logs: logs}
	var held []string
	defer func() { d.dropBases(u, spec.GetImageRef()+":latest", held, out.pulled, before, own, auths) }()
	fresh, err := d.pullBases(ctx, c, spec, imgs, own, auths, &held, logs)
	if err != nil {
		return "", err
	}
	opts.PullParent = fresh
	err = runImageBuild(ctx, c, opts, buildContext, out.handle, out.flush)
	if err == nil {
		id, err := out.image()
		if err == nil && !strings.HasPrefix(id, "sha256:") {
			// The short id of "Successfully built": the full one, by the
			// job's name (a short id is a prefix the daemon may match to
			// another image).
			img, ierr := c.ImageInspect(ctx, spec.GetImageRef()+":latest")
			id, err = img.ID, canceled(ctx, spec.GetJobId(), ierr)
		}
		if err == nil {
			u.keep(id)
		}
		return id, err
	}
	if len(out.containers) > 0 {
		if cerr := removeContainers(context.WithoutCancel(ctx), c, out.containers); cerr != nil {
			d.logger.Warn("build containers left behind", "job", spec.GetJobId(), "error", cerr)
			err = errors.Join(err, cerr)
		}
	}
	return "", canceled(ctx, spec.GetJobId(), err)
}

// pullParent decides whether the build pulls its base images fresh
// (PullParent; pull=1 for BuildKit too) rather than use the host's copies,
// and says why in the plugin's log (and, when it is the Dockerfile's
// doing, in the build's). See freshReason and hostReason.
func (d *Driver) pullParent(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, imgs dockerfileImages, own string, auths RegistryAuths, logs sdk.LogSink) (bool, error) {
	reason := freshReason(imgs, own, auths, func(string) bool { return false })
	if reason != "" {
		if err := logs(&pluginv1.Log{Text: "Pulling base images fresh: " + reason, Info: true}); err != nil {
			return false, err
		}
	} else {
		// Not the Dockerfile's doing: the build is not told (it would learn
		// what other builds pull or what the host holds).
		reason = freshReason(imgs, own, auths, d.heldPrivately)
		if reason == "" {
			var err error
			if reason, err = hostReason(ctx, c, imgs.names, spec.GetPlatform()); err != nil {
				return false, canceled(ctx, spec.GetJobId(), err)
			}
		}
	}
	if reason == "" {
		return false, nil
	}
	d.logger.Info("pulling base images fresh", "job", spec.GetJobId(), "reason", reason)
	return true, nil
}

// checkPinned asks the registry, through the daemon and with the job's
// credentials, for each image the Dockerfile names by digest. Neither
// builder asks the registry for access to an image named by digest once
// the host has its manifest: BuildKit takes it from its own content store
// (under whatever registry name goes with the digest), the classic
// builder's pull from the daemon's manifest store ("Image is up to date"),
// wherever another build's pull left it. When the registry cannot be
// reached, only an image the host has under that very name passes (the
// offline case).
func (d *Driver) checkPinned(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, names []string, auths RegistryAuths, logs sdk.LogSink) error {
	for _, name := range names {
		named, err := reference.ParseNormalizedNamed(name)
		if err != nil {
			continue
		}
		if _, pinned := named.(reference.Canonical); !pinned {
			continue
		}
		var auth string
		if ac, ok := auths.Lookup(reference.Domain(named)); ok {
			if auth, err = registry.EncodeAuthConfig(ac); err != nil {
				return fmt.Errorf("job %s: encode the registry credentials for %s", spec.GetJobId(), reference.Domain(named))
			}
		}
		_, err = c.DistributionInspect(ctx, name, auth)
		if err == nil {
			continue
		}
		if ctx.Err() != nil {
			return canceled(ctx, spec.GetJobId(), err)
		}
		reason := shortReason(err)
		if unreachable(err) {
			local, lerr := localImage(ctx, c, name)
			if lerr != nil {
				return canceled(ctx, spec.GetJobId(), lerr)
			}
			if local != nil {
				d.logger.Info("registry unreachable, the host has the pinned image by name", "job", spec.GetJobId(), "image", name, "error", reason)
				continue
			}
			reason += " (its registry cannot be reached, and the host has no image of that name)"
		}
		d.logger.Info("pinned base image refused", "job", spec.GetJobId(), "image", name, "error", reason)
		msg := fmt.Sprintf("%s: the registry does not let this build have it: %s", name, reason)
		_ = logs(&pluginv1.Log{Text: msg, Error: true})
		return fmt.Errorf("job %s: %s", spec.GetJobId(), msg)
	}
	return nil
}

// releaseAll releases the private holds on names.
func (d *Driver) releaseAll(names []string) {
	for _, name := range names {
		d.release(name, true)
	}
}

// pullBases pulls, before a classic build, the base images the builder
// would otherwise pull itself: those that must be pulled fresh (see
// freshReason: the openBalena registry, registry-secret registries, names
// like image ids, names another build in progress holds) and those not on
// the host for the platform, with the job's credentials. It then reads the
// ONBUILD triggers of every base image the build uses and refuses one that
// takes from another image (COPY --from): the builder would look that up
// (on the host, by id too, or through a pull that takes a manifest the host
// has without asking the registry) where the driver cannot check it. The
// builder then uses exactly these copies (PullParent off), unless a name
// could not be resolved (PullParent on: the daemon resolves it). Names it
// pulled are added to held (see hold).
func (d *Driver) pullBases(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, imgs dockerfileImages, own string, auths RegistryAuths, held *[]string, logs sdk.LogSink) (bool, error) {
	if reason := freshReason(imgs, own, auths, func(string) bool { return false }); reason != "" {
		if err := logs(&pluginv1.Log{Text: "Pulling base images fresh: " + reason, Info: true}); err != nil {
			return false, err
		}
	}
	platform := spec.GetPlatform()
	for _, name := range imgs.names {
		local, err := localImage(ctx, c, name)
		if err != nil {
			return false, canceled(ctx, spec.GetJobId(), err)
		}
		usable := local != nil && (platform == "" || samePlatform(platform, local.Os, local.Architecture, local.Variant))
		private := privateImage(name, own, auths)
		if !usable || private || d.heldPrivately(name) {
			if local, err = d.pullBase(ctx, c, spec, name, private, auths, held, logs); err != nil {
				return false, err
			}
		}
		if err := checkTriggers(name, local); err != nil {
			_ = logs(&pluginv1.Log{Text: err.Error(), Error: true})
			return false, fmt.Errorf("job %s: %w: %w", spec.GetJobId(), err, sdk.ErrInvalidArgument)
		}
	}
	if len(imgs.unresolved) > 0 {
		d.logger.Info("pulling base images fresh", "job", spec.GetJobId(), "reason", "unresolved "+imgs.unresolved[0])
		return true, nil
	}
	return false, nil
}

// pullBase pulls one base image for a classic build and returns the
// host's image of that name.
func (d *Driver) pullBase(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, name string, private bool, auths RegistryAuths, held *[]string, logs sdk.LogSink) (*image.InspectResponse, error) {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil { // an image id: pulled by that name from Docker Hub
		named, err = reference.ParseNormalizedNamed("docker.io/library/" + name)
	}
	if err != nil {
		return nil, fmt.Errorf("job %s: base image %q: %v: %w", spec.GetJobId(), name, err, sdk.ErrInvalidArgument)
	}
	var auth string
	if ac, ok := auths.Lookup(reference.Domain(named)); ok {
		if auth, err = registry.EncodeAuthConfig(ac); err != nil {
			return nil, fmt.Errorf("job %s: encode the registry credentials for %s", spec.GetJobId(), reference.Domain(named))
		}
	}
	d.hold(private, name)
	*held = append(*held, name)
	if err := logs(&pluginv1.Log{Text: "Pulling " + name, Info: true}); err != nil {
		return nil, err
	}
	if err := fetchImage(ctx, c, named, spec.GetPlatform(), auth, logs); err != nil {
		if ctx.Err() != nil {
			return nil, canceled(ctx, spec.GetJobId(), err)
		}
		var sinkErr sinkError
		if errors.As(err, &sinkErr) {
			return nil, sinkErr.err
		}
		msg := fmt.Sprintf("could not pull %s: %s", name, shortReason(err))
		_ = logs(&pluginv1.Log{Text: msg, Error: true})
		return nil, fmt.Errorf("job %s: %s", spec.GetJobId(), msg)
	}
	local, err := localImage(ctx, c, name)
	if err == nil && local == nil {
		err = fmt.Errorf("%s went from the host right after the pull", name)
	}
	if err != nil {
		return nil, canceled(ctx, spec.GetJobId(), fmt.Errorf("job %s: %w", spec.GetJobId(), err))
	}
	return local, nil
}

// checkTriggers refuses a base image whose ONBUILD triggers take from
// another image (COPY --from, a mount's from=).
func checkTriggers(name string, img *image.InspectResponse) error {
	if img == nil || img.Config == nil {
		return nil
	}
	for _, trigger := range img.Config.OnBuild {
		if t := strings.ToLower(trigger); strings.Contains(t, "--from") || strings.Contains(t, "from=") {
			return fmt.Errorf("the base image %s has an ONBUILD trigger that takes from another image (%q): a build on a shared host does not run it", name, trigger)
		}
	}
	return nil
}

// dropBases removes, once a classic build is over, the tags of the private
// base images (see privateImage) it pulled: those it pulled itself (held)
// that the host now has other than before the build, and those the
// daemon's pull messages name (a FROM with an unresolved name). A tag
// another build in progress holds stays for that build to remove; the
// job's own name (ref: a FROM of its own repository) goes after the push.
// Public base images stay.
func (d *Driver) dropBases(u *untagger, ref string, held, pulled []string, before map[string]string, own string, auths RegistryAuths) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), untagTimeout)
	defer cancel()
	var drop []string
	for _, name := range held {
		private := privateImage(name, own, auths)
		if !d.release(name, private) || !private || normalRef(name) == normalRef(ref) {
			continue
		}
		img, err := localImage(ctx, u.c, name)
		if err == nil && img != nil && img.ID != before[name] {
			drop = append(drop, name)
		}
	}
	named := make([]string, len(held))
	for i, name := range held {
		named[i] = normalRef(name)
	}
	for _, p := range pulled {
		if privateImage(p, own, auths) && !slices.Contains(named, normalRef(p)) && normalRef(p) != normalRef(ref) && !d.isHeld(p) {
			drop = append(drop, p)
		}
	}
	u.remove(drop)
}

// buildKit builds with the daemon's BuildKit (POST /build?version=2, the
// context as the request body) and returns the image id. A build with
// secrets or registry credentials gets a BuildKit session that serves them
// (see startSession); with secrets, the Dockerfile is rewritten on its way
// through the context so that every RUN mounts them (AddSecretMounts).
// Cancelling ctx closes the request, which makes the daemon cancel the
// solve; the build is also cancelled by its build id (POST /build/cancel),
// in case the closed connection does not reach the daemon (a proxy in
// between). BuildKit's steps are no containers of the daemon: there are
// none to remove.
func (d *Driver) buildKit(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, opts build.ImageBuildOptions, auths RegistryAuths, buildContext io.Reader, logs sdk.LogSink) (string, error) {
	opts.BuildID = buildID(spec.GetJobId())
	if len(spec.GetSecrets()) > 0 || len(auths) > 0 {
		s, err := d.startSession(ctx, c, spec, auths)
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
		rewriter = rewriteDockerfile(buildContext, dockerfileNames(spec), func(b []byte) []byte { return AddSecretMounts(b, dests) })
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

// dockerfileNames are the paths the spec's Dockerfile has in the context:
// spec.dockerfile, or Dockerfile by default. The daemon falls back to
// dockerfile only when there is no Dockerfile; ingest always sends the one
// it names, first (the build is refused otherwise, see peekDockerfile).
func dockerfileNames(spec *pluginv1.BuildSpec) []string {
	if name := contextPath(spec.GetDockerfile()); name != "" {
		return []string{name}
	}
	return []string{"Dockerfile"}
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

func buildOptions(spec *pluginv1.BuildSpec, auths RegistryAuths) build.ImageBuildOptions {
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
		ns := cacheMountNS(spec)
		args[CacheMountNSArg] = &ns // the build's own cache mounts only
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
		AuthConfigs: auths.ForDaemon(), // X-Registry-Config, for the classic builder's FROM pulls
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

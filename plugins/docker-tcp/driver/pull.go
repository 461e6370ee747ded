package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/jsonmessage"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// pull makes spec.pull_image (a compose service with only image:) the
// job's image: the daemon pulls it for the spec's platform, with the
// credentials registry_config has for its registry (the job's own token for
// the openBalena registry, own), and tags it <image_ref>:latest for the
// push. When the registry cannot be reached at all but the host holds the
// image already (of the spec's platform), that copy is used and the log
// says so: offline hosts build from what was loaded on them. Never for the
// openBalena registry or a registry the job has credentials for, and never
// after the registry answered (denied, unknown): another job's copy is not
// this job's to take. It returns the image id and whether it was pulled.
func (d *Driver) pull(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, own string, auths registryAuths, logs sdk.LogSink) (string, bool, error) {
	img := spec.GetPullImage()
	named, err := reference.ParseNormalizedNamed(img)
	if err != nil { // validateSpec checked it
		return "", false, fmt.Errorf("job %s: pull_image %q: %v: %w", spec.GetJobId(), img, err, sdk.ErrInvalidArgument)
	}
	domain := reference.Domain(named)
	var auth string
	ac, withCredentials := auths.lookup(domain)
	if withCredentials {
		if auth, err = registry.EncodeAuthConfig(ac); err != nil {
			return "", false, fmt.Errorf("job %s: encode the registry credentials for %s", spec.GetJobId(), domain)
		}
	}
	if err := logs(&pluginv1.Log{Text: "Pulling " + img, Info: true}); err != nil {
		return "", false, err
	}
	pulled := true
	if err := pullImage(ctx, c, img, spec.GetPlatform(), auth, logs); err != nil {
		if ctx.Err() != nil {
			return "", false, canceled(ctx, spec.GetJobId(), err)
		}
		var sinkErr sinkError
		if errors.As(err, &sinkErr) {
			return "", false, sinkErr.err
		}
		reason := shortReason(err)
		if withCredentials || registryHost(domain) == registryHost(own) || !unreachable(err) {
			_ = logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s", img, reason), Error: true})
			return "", false, canceled(ctx, spec.GetJobId(), engineError("pull "+img, err))
		}
		local, ierr := c.ImageInspect(ctx, img)
		if ierr != nil {
			_ = logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s", img, reason), Error: true})
			return "", false, canceled(ctx, spec.GetJobId(), engineError("pull "+img, err))
		}
		if p := spec.GetPlatform(); p != "" && !samePlatform(p, local.Os, local.Architecture, local.Variant) {
			have := platformString(local.Os, local.Architecture, local.Variant)
			_ = logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s; the copy on the host is %s, not %s", img, reason, have, p), Error: true})
			return "", false, fmt.Errorf("pull %s: %s; the copy on the host is %s, not %s", img, reason, have, p)
		}
		if err := logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s (its registry cannot be reached); using the copy on the host", img, reason), Info: true}); err != nil {
			return "", false, err
		}
		pulled = false
	}
	ref := spec.GetImageRef() + ":latest"
	if err := c.ImageTag(ctx, img, ref); err != nil {
		return "", pulled, canceled(ctx, spec.GetJobId(), engineError(fmt.Sprintf("tag %s as %s", img, ref), err))
	}
	inspected, err := c.ImageInspect(ctx, ref)
	if err != nil {
		return "", pulled, canceled(ctx, spec.GetJobId(), engineError("inspect "+ref, err))
	}
	return inspected.ID, pulled, nil
}

// sinkError is an error of the log sink, which ends the build as it is.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }

// pullImage pulls img from the daemon, its progress going to logs like a
// push's.
func pullImage(ctx context.Context, c *client.Client, img, platform, auth string, logs sdk.LogSink) error {
	body, err := c.ImagePull(ctx, img, image.PullOptions{RegistryAuth: auth, Platform: platform})
	if err != nil {
		return err
	}
	defer body.Close()
	var progress progressLines
	return readMessages(body, func(m *jsonmessage.JSONMessage) error {
		if msg := messageError(m); msg != "" {
			return errors.New(msg)
		}
		if m.Status != "" {
			if err := logs(progress.line(m)); err != nil {
				return sinkError{err}
			}
		}
		return nil
	})
}

// shortReason is the first line of a daemon error, without the "Error
// response from daemon: " prefix, and at most 200 bytes.
func shortReason(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "Error response from daemon: "); i >= 0 {
		s = s[i+len("Error response from daemon: "):]
	}
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > 200 {
		s = s[:200] + "…"
	}
	return s
}

// samePlatform tells whether an image of os/arch/variant runs as platform
// ("linux/arm64/v8", "linux/arm/v7"); a variant missing on either side is
// no difference.
func samePlatform(platform, os, arch, variant string) bool {
	parts := strings.Split(platform, "/")
	if len(parts) < 2 {
		return true
	}
	if os == "" {
		os = "linux"
	}
	if !strings.EqualFold(parts[0], os) || !strings.EqualFold(parts[1], arch) {
		return false
	}
	return len(parts) < 3 || variant == "" || strings.EqualFold(parts[2], variant)
}

func platformString(os, arch, variant string) string {
	s := os + "/" + arch
	if variant != "" {
		s += "/" + variant
	}
	return s
}

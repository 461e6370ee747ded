package engine

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
// push; the pulled name is untagged right away (unless another build in
// progress holds it, or the host had it before unchanged and it is no
// private one).
//
// When the registry cannot be reached at all but the host holds an image of
// that very name (never an image found by id), of the spec's platform, that
// copy is used and the log says so: offline hosts build from what was
// loaded on them. Never for the openBalena registry or a registry the job
// has credentials for, and never after the registry answered (denied,
// unknown): another job's copy is not this job's to take. The log says
// which case it was. It returns the image id.
func (d *Driver) pull(ctx context.Context, c *client.Client, spec *pluginv1.BuildSpec, own string, auths RegistryAuths, u *untagger, logs sdk.LogSink) (string, error) {
	img := spec.GetPullImage()
	named, err := reference.ParseNormalizedNamed(img)
	if err != nil { // validateSpec checked it
		return "", fmt.Errorf("job %s: pull_image %q: %v: %w", spec.GetJobId(), img, err, sdk.ErrInvalidArgument)
	}
	domain := reference.Domain(named)
	var auth string
	ac, withCredentials := auths.Lookup(domain)
	if withCredentials {
		if auth, err = registry.EncodeAuthConfig(ac); err != nil {
			return "", fmt.Errorf("job %s: encode the registry credentials for %s", spec.GetJobId(), domain)
		}
	}
	ownRegistry := own != "" && RegistryHost(domain) == RegistryHost(own)
	before, err := localImage(ctx, c, img)
	if err != nil {
		return "", canceled(ctx, spec.GetJobId(), err)
	}
	private := withCredentials || ownRegistry
	d.hold(private, img)
	usedHostCopy := false
	defer func() {
		d.dropPulled(u, img, spec.GetImageRef()+":latest", before, usedHostCopy, private)
	}()
	if err := logs(&pluginv1.Log{Text: "Pulling " + img, Info: true}); err != nil {
		return "", err
	}
	var id string
	for attempt := 1; id == ""; attempt++ {
		if err := fetchImage(ctx, c, named, spec.GetPlatform(), auth, logs); err != nil {
			if ctx.Err() != nil {
				return "", canceled(ctx, spec.GetJobId(), err)
			}
			var sinkErr sinkError
			if errors.As(err, &sinkErr) {
				return "", sinkErr.err
			}
			reason := shortReason(err)
			var refusal string
			switch {
			case namesImageID(img):
				refusal = "it would name an image by its id; images are taken from the host by name only"
			case ownRegistry:
				refusal = "the openBalena registry: its images are pulled with this build's token, never taken from the host"
			case withCredentials:
				refusal = "a registry of the registry secrets: its images are pulled with them, never taken from the host"
			case !unreachable(err):
				refusal = "the registry answered: the host's copy is not used"
			}
			if refusal == "" {
				local, ierr := localImage(ctx, c, img)
				switch {
				case ierr != nil:
					return "", canceled(ctx, spec.GetJobId(), ierr)
				case local == nil:
					refusal = "its registry cannot be reached, and the host has no image of that name"
				case spec.GetPlatform() != "" && !samePlatform(spec.GetPlatform(), local.Os, local.Architecture, local.Variant):
					refusal = fmt.Sprintf("its registry cannot be reached; the copy on the host is %s, not %s",
						platformString(local.Os, local.Architecture, local.Variant), spec.GetPlatform())
				default:
					d.logger.Info("pull_image: registry unreachable, the host's copy used", "job", spec.GetJobId(), "image", img, "error", reason)
					if err := logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s (its registry cannot be reached); using the copy on the host", img, reason), Info: true}); err != nil {
						return "", err
					}
					usedHostCopy = true
					id = local.ID
					continue
				}
			}
			d.logger.Info("pull_image failed, the host's copy not used", "job", spec.GetJobId(), "image", img, "why", refusal, "error", reason)
			_ = logs(&pluginv1.Log{Text: fmt.Sprintf("could not pull %s: %s (%s)", img, reason, refusal), Error: true})
			return "", fmt.Errorf("job %s: pull %s: %s (%s)", spec.GetJobId(), img, reason, refusal)
		}
		// By name: what was pulled, not an image that has an id like it.
		local, err := localImage(ctx, c, img)
		if err != nil {
			return "", canceled(ctx, spec.GetJobId(), err)
		}
		if local != nil {
			id = local.ID
		} else if attempt == 3 {
			// Another builder on the host untagged it between our pull and here.
			return "", fmt.Errorf("job %s: pull %s: the image went from the host right after the pull, three times", spec.GetJobId(), img)
		}
	}
	ref := spec.GetImageRef() + ":latest"
	if err := c.ImageTag(ctx, id, ref); err != nil {
		return "", canceled(ctx, spec.GetJobId(), engineError(fmt.Sprintf("tag %s as %s", img, ref), err))
	}
	return id, nil
}

// dropPulled releases the hold on a pull_image name and untags it when no
// other build holds it, unless it is the host's own: its copy was used for
// want of the registry, or the host had it before, unchanged, and it is no
// private image (which the host must not keep). The job's own name (ref)
// goes later, after the push.
func (d *Driver) dropPulled(u *untagger, img, ref string, before *image.InspectResponse, usedHostCopy, private bool) {
	if !d.release(img, private) || usedHostCopy || normalRef(img) == normalRef(ref) {
		return
	}
	if !private && before != nil {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), untagTimeout)
		defer cancel()
		if now, err := localImage(ctx, u.c, img); err != nil || now == nil || now.ID == before.ID {
			return // as it was
		}
	}
	u.remove([]string{img})
}

// sinkError is an error of the log sink, which ends the build as it is.
type sinkError struct{ err error }

func (e sinkError) Error() string { return e.err.Error() }

// fetchImage pulls named. An image named by digest is first asked of the
// registry (distribution inspect, with auth): the daemon's pull would take
// it from the host's manifest store without asking the registry for access
// when another build pulled it before (see checkPinned).
func fetchImage(ctx context.Context, c *client.Client, named reference.Named, platform, auth string, logs sdk.LogSink) error {
	if _, pinned := named.(reference.Canonical); pinned {
		if _, err := c.DistributionInspect(ctx, named.String(), auth); err != nil {
			return err
		}
	}
	return pullImage(ctx, c, named.String(), platform, auth, logs)
}

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
// response from daemon: " prefix, and at most 200 bytes. A first line
// that only announces a list ("errors:", a registry's) gets the list's
// first item.
func shortReason(err error) string {
	s := err.Error()
	if i := strings.LastIndex(s, "Error response from daemon: "); i >= 0 {
		s = s[i+len("Error response from daemon: "):]
	}
	s, rest, _ := strings.Cut(strings.TrimSpace(s), "\n")
	if next, _, _ := strings.Cut(strings.TrimSpace(rest), "\n"); strings.HasSuffix(s, ":") && next != "" {
		s += " " + next
	}
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

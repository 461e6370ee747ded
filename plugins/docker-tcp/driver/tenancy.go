package driver

// One Docker host builds for many tenants. What one job pulls or builds
// must not become usable by another job through the host's image store:
//
//   - Images of the openBalena registry (the registry of the job's image_ref)
//     are pulled with the job's own registry token, which the registry
//     scopes to the job's own repository: another fleet's image cannot be
//     pulled, and a failed pull never falls back to a copy on the host.
//   - A build whose FROM names the openBalena registry, or a registry the
//     job has credentials for (registry secrets), pulls its base images
//     fresh (PullParent), with the job's credentials, instead of using a
//     copy another job left on the host.
//   - A pull_image falls back to the host's copy only when the registry
//     could not be reached at all (the offline case), never after the
//     registry answered, and never for those registries.
//   - After the push (or a failure), the job's tags are removed: the built
//     image_ref:latest (and its digest reference), the pulled pull_image, and
//     the base images it pulled fresh. A built image stays, for the layer
//     cache (the classic builder's last step is the image itself), under a
//     name made of its own id (obb-cache/<id>): whoever can name it has it.
//
// What the host still shares between jobs is the layer cache: the classic
// builder's intermediate images and BuildKit's cache records. A
// cache hit needs the same parent image (by content id) and the same
// instruction (and, for COPY/ADD, the same file checksums); a job that
// cannot name or pull the parent (its tags are gone, and its registry
// refuses the job) never reaches the cached layers built on it, and an image
// id is a content hash nobody can guess without having the image.

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"regexp"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"
)

// maxPeekBytes bounds what is held in memory while looking for the
// Dockerfile at the start of the build context (ingest sends it first).
const maxPeekBytes = maxDockerfileSize + 1<<20

// untagTimeout bounds the removal of a job's tags after the job.
const untagTimeout = 30 * time.Second

// registryDomain is the registry of an image reference ("" if it is not
// one).
func registryDomain(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

// withJobToken returns auths with the openBalena registry (domain) given
// the job's own token, whatever registry_config said about it.
func withJobToken(auths registryAuths, domain, token string) registryAuths {
	if domain == "" || token == "" {
		return auths
	}
	out := make(registryAuths, len(auths)+1)
	for k, v := range auths {
		if registryHost(k) != registryHost(domain) {
			out[k] = v
		}
	}
	out[domain] = registry.AuthConfig{RegistryToken: token, ServerAddress: domain}
	return out
}

// unreachable tells whether a pull failed because the registry could not
// be reached at all (no answer), as opposed to an answer (denied, unknown,
// unauthorized).
func unreachable(err error) bool {
	msg := strings.ToLower(err.Error())
	for _, s := range []string{"dial tcp", "no such host", "connection refused", "i/o timeout", "network is unreachable",
		"tls handshake timeout", "server misbehaving", "connection reset", "no route to host", "temporary failure in name resolution"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// peekDockerfile reads the build context until the Dockerfile (one of
// names) and returns its content and a reader of the whole context,
// unchanged. Ingest sends the Dockerfile first; when it is not among the
// first maxPeekBytes, ok is false (and the context is still whole).
func peekDockerfile(src io.Reader, names []string) (dockerfile []byte, whole io.Reader, ok bool, err error) {
	var seen bytes.Buffer
	lim := &io.LimitedReader{R: src, N: maxPeekBytes}
	tr := tar.NewReader(io.TeeReader(lim, &seen))
	for {
		hdr, err := tr.Next()
		if err != nil {
			// The end, a damaged tar or too far: the daemon will judge.
			return nil, io.MultiReader(&seen, src), false, nil
		}
		if isDockerfileEntry(hdr.Name, names) && hdr.Size <= maxDockerfileSize {
			body, err := io.ReadAll(tr)
			if err != nil {
				return nil, io.MultiReader(&seen, src), false, nil
			}
			return body, io.MultiReader(&seen, src), true, nil
		}
	}
}

var (
	fromRE  = regexp.MustCompile(`(?i)^\s*FROM\s+(.*)$`)
	argRE   = regexp.MustCompile(`(?i)^\s*ARG\s+([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$`)
	varRE   = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-+][^}]*)?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)
	stageRE = regexp.MustCompile(`(?i)\s+AS\s+(\S+)\s*$`)
)

// baseImages lists the images a Dockerfile's FROM lines name, with global
// ARGs and build args substituted; stage names and scratch are left out.
// unresolved is true when a FROM could not be resolved to an image name.
func baseImages(dockerfile []byte, buildArgs map[string]string) (images []string, unresolved bool) {
	args := map[string]string{}
	stages := map[string]bool{}
	seenFrom := false
	sc := bufio.NewScanner(bytes.NewReader(joinContinuations(dockerfile)))
	sc.Buffer(make([]byte, 64<<10), maxDockerfileSize)
	for sc.Scan() {
		line := sc.Text()
		if m := argRE.FindStringSubmatch(line); m != nil && !seenFrom {
			v, given := buildArgs[m[1]]
			if !given {
				v = strings.Trim(strings.TrimSpace(m[2]), `"'`)
			}
			args[m[1]] = v
			continue
		}
		m := fromRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		seenFrom = true
		rest := m[1]
		if s := stageRE.FindStringSubmatch(rest); s != nil {
			stages[strings.ToLower(s[1])] = true
			rest = rest[:len(rest)-len(s[0])]
		}
		var img string
		for _, f := range strings.Fields(rest) {
			if !strings.HasPrefix(f, "--") {
				img = f
				break
			}
		}
		img = varRE.ReplaceAllStringFunc(img, func(v string) string {
			name := strings.Trim(v, "${}")
			if i := strings.IndexAny(name, ":-+"); i >= 0 {
				name = name[:i]
			}
			return args[name]
		})
		switch {
		case img == "" || strings.Contains(img, "$"):
			unresolved = true
		case strings.EqualFold(img, "scratch"), stages[strings.ToLower(img)]:
		default:
			if _, err := reference.ParseNormalizedNamed(img); err != nil {
				unresolved = true
				continue
			}
			images = append(images, img)
		}
	}
	return images, unresolved
}

// joinContinuations joins lines ending in a backslash.
func joinContinuations(b []byte) []byte {
	return regexp.MustCompile(`\\\r?\n`).ReplaceAll(b, nil)
}

// pullFresh tells whether a build must pull its base images fresh: a FROM
// names the openBalena registry or a registry the job has credentials for,
// or cannot be resolved (it may be either). It returns the images pulled
// fresh (to remove after the job).
func pullFresh(images []string, unresolved bool, ownRegistry string, auths registryAuths) (bool, []string) {
	fresh := unresolved
	for _, img := range images {
		d := registryDomain(img)
		if registryHost(d) == registryHost(ownRegistry) {
			fresh = true
			continue
		}
		if _, ok := auths.lookup(d); ok {
			fresh = true
		}
	}
	if !fresh {
		return false, nil
	}
	return true, images
}

// cacheName is the name a built image is kept under for the layer cache:
// its own content id, which nobody can know without having the image.
func cacheName(imageID string) string {
	return "obb-cache/" + strings.TrimPrefix(imageID, "sha256:") + ":latest"
}

// untag removes a job's tags from the host, in a context of its own (the
// job's may be cancelled), keeping the image built (if any) under its
// cacheName. A tag another job holds too is removed anyway: that job pulls
// or tags again; an image stays while a tag or a child uses it
// (PruneChildren off keeps the layer cache).
func (d *Driver) untag(ctx context.Context, c *client.Client, jobID, built string, refs []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), untagTimeout)
	defer cancel()
	if built != "" {
		if err := c.ImageTag(ctx, built, cacheName(built)); err != nil && !cerrdefs.IsNotFound(err) {
			d.logger.Warn("keep a built image for the layer cache", "job", jobID, "image", built, "error", err)
		}
	}
	for _, ref := range refs {
		_, err := c.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: false})
		if err != nil && !cerrdefs.IsNotFound(err) {
			d.logger.Warn("remove a job's tag from the host", "job", jobID, "ref", ref, "error", errors.Unwrap(err))
		}
	}
}

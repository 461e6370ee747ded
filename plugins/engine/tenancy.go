package engine

// Tenants on a shared host: see the package documentation (doc.go) for
// what is kept apart and what the layer cache still shares.

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/registry"
	"github.com/docker/docker/client"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
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
func withJobToken(auths RegistryAuths, domain, token string) RegistryAuths {
	if domain == "" || token == "" {
		return auths
	}
	out := make(RegistryAuths, len(auths)+1)
	for k, v := range auths {
		if RegistryHost(k) != RegistryHost(domain) {
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

// imageIDRE matches what the daemon's image store takes as an image id
// or a prefix of one, of any length: "5", "59753f", "sha256:5975…". The
// classic builder resolves a FROM or COPY --from that is no tag on the host
// by id prefix, and so does image inspect: such a name reaches any image on
// the host, another tenant's intermediate images included.
var imageIDRE = regexp.MustCompile(`^(?:sha256:)?[0-9a-f]+$`)

// namesImageID tells whether an image name would be resolved by the
// daemon as an image id (prefix) when no tag of that name exists.
func namesImageID(name string) bool { return imageIDRE.MatchString(name) }

// peekDockerfile reads the build context until the Dockerfile (one of
// names) and returns its content and a reader of the whole context,
// unchanged. Ingest sends the Dockerfile first. The error says why the
// Dockerfile could not be read: not among the first maxPeekBytes, not a
// regular file (a link: the daemon would build another file than the one
// read), too big, or a damaged archive; the context is whole then too.
func peekDockerfile(src io.Reader, names []string) (dockerfile []byte, whole io.Reader, err error) {
	var seen bytes.Buffer
	lim := &io.LimitedReader{R: src, N: maxPeekBytes}
	tr := tar.NewReader(io.TeeReader(lim, &seen))
	whole = io.MultiReader(&seen, src)
	for {
		hdr, err := tr.Next()
		switch {
		case errors.Is(err, io.EOF):
			return nil, whole, fmt.Errorf("the build context has no Dockerfile %s", names[0])
		case err != nil && lim.N <= 0:
			return nil, whole, fmt.Errorf("the Dockerfile %s is not within the first %d MiB of the build context", names[0], maxPeekBytes>>20)
		case err != nil:
			return nil, whole, fmt.Errorf("read the build context: %v", err)
		}
		if !isDockerfileEntry(hdr.Name, names) {
			continue
		}
		switch {
		case hdr.Typeflag != tar.TypeReg && hdr.Typeflag != tar.TypeRegA: //nolint:staticcheck // old tars
			return nil, whole, fmt.Errorf("the Dockerfile %s is not a regular file in the build context (type %q): it must be one on a shared build host", hdr.Name, string(hdr.Typeflag))
		case hdr.Size > maxDockerfileSize:
			return nil, whole, fmt.Errorf("the Dockerfile %s is %d bytes, more than %d", hdr.Name, hdr.Size, maxDockerfileSize)
		}
		body, err := io.ReadAll(tr)
		if err != nil {
			return nil, whole, fmt.Errorf("read the Dockerfile %s: %v", hdr.Name, err)
		}
		return body, whole, nil
	}
}

// dockerfileImages is what a Dockerfile takes from images: the names that
// FROM, COPY --from (ADD --from) and RUN --mount from= give, with global
// ARGs and build args substituted; stage names, stage indexes and scratch
// are left out.
type dockerfileImages struct {
	names      []string // image names, as the daemon will see them
	unresolved []string // names that could not be made an image name
}

var (
	escapeDirectiveRE = regexp.MustCompile(`(?i)^#\s*escape\s*=\s*(\S)\s*$`)
	varRE             = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-+])([^}]*))?\}|\$([A-Za-z_][A-Za-z0-9_]*)`)
)

// baseImages lists the images a Dockerfile takes from. buildArgs override
// the defaults of the global ARGs (those before the first FROM), which are
// the only variables a FROM sees.
func baseImages(dockerfile []byte, buildArgs map[string]string) dockerfileImages {
	var out dockerfileImages
	args := map[string]string{}
	declared := map[string]bool{}
	lines := instructionLines(dockerfile)
	// Stage names: FROM sees those of earlier stages only, --from all.
	allStages := map[string]bool{}
	for _, line := range lines {
		if kw, rest := keyword(line); kw == "from" {
			if _, stage := splitFrom(rest); stage != "" {
				allStages[strings.ToLower(stage)] = true
			}
		}
	}
	stages := map[string]bool{}
	seenFrom := false
	add := func(name string, isStage func(string) bool) {
		switch {
		case name == "" || strings.Contains(name, "$"):
			out.unresolved = append(out.unresolved, name)
		case strings.EqualFold(name, "scratch"), isStage(name):
		default:
			if _, err := reference.ParseNormalizedNamed(name); err != nil && !namesImageID(name) {
				out.unresolved = append(out.unresolved, name)
				return
			}
			if !slices.Contains(out.names, name) {
				out.names = append(out.names, name)
			}
		}
	}
	for _, line := range lines {
		kw, rest := keyword(line)
		switch kw {
		case "arg":
			if seenFrom {
				continue
			}
			for _, f := range strings.Fields(rest) {
				name, def, _ := strings.Cut(f, "=")
				v, given := buildArgs[name]
				if !given {
					v = unquote(def)
				}
				args[name], declared[name] = v, true
			}
		case "from":
			seenFrom = true
			img, stage := splitFrom(rest)
			raw := img
			img = expand(img, args, declared)
			if img == "" && raw != "" {
				img = raw // keeps the $: unresolved
			}
			add(img, func(n string) bool { return stages[strings.ToLower(n)] })
			if stage != "" {
				stages[strings.ToLower(stage)] = true
			}
		case "copy", "add":
			for _, f := range strings.Fields(rest) {
				if !strings.HasPrefix(f, "--") {
					break
				}
				if v, ok := strings.CutPrefix(f, "--from="); ok {
					addFrom(unquote(v), allStages, add)
				}
			}
		case "run":
			for _, f := range strings.Fields(rest) {
				if !strings.HasPrefix(f, "--") {
					break
				}
				v, ok := strings.CutPrefix(f, "--mount=")
				if !ok {
					continue
				}
				for _, kv := range strings.Split(unquote(v), ",") {
					if k, val, ok := strings.Cut(unquote(kv), "="); ok && strings.EqualFold(k, "from") {
						addFrom(unquote(val), allStages, add)
					}
				}
			}
		}
	}
	return out
}

// addFrom adds the image of a --from (or mount from=): a stage name or a
// stage index is none.
func addFrom(v string, stages map[string]bool, add func(string, func(string) bool)) {
	if _, err := strconv.Atoi(v); err == nil && v != "" {
		return // a stage index
	}
	add(v, func(n string) bool { return stages[strings.ToLower(n)] })
}

// instructionLines returns a Dockerfile's instructions, one a line, with
// continuation lines joined and comments left out (the escape directive
// is honoured).
func instructionLines(dockerfile []byte) []string {
	text := strings.ReplaceAll(string(dockerfile), "\r\n", "\n")
	lines := strings.Split(text, "\n")
	escape := "\\"
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if !strings.HasPrefix(t, "#") {
			break
		}
		if m := escapeDirectiveRE.FindStringSubmatch(t); m != nil {
			escape = m[1]
		}
	}
	var out []string
	var cur strings.Builder
	continued := false
	for _, l := range lines {
		t := strings.TrimSpace(l)
		if t == "" || strings.HasPrefix(t, "#") {
			continue // inside a continuation too: Docker skips them
		}
		if r := strings.TrimRightFunc(l, unicode.IsSpace); strings.HasSuffix(r, escape) {
			cur.WriteString(strings.TrimSuffix(r, escape))
			cur.WriteByte(' ')
			continued = true
			continue
		}
		cur.WriteString(l)
		out = append(out, cur.String())
		cur.Reset()
		continued = false
	}
	if continued {
		out = append(out, cur.String())
	}
	return out
}

// keyword splits an instruction line into its keyword (lower case) and the
// rest.
func keyword(line string) (string, string) {
	f := strings.TrimSpace(line)
	i := strings.IndexFunc(f, unicode.IsSpace)
	if i < 0 {
		return strings.ToLower(f), ""
	}
	return strings.ToLower(f[:i]), strings.TrimSpace(f[i:])
}

// splitFrom returns the image and the stage name ("AS name") of FROM's
// arguments, flags (--platform) left out.
func splitFrom(rest string) (img, stage string) {
	var words []string
	for _, f := range strings.Fields(rest) {
		if len(words) == 0 && strings.HasPrefix(f, "--") {
			continue
		}
		words = append(words, f)
	}
	if len(words) == 0 {
		return "", ""
	}
	if len(words) >= 3 && strings.EqualFold(words[1], "as") {
		stage = words[2]
	}
	return words[0], stage
}

// expand substitutes $VAR, ${VAR}, ${VAR:-word} and ${VAR:+word} with the
// global ARGs. A variable that is not declared stays as it is (the name
// is then unresolved).
func expand(s string, args map[string]string, declared map[string]bool) string {
	return varRE.ReplaceAllStringFunc(s, func(m string) string {
		sub := varRE.FindStringSubmatch(m)
		name := sub[1] + sub[4]
		v, set := args[name], declared[name]
		switch sub[2] {
		case ":-", "-":
			if v == "" && (sub[2] == ":-" || !set) {
				return expand(sub[3], args, declared)
			}
		case ":+", "+":
			if v != "" || sub[2] == "+" && set {
				return expand(sub[3], args, declared)
			}
			return ""
		}
		if !set {
			return m
		}
		return v
	})
}

func unquote(s string) string {
	s = strings.TrimSpace(s)
	if len(s) >= 2 && (s[0] == '"' || s[0] == '\'') && s[len(s)-1] == s[0] {
		return s[1 : len(s)-1]
	}
	return s
}

// syntaxDirectiveRE is a parser directive naming the BuildKit frontend.
var syntaxDirectiveRE = regexp.MustCompile(`(?i)^#\s*syntax\s*=\s*(\S+)\s*$`)

// frontend returns the BuildKit frontend a build asks for: the syntax
// directive among the comments at the head of the Dockerfile (any of them:
// more than Docker takes as directives), or the BUILDKIT_SYNTAX build arg;
// "" for the daemon's own.
func frontend(dockerfile []byte, buildArgs map[string]string) string {
	if v := buildArgs["BUILDKIT_SYNTAX"]; v != "" {
		return v
	}
	for _, l := range strings.Split(string(dockerfile), "\n") {
		t := strings.TrimSpace(l)
		if t != "" && !strings.HasPrefix(t, "#") {
			break
		}
		if m := syntaxDirectiveRE.FindStringSubmatch(t); m != nil {
			return m[1]
		}
	}
	return ""
}

// OfficialFrontend tells whether a frontend image is Docker's Dockerfile
// frontend, which builds what the Dockerfile says and nothing else (any
// tag or digest).
func OfficialFrontend(img string) bool {
	named, err := reference.ParseNormalizedNamed(img)
	if err != nil {
		return false
	}
	switch named.Name() {
	case "docker.io/docker/dockerfile", "docker.io/docker/dockerfile-upstream":
		return true
	}
	return false
}

// CacheMountNSArg is the build arg that namespaces a BuildKit build's
// cache mounts (RUN --mount=type=cache): without it, every build on the
// daemon shares a cache directory by its id (the target path by default),
// so one tenant reads and writes what another left there.
const CacheMountNSArg = "BUILDKIT_CACHE_MOUNT_NS"

// cacheMountNS is the namespace of a build's cache mounts: the build's
// own (its image_ref, unique per build), whatever the build args say.
func cacheMountNS(spec *pluginv1.BuildSpec) string {
	return "obb/" + spec.GetImageRef()
}

// privateImage tells whether an image is one the job may only have with
// its own credentials: on the openBalena registry (own) or on a registry
// of the registry secrets.
func privateImage(name, own string, auths RegistryAuths) bool {
	if namesImageID(name) {
		return false
	}
	d := registryDomain(name)
	if d == "" {
		return false
	}
	if own != "" && RegistryHost(d) == RegistryHost(own) {
		return true
	}
	_, ok := auths.Lookup(d)
	return ok
}

// freshReason tells why the build must pull its base images fresh
// (PullParent), by what the Dockerfile names alone; "" when that does not
// ask for it. held tells whether another build in progress pulled a name
// privately.
func freshReason(imgs dockerfileImages, own string, auths RegistryAuths, held func(string) bool) string {
	if len(imgs.unresolved) > 0 {
		return fmt.Sprintf("%q cannot be resolved to an image name (it may be a private one)", imgs.unresolved[0])
	}
	for _, name := range imgs.names {
		switch d := registryDomain(name); {
		case namesImageID(name):
			return fmt.Sprintf("%q would name an image by its id: images are taken from the host by name only", name)
		case own != "" && RegistryHost(d) == RegistryHost(own):
			return fmt.Sprintf("%s is on the openBalena registry: pulled with this build's token", name)
		case privateImage(name, own, auths):
			return fmt.Sprintf("%s is on %s, a registry of the registry secrets: pulled with them", name, d)
		case held(name):
			return fmt.Sprintf("%s was pulled with credentials by another build in progress: pulled again with this build's", name)
		}
	}
	return ""
}

// hostReason tells why the build must pull its base images fresh, by what
// the host holds: an image that is not on the host (for the platform) is
// pulled anyway, and an image whose ONBUILD triggers take from another
// image (COPY --from) would have the classic builder look that one up on
// the host, by id too. "" when the host's copies can be used.
func hostReason(ctx context.Context, c *client.Client, names []string, platform string) (string, error) {
	for _, name := range names {
		img, err := localImage(ctx, c, name)
		if err != nil {
			return "", err
		}
		if img == nil {
			return fmt.Sprintf("%s is not on the host", name), nil
		}
		if platform != "" && !samePlatform(platform, img.Os, img.Architecture, img.Variant) {
			return fmt.Sprintf("the host's %s is not for %s", name, platform), nil
		}
		if img.Config != nil {
			for _, trigger := range img.Config.OnBuild {
				if t := strings.ToLower(trigger); strings.Contains(t, "--from") || strings.Contains(t, "from=") {
					return fmt.Sprintf("%s has ONBUILD triggers that take from other images", name), nil
				}
			}
		}
	}
	return "", nil
}

// localImage returns the host's image named ref, by that name only, never
// by an id (prefix); nil when the host has no image of that name.
func localImage(ctx context.Context, c *client.Client, ref string) (*image.InspectResponse, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil || namesImageID(ref) {
		return nil, nil
	}
	img, err := c.ImageInspect(ctx, ref)
	if cerrdefs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, engineError("inspect "+ref, err)
	}
	if !hasName(img, named) {
		return nil, nil
	}
	return &img, nil
}

// hasName tells whether img is tagged (or digest-referenced) as named.
func hasName(img image.InspectResponse, named reference.Named) bool {
	want := reference.TagNameOnly(named)
	canonical, byDigest := named.(reference.Canonical)
	for _, s := range slices.Concat(img.RepoTags, img.RepoDigests) {
		n, err := reference.ParseNormalizedNamed(s)
		if err != nil {
			continue
		}
		if byDigest {
			if c, ok := n.(reference.Canonical); ok && c.Name() == canonical.Name() && c.Digest() == canonical.Digest() {
				return true
			}
			continue
		}
		if n.String() == want.String() {
			return true
		}
	}
	return false
}

// normalRef is the key a name is held under: normalized, with a tag.
func normalRef(name string) string {
	named, err := reference.ParseNormalizedNamed(name)
	if err != nil {
		return name
	}
	return reference.TagNameOnly(named).String()
}

// holds counts the builds in progress that pull an image: all of them,
// and those that pull it privately (with registry credentials, or from the
// openBalena registry).
type holds struct{ all, private int }

// hold notes that a build in progress pulls (or pulled) refs: its tag
// stays until the last build holding it is over, and, when private (pulled
// with credentials the next build may not have), another build naming one
// pulls it fresh.
func (d *Driver) hold(private bool, refs ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, r := range refs {
		h := d.held[normalRef(r)]
		h.all++
		if private {
			h.private++
		}
		d.held[normalRef(r)] = h
	}
}

// release undoes a hold and tells whether no build holds ref any more.
func (d *Driver) release(ref string, private bool) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := normalRef(ref)
	h := d.held[k]
	if h.all <= 1 {
		delete(d.held, k)
		return true
	}
	h.all--
	if private && h.private > 0 {
		h.private--
	}
	d.held[k] = h
	return false
}

// isHeld tells whether a build in progress holds ref.
func (d *Driver) isHeld(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[normalRef(ref)].all > 0
}

// heldPrivately tells whether a build in progress pulled ref with
// credentials: the host's copy may be one this build must not take.
func (d *Driver) heldPrivately(ref string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.held[normalRef(ref)].private > 0
}

// cacheName is the name a classic-builder image is kept under for the
// layer cache: its own content id, which nobody can know without having
// the image.
func cacheName(imageID string) string {
	return "obb-cache/" + strings.TrimPrefix(imageID, "sha256:") + ":latest"
}

// untagger removes a job's tags from the host, in a context of its own
// (the job's may be cancelled), bounded by untagTimeout. Refs held (see
// hold) are released, and removed only when no other build holds them.
type untagger struct {
	d     *Driver
	c     *client.Client
	jobID string
	ctx   context.Context // the job's, for its values only
}

// remove removes refs; an image stays while another tag or a child uses
// it (PruneChildren off keeps the layer cache). "No such image" is fine.
func (u *untagger) remove(refs []string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), untagTimeout)
	defer cancel()
	for _, ref := range refs {
		_, err := u.c.ImageRemove(ctx, ref, image.RemoveOptions{PruneChildren: false})
		if err != nil && !cerrdefs.IsNotFound(err) {
			u.d.logger.Warn("remove a job's tag from the host", "job", u.jobID, "ref", ref, "error", err)
		}
	}
}

// keep tags a classic-builder image under its cacheName, so that removing
// the job's name leaves it (and its parents) for the layer cache.
func (u *untagger) keep(imageID string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(u.ctx), untagTimeout)
	defer cancel()
	if err := u.c.ImageTag(ctx, imageID, cacheName(imageID)); err != nil && !cerrdefs.IsNotFound(err) {
		u.d.logger.Warn("keep a built image for the layer cache", "job", u.jobID, "image", imageID, "error", err)
	}
}

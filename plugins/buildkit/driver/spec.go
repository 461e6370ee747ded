package driver

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/session/secrets/secretsprovider"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// validateSpec checks what Build needs before it talks to buildkitd.
func validateSpec(spec *pluginv1.BuildSpec) error {
	if spec.GetJobId() == "" {
		return fmt.Errorf("build spec: job_id is empty: %w", sdk.ErrInvalidArgument)
	}
	if spec.GetHost().GetEndpoint() == "" {
		return fmt.Errorf("job %s: host endpoint is empty: %w", spec.GetJobId(), sdk.ErrInvalidArgument)
	}
	named, err := reference.ParseNormalizedNamed(spec.GetImageRef())
	if err != nil {
		return fmt.Errorf("job %s: image_ref %q: %v: %w", spec.GetJobId(), spec.GetImageRef(), err, sdk.ErrInvalidArgument)
	}
	if !reference.IsNameOnly(named) {
		return fmt.Errorf("job %s: image_ref %q must have no tag or digest (the tag is latest): %w", spec.GetJobId(), spec.GetImageRef(), sdk.ErrInvalidArgument)
	}
	if ref := spec.GetCacheRef(); ref != "" {
		if _, err := reference.ParseNormalizedNamed(ref); err != nil {
			return fmt.Errorf("job %s: cache_ref %q: %v: %w", spec.GetJobId(), ref, err, sdk.ErrInvalidArgument)
		}
	}
	if img := spec.GetPullImage(); img != "" {
		if _, err := reference.ParseNormalizedNamed(img); err != nil {
			return fmt.Errorf("job %s: pull_image %q: %v: %w", spec.GetJobId(), img, err, sdk.ErrInvalidArgument)
		}
		return nil
	}
	return validateSecrets(spec)
}

// secretDestRE is a secret's path under /run/secrets: relative, of plain
// names (no blanks, commas or quotes: it goes into a RUN --mount flag).
var secretDestRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

// validateSecrets checks the build secrets: each needs a distinct plain
// path and fits BuildKit's size limit.
func validateSecrets(spec *pluginv1.BuildSpec) error {
	seen := make(map[string]bool, len(spec.GetSecrets()))
	for _, s := range spec.GetSecrets() {
		dest := s.GetDest()
		parts := strings.Split(dest, "/")
		if !secretDestRE.MatchString(dest) || slices.Contains(parts, ".") || slices.Contains(parts, "..") {
			return fmt.Errorf("job %s: build secret dest %q: want a relative path of letters, digits, '.', '_' and '-' (mounted at %s<dest>): %w",
				spec.GetJobId(), dest, engine.SecretsDir, sdk.ErrInvalidArgument)
		}
		if seen[dest] {
			return fmt.Errorf("job %s: build secret dest %q given twice: %w", spec.GetJobId(), dest, sdk.ErrInvalidArgument)
		}
		seen[dest] = true
		if n := len(s.GetContent()); n > secretsprovider.MaxSecretSize {
			return fmt.Errorf("job %s: build secret %q is %d bytes; BuildKit takes at most %d: %w", spec.GetJobId(), dest, n, secretsprovider.MaxSecretSize, sdk.ErrInvalidArgument)
		}
	}
	return nil
}

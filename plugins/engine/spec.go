package engine

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/session/secrets/secretsprovider"

	"github.com/open-balena-builder/builder/platform/hostrules"
	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// validateSpec checks what Build needs before it talks to the daemon.
func validateSpec(spec *pluginv1.BuildSpec) error {
	if err := ValidateBaseSpec(spec); err != nil || spec.GetPullImage() != "" {
		// With pull_image nothing is built: the secrets and the target do
		// not apply.
		return err
	}
	return validateSecrets(spec)
}

// ValidateBaseSpec checks what every BuildKit or Engine build needs: a job
// id, a host endpoint, an image_ref without tag or digest, a network mode,
// and a pull_image that parses.
func ValidateBaseSpec(spec *pluginv1.BuildSpec) error {
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
	if m := spec.GetHost().GetNetworkMode(); !hostrules.ValidNetworkMode(m) {
		return fmt.Errorf("job %s: host network_mode %q: use none, host, default or a network name: %w", spec.GetJobId(), m, sdk.ErrInvalidArgument)
	}
	if img := spec.GetPullImage(); img != "" {
		if _, err := reference.ParseNormalizedNamed(img); err != nil {
			return fmt.Errorf("job %s: pull_image %q: %v: %w", spec.GetJobId(), img, err, sdk.ErrInvalidArgument)
		}
	}
	return nil
}

// secretDestRE is a secret's path under /run/secrets: relative, of plain
// names (no blanks, commas or quotes: it goes into a RUN --mount flag).
var secretDestRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)

// validateSecrets checks the build secrets: only BuildKit can mount them,
// each needs a distinct plain path and fits BuildKit's size limit.
func validateSecrets(spec *pluginv1.BuildSpec) error {
	secrets := spec.GetSecrets()
	if len(secrets) == 0 {
		return nil
	}
	if !spec.GetHost().GetBuildkit() {
		return fmt.Errorf("job %s: build secrets need BuildKit: host %q uses the classic builder; set DOCKER_BUILDKIT=1 or buildkit: true for this host: %w",
			spec.GetJobId(), spec.GetHost().GetName(), sdk.ErrInvalidArgument)
	}
	return ValidateSecretDests(spec)
}

// ValidateSecretDests checks a build's secrets for any BuildKit: each
// needs a distinct plain path under SecretsDir and fits BuildKit's size
// limit.
func ValidateSecretDests(spec *pluginv1.BuildSpec) error {
	secrets := spec.GetSecrets()
	seen := make(map[string]bool, len(secrets))
	for _, s := range secrets {
		dest := s.GetDest()
		if !secretDestRE.MatchString(dest) || slices.Contains(strings.Split(dest, "/"), ".") || slices.Contains(strings.Split(dest, "/"), "..") {
			return fmt.Errorf("job %s: build secret dest %q: want a relative path of letters, digits, '.', '_' and '-' (mounted at %s<dest>): %w",
				spec.GetJobId(), dest, SecretsDir, sdk.ErrInvalidArgument)
		}
		if seen[dest] {
			return fmt.Errorf("job %s: build secret dest %q given twice: %w", spec.GetJobId(), dest, sdk.ErrInvalidArgument)
		}
		seen[dest] = true
		if n := len(s.GetContent()); n > maxSecretSize {
			return fmt.Errorf("job %s: build secret %q is %d bytes; BuildKit takes at most %d: %w", spec.GetJobId(), dest, n, maxSecretSize, sdk.ErrInvalidArgument)
		}
	}
	return nil
}

// maxSecretSize is BuildKit's limit on the size of a secret.
const maxSecretSize = secretsprovider.MaxSecretSize

package driver

import (
	"fmt"

	"github.com/distribution/reference"

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

// validateSecrets checks the build secrets as the engine does for any
// BuildKit.
func validateSecrets(spec *pluginv1.BuildSpec) error { return engine.ValidateSecretDests(spec) }

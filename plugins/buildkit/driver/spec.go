package driver

import (
	"fmt"

	"github.com/distribution/reference"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// validateSpec checks what Build needs before it talks to buildkitd: what
// every build needs (the engine's rule), a cache_ref that parses and the
// secrets.
func validateSpec(spec *pluginv1.BuildSpec) error {
	if err := engine.ValidateBaseSpec(spec); err != nil {
		return err
	}
	if ref := spec.GetCacheRef(); ref != "" {
		if _, err := reference.ParseNormalizedNamed(ref); err != nil {
			return fmt.Errorf("job %s: cache_ref %q: %v: %w", spec.GetJobId(), ref, err, sdk.ErrInvalidArgument)
		}
	}
	if spec.GetPullImage() != "" {
		return nil
	}
	return validateSecrets(spec)
}

// validateSecrets checks the build secrets as the engine does for any
// BuildKit.
func validateSecrets(spec *pluginv1.BuildSpec) error { return engine.ValidateSecretDests(spec) }

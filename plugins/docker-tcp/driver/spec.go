package driver

import (
	"fmt"

	"github.com/distribution/reference"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// validateSpec checks what Build needs before it talks to the daemon.
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
	return nil
}

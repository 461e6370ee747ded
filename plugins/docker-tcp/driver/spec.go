package driver

import (
	"fmt"
	"regexp"

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
	if m := spec.GetHost().GetNetworkMode(); !validNetworkMode(m) {
		return fmt.Errorf("job %s: host network_mode %q: use none, host, default or a network name: %w", spec.GetJobId(), m, sdk.ErrInvalidArgument)
	}
	return nil
}

// networkNameRE is what Docker accepts as a network name; "none", "host"
// and "default" are names too.
var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// validNetworkMode tells whether m is a network mode for RUN steps: "" (the
// daemon's default), "none", "host", "default" or a network name.
func validNetworkMode(m string) bool {
	return m == "" || networkNameRE.MatchString(m)
}

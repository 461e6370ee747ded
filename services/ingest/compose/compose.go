// Package compose reads a balena project's docker-compose file with
// compose-go (the library balena's own @balena/compose-parser is built on)
// and applies balena's composition rules: the keys balena denies, the bind
// mounts it turns into io.balena.features.* labels, the short syntax the
// device supervisor expects, and the image contract from the
// io.balena.features.requires.* labels.
//
// The result is the composition stored as release.composition, and one
// Service per compose service: what to build or pull, and the labels,
// environment and contract recorded for its image.
package compose

import (
	"fmt"

	"github.com/open-balena-builder/builder/platform/usererr"
)

// Composition is a normalized composition.
type Composition struct {
	// Raw is the normalized composition as stored in release.composition:
	// "services" keyed by name, "networks" and "volumes" when the file has
	// any; never "version" or "name". Numbers are json.Number.
	Raw map[string]any
	// Services sorted by name.
	Services []Service
	// Warnings are things the user should know but that do not stop the
	// build (a reserved label namespace, a removed key), each naming the
	// file and, where there is one, the service.
	Warnings []string
}

// Service is one compose service.
type Service struct {
	Name string
	// Image is the service's image: key. When Build is nil, the release's
	// image is this one, pulled and pushed as it is; when Build is set it is
	// only a tag for the built image.
	Image string
	// Build is nil for image-only services.
	Build *Build
	// Labels of the service (the release's image_label rows), including the
	// io.balena.features.* labels of allowed bind mounts.
	Labels map[string]string
	// Environment of the service (the image_environment_variable rows); a
	// variable without a value is "".
	Environment map[string]string
	// Contract is the image's sw.container contract, nil if it has none.
	Contract map[string]any
}

// Build is how a service's image is built.
type Build struct {
	// Context is relative to the project root, cleaned and slash-separated,
	// "." for the root itself. It is always inside the project.
	Context string
	// Dockerfile as written in the compose file (relative to Context), ""
	// when not given: the project's resolution rules then pick the
	// Dockerfile (Dockerfile.<device type>, Dockerfile.template, ...).
	Dockerfile string
	Args       map[string]string
	Target     string
	Labels     map[string]string
}

// Error is a composition the user must fix. Msg names the file, the service
// (or network, volume) and the key.
type Error = usererr.Error

// where is what an error or a warning is about: the file, and a service,
// network or volume in it.
type where struct {
	file string
	kind string // "service", "network", "volume" or "" for the file itself
	name string
}

func (w where) String() string {
	if w.kind == "" {
		return w.file
	}
	return fmt.Sprintf("%s: %s %q", w.file, w.kind, w.name)
}

func (w where) errorf(format string, args ...any) *Error {
	return &Error{Msg: w.String() + ": " + fmt.Sprintf(format, args...)}
}

func (w where) warnf(format string, args ...any) string {
	return w.String() + ": " + fmt.Sprintf(format, args...)
}

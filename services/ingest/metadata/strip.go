package metadata

import (
	"path"
	"strings"
)

// StripMetadata tells whether name, a slash-separated path relative to a
// service's build context root, must be removed before the context
// reaches a Docker host: the .balena/ and .resin/ folders at the context
// root and everything in them (a nested sub/.balena/ is ordinary content).
//
// Unlike @balena/compose, which keeps .balena/qemu-execve for its emulated
// builds, everything is removed: our hosts emulate through binfmt_misc and
// never run a qemu binary shipped in the context, and the folder holds the
// build secrets and registry passwords, which must not reach a layer.
func StripMetadata(name string) bool {
	p := path.Clean("/" + name)[1:] // "/.balena/x", "./.balena/", ".balena" → .balena…
	first, _, _ := strings.Cut(p, "/")
	return first == ".balena" || first == ".resin"
}

package driver

// The session's registry credentials come from the engine library's
// AuthProvider (tested there): the same rules for both BuildKits.

import "github.com/distribution/reference"

// registryDomain is the registry of an image reference ("" if it is not
// one).
func registryDomain(ref string) string {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return ""
	}
	return reference.Domain(named)
}

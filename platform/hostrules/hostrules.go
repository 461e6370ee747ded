// Package hostrules holds the rules about build hosts that both the
// configuration (at start) and the executor plugins (for every job) apply:
// one definition of each.
package hostrules

import (
	"net/url"
	"regexp"
)

// networkNameRE is what Docker accepts as a network name.
var networkNameRE = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]*$`)

// ValidNetworkMode tells whether m is a network mode for RUN steps: "" (the
// daemon's default), "none", "host", "default" or a network name.
func ValidNetworkMode(m string) bool {
	switch m {
	case "", "none", "host", "default":
		return true
	}
	return networkNameRE.MatchString(m)
}

// Plaintext tells whether a host endpoint is tcp:// without TLS material
// (no CA, no client certificate): anyone who reaches it is root on the
// host.
func Plaintext(endpoint, tlsCA, tlsCert string) bool {
	u, err := url.Parse(endpoint)
	return err == nil && u.Scheme == "tcp" && tlsCA == "" && tlsCert == ""
}

// Platform maps a CPU architecture slug to a Docker platform.
func Platform(arch string) (string, bool) {
	switch arch {
	case "amd64":
		return "linux/amd64", true
	case "i386", "i386-nlp":
		return "linux/386", true
	case "aarch64":
		return "linux/arm64/v8", true
	case "armv7hf":
		return "linux/arm/v7", true
	case "rpi":
		return "linux/arm/v6", true
	}
	return "", false
}

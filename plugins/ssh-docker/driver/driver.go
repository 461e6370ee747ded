// Package driver is the ssh-docker executor plugin: the docker-tcp driver
// (classic builder or BuildKit, secrets, pushes from the host) with an
// Engine API client whose connections are SSH sessions running
// `docker system dial-stdio` on the build host, as docker's own ssh://
// connection helper does, but with a pure-Go SSH client instead of the ssh
// binary.
//
// The SSH material comes from the host's ssh_* fields (older
// configurations put it in the tls_* ones, which are read when the ssh_*
// ones are empty):
//
//   - ssh_private_key: the private key file (OpenSSH or PEM, unencrypted).
//     Default: the first of ~/.ssh/id_ed25519, id_ecdsa, id_rsa that exists.
//   - ssh_certificate: optional; the key's public half (id_ed25519.pub) or
//     an OpenSSH certificate for it (id_ed25519-cert.pub). A public key is
//     checked against the private one, a certificate is presented to the
//     server.
//   - ssh_known_hosts: the known_hosts file the host's key is checked
//     against. Default: ~/.ssh/known_hosts. Host key checking cannot be
//     turned off: an unknown host or a changed key fails Health and every
//     build.
//
// The user is the endpoint's (ssh://builder@host), else the current one;
// the port is the endpoint's, else 22.
package driver

import (
	"log/slog"

	"github.com/open-balena-builder/builder/plugins/engine"
)

// Name and Version identify the plugin in Info.
const (
	Name    = "ssh-docker"
	Version = "0.1.0"
)

// New returns the ssh-docker Executor, logging to logger.
func New(logger *slog.Logger) *engine.Driver {
	return engine.NewWithOptions(logger, engine.Options{Name: Name, Version: Version, NewClient: NewClient})
}

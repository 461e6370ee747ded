package sshdocker

import (
	"testing"

	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/pluginstack"
)

// startStack starts a private dockerd with busybox, the API stand-in, a
// token-auth registry and a private sshd whose sessions reach that dockerd,
// all stopped when t ends. It returns the contract suite's Env, whose host
// is the sshd's ssh:// endpoint, and the sshd.
func startStack(t *testing.T) (sdktest.Env, *testSSHD) {
	t.Helper()
	s := pluginstack.Start(t, "ssh-docker-test")
	sshd := startSSHD(t, s.Dockerd.Host())
	return s.Env(sshHost(sshd)), sshd
}

// sshHost is the HostConfig of the daemon behind sshd.
func sshHost(sshd *testSSHD) *pluginv1.HostConfig {
	return &pluginv1.HostConfig{Name: "ssh-docker-test", Endpoint: sshd.Endpoint(), SshPrivateKey: sshd.ClientKey, SshCertificate: sshd.ClientPub, SshKnownHosts: sshd.KnownHosts}
}

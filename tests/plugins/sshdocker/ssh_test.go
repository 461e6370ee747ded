package sshdocker

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/ssh"

	"github.com/open-balena-builder/builder/plugins/sdk"
	"github.com/open-balena-builder/builder/plugins/ssh-docker/driver"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// TestNewClientConfig checks the endpoint and key material NewClient takes
// and refuses, without a server.
func TestNewClientConfig(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "id")
	pub := writeKey(t, key)
	pubFile := filepath.Join(dir, "id.pub")
	if err := os.WriteFile(pubFile, ssh.MarshalAuthorizedKey(pub), 0o644); err != nil {
		t.Fatal(err)
	}
	otherPub := filepath.Join(dir, "other.pub")
	if err := os.WriteFile(otherPub, ssh.MarshalAuthorizedKey(writeKey(t, filepath.Join(dir, "other"))), 0o644); err != nil {
		t.Fatal(err)
	}
	known := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(known, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ok := func(ep string) *pluginv1.HostConfig {
		return &pluginv1.HostConfig{Name: "h", Endpoint: ep, SshPrivateKey: key, SshKnownHosts: known}
	}
	// Configurations written before the ssh_* fields carried the material in the tls_* ones.
	legacy := &pluginv1.HostConfig{Name: "h", Endpoint: "ssh://root@10.0.0.2", TlsKey: key, TlsCa: known}
	for _, h := range []*pluginv1.HostConfig{ok("ssh://root@10.0.0.1"), ok("ssh://builder@build-1:2222"), ok("ssh://[::1]:22"), legacy} {
		c, err := driver.NewClient(h)
		if err != nil {
			t.Errorf("%s: %v", h.GetEndpoint(), err)
			continue
		}
		_ = c.Close()
	}
	withCert := ok("ssh://root@h")
	withCert.SshCertificate = pubFile
	if c, err := driver.NewClient(withCert); err != nil {
		t.Errorf("ssh_certificate = the key's public half: %v", err)
	} else {
		_ = c.Close()
	}

	bad := map[string]*pluginv1.HostConfig{
		"empty endpoint":       ok(""),
		"tcp endpoint":         ok("tcp://10.0.0.1:2376"),
		"unix endpoint":        ok("unix:///var/run/docker.sock"),
		"path":                 ok("ssh://root@h/var/run/docker.sock"),
		"password":             ok("ssh://root:secret@h"),
		"no host":              ok("ssh://root@"),
		"missing key":          {Name: "h", Endpoint: "ssh://root@h", SshPrivateKey: filepath.Join(dir, "nope"), SshKnownHosts: known},
		"not a key":            {Name: "h", Endpoint: "ssh://root@h", SshPrivateKey: known, SshKnownHosts: known},
		"missing known_hosts":  {Name: "h", Endpoint: "ssh://root@h", SshPrivateKey: key, SshKnownHosts: filepath.Join(dir, "nope")},
		"wrong public key":     {Name: "h", Endpoint: "ssh://root@h", SshPrivateKey: key, SshCertificate: otherPub, SshKnownHosts: known},
		"known_hosts not text": {Name: "h", Endpoint: "ssh://root@h", SshPrivateKey: key, SshKnownHosts: key},
	}
	for name, h := range bad {
		if _, err := driver.NewClient(h); !errors.Is(err, sdk.ErrInvalidArgument) {
			t.Errorf("%s: error %v, want ErrInvalidArgument", name, err)
		} else if strings.Contains(name, "password") && strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: the error shows the password: %v", name, err)
		}
	}
}

func TestInfo(t *testing.T) {
	info, err := driver.New(nil).Info(context.Background())
	if err != nil || info.GetName() != driver.Name || info.GetVersion() != driver.Version {
		t.Errorf("Info = %v, %v; want %s %s", info, err, driver.Name, driver.Version)
	}
}

package sdk

import (
	"slices"
	"testing"
)

// A plugin process gets PATH and TMPDIR, and nothing else of the builder's
// environment (tokens, TLS keys, DOCKER_* variables).
func TestPluginEnvKeepsNoSecrets(t *testing.T) {
	host := map[string]string{
		"PATH": "/usr/bin", "TMPDIR": "/tmp/x", "TOKEN_AUTH_BUILDER_TOKEN": "secret", "OBB_ADMIN_TOKEN": "op",
		"DOCKER_HOST": "tcp://x:2375", "OBB_TLS_KEY": "/k.pem", "HOME": "/root",
	}
	got := pluginEnv(func(k string) string { return host[k] })
	if want := []string{"PATH=/usr/bin", "TMPDIR=/tmp/x"}; !slices.Equal(got, want) {
		t.Errorf("plugin env = %v, want %v", got, want)
	}
}

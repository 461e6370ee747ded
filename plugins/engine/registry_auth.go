package engine

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/docker/docker/api/types/registry"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// dockerHubKey is the key the daemon looks Docker Hub credentials up by.
const dockerHubKey = "https://index.docker.io/v1/"

// RegistryAuths are the credentials of a spec's registry_config (the
// X-Registry-Config JSON: registry host → credentials), for pulling private
// base images. They are never logged and never part of an error.
type RegistryAuths map[string]registry.AuthConfig

// ParseRegistryConfig decodes registry_config. Entries that carry only
// "auth" (base64 user:password, as in a docker config.json) get username
// and password from it. Errors say nothing about the content.
func ParseRegistryConfig(jobID, cfg string) (RegistryAuths, error) {
	if strings.TrimSpace(cfg) == "" {
		return nil, nil
	}
	var auths RegistryAuths
	if err := json.Unmarshal([]byte(cfg), &auths); err != nil {
		return nil, fmt.Errorf("job %s: registry_config is not a JSON object of registry → credentials: %w", jobID, sdk.ErrInvalidArgument)
	}
	for host, ac := range auths {
		if ac.Username == "" && ac.Password == "" && ac.Auth != "" {
			raw, err := base64.StdEncoding.DecodeString(ac.Auth)
			user, pass, ok := strings.Cut(string(raw), ":")
			if err != nil || !ok {
				return nil, fmt.Errorf("job %s: registry_config: the auth of registry %q is not base64 user:password: %w", jobID, host, sdk.ErrInvalidArgument)
			}
			ac.Username, ac.Password = user, pass
		}
		auths[host] = ac
	}
	return auths, nil
}

// ForDaemon returns the credentials as ImageBuildOptions.AuthConfigs: as
// given, plus Docker Hub's under the key the daemon looks them up by
// (https://index.docker.io/v1/) when they were given as docker.io, "" or
// similar.
func (a RegistryAuths) ForDaemon() map[string]registry.AuthConfig {
	if len(a) == 0 {
		return nil
	}
	out := make(map[string]registry.AuthConfig, len(a)+1)
	for k, v := range a {
		out[k] = v
	}
	if _, ok := out[dockerHubKey]; !ok {
		if ac, ok := a.Lookup("docker.io"); ok {
			out[dockerHubKey] = ac
		}
	}
	return out
}

// Lookup returns the credentials for a registry host ("registry.example.com",
// "127.0.0.1:5000", "docker.io", "registry-1.docker.io"). Keys match with or
// without a scheme and a path, and any case; an exact key wins.
func (a RegistryAuths) Lookup(host string) (registry.AuthConfig, bool) {
	if ac, ok := a[host]; ok {
		return ac, true
	}
	want := RegistryHost(host)
	keys := make([]string, 0, len(a))
	for k := range a {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if RegistryHost(k) == want {
			return a[k], true
		}
	}
	return registry.AuthConfig{}, false
}

// RegistryHost normalises a registry key or host: no scheme, no path,
// lower case, and "docker.io" for every name of Docker Hub.
func RegistryHost(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	s = strings.TrimPrefix(strings.TrimPrefix(s, "https://"), "http://")
	if i := strings.IndexByte(s, '/'); i >= 0 {
		s = s[:i]
	}
	switch s {
	case "", "docker.io", "index.docker.io", "registry-1.docker.io", "registry.hub.docker.com":
		return "docker.io"
	}
	return s
}

package compose

import (
	"regexp"
)

// Keys balena denies (openbalena-api.md §6, @balena/compose-parser's deny
// lists), in the order they are checked.
var (
	deniedServiceKeys = []string{
		"blkio_config", "configs", "cpu_count", "cpu_percent", "cpu_period",
		"credential_spec", "deploy", "develop", "external_links", "gpus",
		"isolation", "links", "logging", "mem_swappiness", "memswap_limit",
		"oom_kill_disable", "platform", "pull_policy", "runtime", "scale",
		"secrets", "stdin_open", "storage_opt",
	}
	// Not in balena's list, denied here too: compose features newer than
	// balena's list that no device supervisor implements. models, provider
	// and use_api_socket need a Docker Desktop or a model runner; pre_start
	// hooks are containers of their own (with volumes balena would have to
	// check as well).
	deniedServiceKeysExtra = []string{"models", "pre_start", "provider", "use_api_socket"}

	deniedBuildKeys = []string{
		"additional_contexts", "cache_to", "dockerfile_inline", "entitlements",
		"isolation", "network", "no_cache", "platforms", "privileged", "pull",
		"secrets", "ssh", "tags", "ulimits",
	}

	// Top-level sections a device cannot use. balena's list is secrets and
	// configs; models and jobs (newer compose) are refused for the same
	// reason, and include because a composition is one file.
	deniedTopLevel = []string{"secrets", "configs", "models", "jobs"}
)

// serviceName is what a service may be called: compose-go's pattern
// ([a-zA-Z0-9._-]+) narrowed to what Docker accepts in a container name
// (the supervisor names containers after services), at most 63 characters
// (open-balena-api's service_name).
var serviceName = regexp.MustCompile(`^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}$`)

// checkFile refuses what must be refused before compose-go reads any other
// file: include and extends.file; and the top-level sections balena denies.
func (p *parser) checkFile(model map[string]any) error {
	top := where{file: p.file}
	if _, ok := model["include"]; ok {
		return top.errorf("%q is not supported by balena: the composition must be this one file", "include")
	}
	for _, k := range deniedTopLevel {
		if _, ok := model[k]; ok {
			return top.errorf("top-level %q is not supported by balena", k)
		}
	}
	services, _ := model["services"].(map[string]any)
	if len(services) == 0 {
		return top.errorf("no services")
	}
	for _, name := range sortedKeys(services) {
		s, _ := services[name].(map[string]any)
		if ext, ok := s["extends"].(map[string]any); ok {
			if _, ok := ext["file"]; ok {
				return where{p.file, "service", name}.errorf("%q is not supported by balena: a service can only extend another service of this file", "extends.file")
			}
		}
	}
	return nil
}

// checkServices applies the rules about the keys the user wrote (with
// extends applied): names, denied keys, image or build. It returns, per
// service with a build, whether build.dockerfile was given.
func (p *parser) checkServices(model map[string]any) (map[string]bool, error) {
	services, _ := model["services"].(map[string]any)
	given := map[string]bool{}
	for _, name := range sortedKeys(services) {
		w := where{p.file, "service", name}
		if !serviceName.MatchString(name) {
			return nil, w.errorf("a service name must start with a letter or digit, have only letters, digits, '.', '_' and '-', and be at most 63 characters")
		}
		s, _ := services[name].(map[string]any)
		for _, list := range [][]string{deniedServiceKeys, deniedServiceKeysExtra} {
			for _, k := range list {
				if _, ok := s[k]; ok {
					return nil, w.errorf("%q is not supported by balena", k)
				}
			}
		}
		build, hasBuild := s["build"].(map[string]any)
		if hasBuild {
			for _, k := range deniedBuildKeys {
				if _, ok := build[k]; ok {
					return nil, w.errorf("%q is not supported by balena", "build."+k)
				}
			}
			given[name] = build["dockerfile"] != nil
		}
		if image, _ := s["image"].(string); image == "" && !hasBuild {
			return nil, w.errorf("needs %q or %q", "image", "build")
		}
	}
	return given, nil
}

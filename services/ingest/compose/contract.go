package compose

import (
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// requiresPrefix starts the labels that make an image's contract.
const requiresPrefix = "io.balena.features.requires."

// architectures accepted by io.balena.features.requires.arch.sw: balena's
// list (it leaves out i386-nlp, which open-balena-api also knows).
var architectures = []string{"aarch64", "rpi", "amd64", "armv7hf", "i386"}

// requirement turns one io.balena.features.requires.<kind> label into a
// contract requirement, as @balena/compose-parser does:
//
//	sw.supervisor  {"type":"sw.supervisor","version":<range>}
//	sw.l4t         {"type":"sw.l4t","version":<range>}
//	hw.device-type {"type":"hw.device-type","slug":<value>}
//	arch.sw        {"type":"arch.sw","slug":<architecture>}
//	sw.balena-os   {"type":"sw.os","slug":"balena-os","version":<range>}
//	sw.linux       {"type":"sw.kernel","slug":"linux","version":<range>}
//
// The value is kept as written. ok is false for a kind balena does not
// know; err is set for a value it refuses.
func requirement(kind, value string) (req map[string]any, ok bool, err error) {
	version := func(typ, slug string) (map[string]any, bool, error) {
		if !validRange(value) {
			return nil, true, fmt.Errorf("%q is not a valid semver range", value)
		}
		r := map[string]any{"type": typ, "version": value}
		if slug != "" {
			r["slug"] = slug
		}
		return r, true, nil
	}
	switch kind {
	case "sw.supervisor":
		return version("sw.supervisor", "")
	case "sw.l4t":
		return version("sw.l4t", "")
	case "sw.balena-os":
		return version("sw.os", "balena-os")
	case "sw.linux":
		return version("sw.kernel", "linux")
	case "hw.device-type":
		// balena does not check the slug against the device types either.
		return map[string]any{"type": "hw.device-type", "slug": value}, true, nil
	case "arch.sw":
		for _, a := range architectures {
			if value == a {
				return map[string]any{"type": "arch.sw", "slug": value}, true, nil
			}
		}
		return nil, true, fmt.Errorf("%q is not an architecture balena knows (%s)", value, strings.Join(architectures, ", "))
	}
	return nil, false, nil
}

// checkLabels warns about the io.balena.private namespace and refuses an
// invalid contract requirement label. what is "labels" or "build.labels".
func (p *parser) checkLabels(w where, what string, labels map[string]string) error {
	for _, k := range sortedKeys(labels) {
		if strings.HasPrefix(k, "io.balena.private") {
			p.warn = append(p.warn, w.warnf("%s %q: the io.balena.private namespace is reserved for balena's own labels", what, k))
		}
		kind, ok := strings.CutPrefix(k, requiresPrefix)
		if !ok {
			continue
		}
		if _, known, err := requirement(kind, labels[k]); err != nil {
			return w.errorf("%s %q: %s", what, k, err)
		} else if !known {
			p.warn = append(p.warn, w.warnf("%s %q: not a requirement balena knows (%s); it is not part of the image contract", what, k, strings.Join(requirementKinds, ", ")))
		}
	}
	return nil
}

var requirementKinds = []string{"sw.supervisor", "sw.l4t", "hw.device-type", "arch.sw", "sw.balena-os", "sw.linux"}

// contract is the image's sw.container contract, nil if it has no
// requirement. As in @balena/compose-parser: the requirements in label name
// order, then the OS requirements and the kernel requirements each wrapped
// in {"or":[...]} (alternatives: today one label each), then
// {"type":"sw.spec","slug":"compose","version":">=2"} when the service uses
// compose fields older supervisors ignore. Labels are already checked.
func contract(service string, labels map[string]string, newFields bool) map[string]any {
	var requires, os, kernel []any
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		kind, ok := strings.CutPrefix(k, requiresPrefix)
		if !ok {
			continue
		}
		r, ok, err := requirement(kind, labels[k])
		if !ok || err != nil {
			continue
		}
		switch r["type"] {
		case "sw.os":
			os = append(os, r)
		case "sw.kernel":
			kernel = append(kernel, r)
		default:
			requires = append(requires, r)
		}
	}
	if len(os) > 0 {
		requires = append(requires, map[string]any{"or": os})
	}
	if len(kernel) > 0 {
		requires = append(requires, map[string]any{"or": kernel})
	}
	if newFields {
		requires = append(requires, map[string]any{"type": "sw.spec", "slug": "compose", "version": ">=2"})
	}
	if len(requires) == 0 {
		return nil
	}
	return map[string]any{"type": "sw.container", "slug": "contract-for-" + service, "requires": requires}
}

// Compose fields a supervisor older than the compose-go based parser does
// not implement (@balena/compose-parser lib/legacy.ts). A service using one gets the sw.spec requirement, so
// that such a supervisor refuses the release instead of ignoring the field.
var (
	newServiceFields = []string{
		"annotations", "attach", "cgroup", "cpu_rt_runtime", "cpu_rt_period",
		"cpus", "device_cgroup_rules", "post_start", "pre_stop",
		"uts", "volumes_from",
	}
	newHealthcheckFields = []string{"start_interval"}
	newNetworkFields     = []string{"ipv6_address", "mac_address", "driver_opts", "gw_priority", "priority"}
)

func usesNewFields(s map[string]any) bool {
	for _, k := range newServiceFields {
		if s[k] != nil {
			return true
		}
	}
	if pid, _ := s["pid"].(string); strings.HasPrefix(pid, "service:") {
		return true
	}
	if hc, ok := s["healthcheck"].(map[string]any); ok {
		for _, k := range newHealthcheckFields {
			if hc[k] != nil {
				return true
			}
		}
	}
	if nets, ok := s["networks"].(map[string]any); ok {
		for _, n := range nets {
			n, ok := n.(map[string]any)
			if !ok {
				continue
			}
			for _, k := range newNetworkFields {
				if n[k] != nil {
					return true
				}
			}
		}
	}
	return false
}

// validRange reports whether s is a range node-semver's validRange accepts
// (balena checks the version labels with it), in its default, not loose,
// mode: comparators (<, <=, >, >=, =, ~, ~>, ^ before a partial version
// such as 1, 1.2, 1.2.x, 1.2.3-beta.1+build), X-ranges (*, x, 1.x), hyphen
// ranges (1.2 - 2.3), joined by spaces (and) and || (or). "" means any
// version, as in node-semver.
func validRange(s string) bool {
	for _, part := range strings.Split(s, "||") {
		part = strings.TrimSpace(part)
		if hyphenRange.MatchString(part) {
			continue
		}
		part = operatorSpace.ReplaceAllString(part, "$1")
		for _, c := range strings.Fields(part) {
			if !comparator.MatchString(c) {
				return false
			}
		}
	}
	return true
}

const (
	semverXR    = `(?:[xX*]|0|[1-9][0-9]*)`
	semverIdent = `(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][a-zA-Z0-9-]*)`
	semverPre   = `(?:-` + semverIdent + `(?:\.` + semverIdent + `)*)`
	semverBuild = `(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)`
	semverPart  = `[v=]*` + semverXR + `(?:\.` + semverXR + `(?:\.` + semverXR + `(?:` + semverPre + `)?` + semverBuild + `?)?)?`
)

var (
	comparator    = regexp.MustCompile(`^(?:~>?|\^|[<>]=?|=)?` + semverPart + `$`)
	hyphenRange   = regexp.MustCompile(`^` + semverPart + `\s+-\s+` + semverPart + `$`)
	operatorSpace = regexp.MustCompile(`(~>?|\^|[<>]=?|=)\s+`)
)

package metadata

import (
	"maps"
	"strings"
	"unicode"
)

// Variables are the build-variables of .balena/balena.yml.
type Variables struct {
	Global   map[string]string
	Services map[string]map[string]string
}

// For returns the build args for a service: global, then service-specific
// on top. The map is new; callers may change it.
func (v Variables) For(service string) map[string]string {
	out := make(map[string]string, len(v.Global)+len(v.Services[service]))
	maps.Copy(out, v.Global)
	maps.Copy(out, v.Services[service])
	return out
}

// parseVariables reads build-variables: {global: VarList, services: {svc:
// VarList}}, where a VarList is a list of "KEY=VALUE" strings or a mapping
// of strings.
func parseVariables(v any, at string, p *problems, shown string) Variables {
	var out Variables
	m, ok := section(v, at, p, shown)
	if !ok {
		return out
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "global":
			out.Global = parseVarList(m[k], join(at, k), p, shown)
		case "services":
			svcs := serviceMap(m[k], join(at, k), p, shown)
			for _, name := range sortedKeys(svcs) {
				if out.Services == nil {
					out.Services = map[string]map[string]string{}
				}
				out.Services[name] = parseVarList(svcs[name], join(join(at, k), name), p, shown)
			}
		default:
			p.add("%s: %s: unknown key (expected global or services)", shown, join(at, k))
		}
	}
	return out
}

// section checks that v is a mapping (null counts as empty).
func section(v any, at string, p *problems, shown string) (map[string]any, bool) {
	switch x := v.(type) {
	case nil:
		return nil, false
	case map[string]any:
		return x, true
	}
	p.add("%s: %s: must be a mapping with global and/or services, not %s", shown, at, describe(v))
	return nil, false
}

// serviceMap checks services: {name: …}.
func serviceMap(v any, at string, p *problems, shown string) map[string]any {
	switch x := v.(type) {
	case nil:
		return nil
	case map[string]any:
		for name := range x {
			if name == "" {
				p.add("%s: %s: a service name is empty", shown, at)
				delete(x, name)
			}
		}
		return x
	}
	p.add("%s: %s: must be a mapping of service names, not %s", shown, at, describe(v))
	return nil
}

func parseVarList(v any, at string, p *problems, shown string) map[string]string {
	out := map[string]string{}
	switch x := v.(type) {
	case nil:
	case []any:
		for i, e := range x {
			s, ok := e.(string)
			if !ok {
				p.add("%s: %s: must be a KEY=VALUE string, not %s", shown, index(at, i), describe(e))
				continue
			}
			key, val, ok := strings.Cut(s, "=")
			if !ok || !validVarName(key) {
				p.add("%s: %s: %q is not KEY=VALUE", shown, index(at, i), s)
				continue
			}
			out[key] = val // a later entry wins, as in balena
		}
	case map[string]any:
		for _, k := range sortedKeys(x) {
			if !validVarName(k) {
				p.add("%s: %s: %q is not a valid variable name (no spaces or =)", shown, at, k)
				continue
			}
			s, ok := x[k].(string)
			if !ok {
				p.add("%s: %s: must be a string, not %s (quote the value)", shown, join(at, k), describe(x[k]))
				continue
			}
			out[k] = s
		}
	default:
		p.add("%s: %s: must be a list of KEY=VALUE strings or a mapping, not %s", shown, at, describe(v))
	}
	return out
}

// validVarName: non-empty, no whitespace, no '=' (balena's /[^\s=]+/).
func validVarName(s string) bool {
	return s != "" && !strings.ContainsFunc(s, func(r rune) bool { return r == '=' || unicode.IsSpace(r) || r == 0 })
}

package compose

import (
	"strings"
)

// features are the bind mounts balena allows, each turned into an
// io.balena.features.* label ("1") that tells the supervisor to make the
// mount on the device. A label needs all of its mounts, except
// balena-socket, which either socket gives.
var features = []struct {
	label  string
	mounts []string
}{
	{"io.balena.features.balena-socket", []string{"/var/run/balena-engine.sock"}},
	{"io.balena.features.balena-socket", []string{"/var/run/docker.sock"}},
	{"io.balena.features.dbus", []string{"/run/dbus"}},
	{"io.balena.features.sysfs", []string{"/sys"}},
	{"io.balena.features.procfs", []string{"/proc"}},
	{"io.balena.features.kernel-modules", []string{"/lib/modules"}},
	{"io.balena.features.firmware", []string{"/lib/firmware"}},
	{"io.balena.features.journal-logs", []string{"/var/log/journal", "/run/log/journal", "/etc/machine-id"}},
}

// allowedBinds lists the mounts for messages, in features' order.
var allowedBinds = func() string {
	var all []string
	for _, f := range features {
		all = append(all, f.mounts...)
	}
	return strings.Join(all, ", ")
}()

func allowedBind(source string) bool {
	for _, f := range features {
		for _, m := range f.mounts {
			if source == m {
				return true
			}
		}
	}
	return false
}

// volumes turns compose-go's long syntax volumes into balena's: allowed
// bind mounts become labels and leave the list, named volumes become
// "name:/target[:ro]", tmpfs mounts move to tmpfs; anything else is
// refused.
func (p *parser) volumes(w where, s map[string]any) error {
	vols, ok := s["volumes"].([]any)
	if !ok {
		return nil
	}
	sources := map[string]bool{}
	var short, tmpfs []any
	for _, v := range vols {
		m, _ := v.(map[string]any)
		typ, src, dst := str(m["type"]), str(m["source"]), str(m["target"])
		if allowedBind(src) {
			sources[src] = true
			continue
		}
		ro := ""
		if r, _ := m["read_only"].(bool); r {
			ro = ":ro"
		}
		switch typ {
		case "bind":
			return w.errorf("bind mount %q is not allowed (only %s)", p.display(src)+":"+dst+ro, allowedBinds)
		case "volume", "tmpfs":
		default:
			return w.errorf("%q of type %q are not supported by balena", "volumes", typ)
		}
		for _, k := range []string{"volume", "tmpfs"} {
			if o, ok := m[k].(map[string]any); ok && len(o) > 0 {
				return w.errorf("%q %q: %s options (long syntax) are not supported by balena", "volumes", dst, k)
			}
		}
		if typ == "tmpfs" {
			tmpfs = append(tmpfs, dst)
			continue
		}
		if src == "" {
			return w.errorf("%q %q: anonymous volumes are not supported by balena: name the volume and declare it under the top-level volumes", "volumes", dst)
		}
		short = append(short, src+":"+dst+ro)
	}

	labels, _ := s["labels"].(map[string]any)
	for _, f := range features {
		all := true
		for _, m := range f.mounts {
			all = all && sources[m]
		}
		if all {
			if labels == nil {
				labels = map[string]any{}
				s["labels"] = labels
			}
			labels[f.label] = "1"
		} else if len(f.mounts) > 1 {
			var some []string
			for _, m := range f.mounts {
				if sources[m] {
					some = append(some, m)
				}
			}
			if len(some) > 0 {
				// balena removes them without a label: tell the user.
				p.warn = append(p.warn, w.warnf("bind mounts %s are removed without effect: %s needs all of %s", strings.Join(some, ", "), f.label, strings.Join(f.mounts, ", ")))
			}
		}
	}

	if len(short) > 0 {
		s["volumes"] = short
	} else {
		delete(s, "volumes")
	}
	if len(tmpfs) > 0 {
		s["tmpfs"] = append(list(s["tmpfs"]), tmpfs...)
	}
	return nil
}

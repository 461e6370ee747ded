package compose

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
)

// normalize applies balena's rules to compose-go's JSON of the project
// (raw, changed in place) and builds the Composition. given says, per
// service with a build, whether build.dockerfile was written.
func (p *parser) normalize(raw map[string]any, given map[string]bool) (*Composition, error) {
	c := &Composition{Raw: map[string]any{}}
	services, _ := raw["services"].(map[string]any)
	for _, name := range sortedKeys(services) {
		s, _ := services[name].(map[string]any)
		svc, err := p.service(name, s, given[name])
		if err != nil {
			return nil, err
		}
		c.Services = append(c.Services, *svc)
	}
	c.Raw["services"] = services

	if nets, ok := raw["networks"].(map[string]any); ok {
		for _, name := range sortedKeys(nets) {
			n, _ := nets[name].(map[string]any)
			if n == nil {
				n = map[string]any{}
				nets[name] = n
			}
			if err := p.network(where{p.file, "network", name}, n); err != nil {
				return nil, err
			}
		}
		c.Raw["networks"] = nets
	}
	if vols, ok := raw["volumes"].(map[string]any); ok {
		for _, name := range sortedKeys(vols) {
			v, _ := vols[name].(map[string]any)
			if v == nil {
				v = map[string]any{}
				vols[name] = v
			}
			if err := p.volume(where{p.file, "volume", name}, v); err != nil {
				return nil, err
			}
		}
		c.Raw["volumes"] = vols
	}
	c.Warnings = p.warn
	return c, nil
}

// service normalizes one service in place.
func (p *parser) service(name string, s map[string]any, dockerfileGiven bool) (*Service, error) {
	w := where{p.file, "service", name}
	svc := &Service{Name: name}
	svc.Image, _ = s["image"].(string)

	if b, ok := s["build"].(map[string]any); ok {
		build, err := p.build(w, b, dockerfileGiven, svc.Image)
		if err != nil {
			return nil, err
		}
		svc.Build = build
	}

	if err := rejectValues(w, s); err != nil {
		return nil, err
	}

	// compose-go writes a null entrypoint and command for "not set"; for
	// the supervisor a null entrypoint overrides the image's ENTRYPOINT
	// (balena removes it), and a missing command is what older parsers
	// stored (removed here too: same meaning, one spelling).
	for _, k := range []string{"entrypoint", "command"} {
		if v, ok := s[k]; ok && v == nil {
			delete(s, k)
		}
	}

	if err := p.ports(w, s); err != nil {
		return nil, err
	}
	if err := dependsOn(w, s); err != nil {
		return nil, err
	}
	if err := devices(w, s); err != nil {
		return nil, err
	}
	if err := p.volumes(w, s); err != nil {
		return nil, err
	}

	// env_file and label_file are merged into environment and labels.
	delete(s, "env_file")
	delete(s, "label_file")

	if _, ok := s["expose"]; ok {
		p.warn = append(p.warn, w.warnf("%q is removed: it is informational only", "expose"))
		delete(s, "expose")
	}
	if _, ok := s["container_name"]; ok {
		p.warn = append(p.warn, w.warnf("%q is removed: balena names the containers", "container_name"))
		delete(s, "container_name")
	}
	if n, ok := s["oom_score_adj"].(json.Number); ok {
		if v, err := n.Int64(); err == nil && v <= -900 {
			p.warn = append(p.warn, w.warnf("%q %d: values of -900 and below may break the device", "oom_score_adj", v))
		}
	}
	if h, ok := s["extra_hosts"].([]any); ok {
		s["extra_hosts"] = hostsColon(h)
	}

	svc.Environment = stringMap(s["environment"])
	if _, ok := s["environment"]; ok {
		s["environment"] = anyMap(svc.Environment)
	}
	svc.Labels = stringMap(s["labels"])
	if _, ok := s["labels"]; ok {
		s["labels"] = anyMap(svc.Labels)
	}
	if err := p.checkLabels(w, "label", svc.Labels); err != nil {
		return nil, err
	}
	svc.Contract = contract(name, svc.Labels, usesNewFields(s))
	return svc, nil
}

// rejectValues refuses the values (of keys balena allows) that the
// supervisor cannot apply (@balena/compose-parser's normalizeService).
func rejectValues(w where, s map[string]any) error {
	for _, k := range []string{"network_mode", "pid"} {
		if v, _ := s[k].(string); strings.HasPrefix(v, "container:") {
			return w.errorf("%q %q is not supported by balena: a service cannot share another container's namespace", k, v)
		}
	}
	if v, _ := s["ipc"].(string); strings.HasPrefix(strings.TrimSpace(v), "service:") {
		return w.errorf("%q %q is not supported by balena", "ipc", v)
	}
	for _, o := range list(s["security_opt"]) {
		if o, _ := o.(string); !strings.Contains(o, "no-new-privileges") {
			return w.errorf("%q %q is not supported by balena (only no-new-privileges)", "security_opt", o)
		}
	}
	for _, v := range list(s["volumes_from"]) {
		if v, _ := v.(string); strings.HasPrefix(v, "container:") {
			return w.errorf("%q %q is not supported by balena: only services of this file", "volumes_from", v)
		}
	}
	if nets, ok := s["networks"].(map[string]any); ok {
		for _, name := range sortedKeys(nets) {
			if n, ok := nets[name].(map[string]any); ok && n["link_local_ips"] != nil {
				return w.errorf("%q is not supported by balena", "networks."+name+".link_local_ips")
			}
		}
	}
	if n, ok := s["pids_limit"].(json.Number); ok {
		if v, err := n.Int64(); err == nil && v < 0 {
			return w.errorf("%q %d is not supported by balena: the limit cannot be negative", "pids_limit", v)
		}
	}
	return nil
}

// build normalizes the service's build section in place.
func (p *parser) build(w where, b map[string]any, dockerfileGiven bool, image string) (*Build, error) {
	ctx, _ := b["context"].(string)
	if remoteContext(ctx) {
		return nil, w.errorf("%q %s: remote build contexts are not supported by balena: use a directory of the project", "build.context", p.show(ctx))
	}
	if err := p.inside(ctx); err != nil {
		return nil, w.errorf("%q %s: %s", "build.context", p.show(ctx), err)
	}
	rel, _ := filepath.Rel(p.root, ctx)
	rel = filepath.ToSlash(rel)
	b["context"] = rel
	build := &Build{Context: rel}

	if !dockerfileGiven {
		// compose-go's default "Dockerfile" is left out: the project's
		// resolution (Dockerfile.<device type>, .template, ...) decides.
		delete(b, "dockerfile")
	} else {
		df, _ := b["dockerfile"].(string)
		if filepath.IsAbs(filepath.FromSlash(df)) {
			return nil, w.errorf("%q %q: must be a path relative to the build context", "build.dockerfile", df)
		}
		if err := p.inside(filepath.Join(ctx, filepath.FromSlash(df))); err != nil {
			return nil, w.errorf("%q %q: %s", "build.dockerfile", df, err)
		}
		build.Dockerfile = df
	}

	build.Args = stringMap(b["args"])
	if _, ok := b["args"]; ok {
		b["args"] = anyMap(build.Args)
	}
	build.Labels = stringMap(b["labels"])
	if _, ok := b["labels"]; ok {
		b["labels"] = anyMap(build.Labels)
	}
	if err := p.checkLabels(w, "build.labels", build.Labels); err != nil {
		return nil, err
	}
	build.Target, _ = b["target"].(string)
	if h, ok := b["extra_hosts"].([]any); ok {
		b["extra_hosts"] = hostsColon(h)
	}
	if image != "" {
		b["tags"] = []any{image}
	}
	return build, nil
}

// remoteContext: a git or http(s) URL, another builder's context type
// (scheme://, service:), or, as balena checks it, a path ending in .git.
func remoteContext(ctx string) bool {
	if !filepath.IsAbs(ctx) || strings.Contains(ctx, "://") || strings.HasSuffix(ctx, ".git") {
		return true
	}
	for _, prefix := range []string{"github.com/", "git@", "service:"} {
		if strings.HasPrefix(ctx, prefix) {
			return true
		}
	}
	return false
}

// ports: compose-go's long syntax to short "[host_ip:][published:]target[/protocol]"
// (and "host_ip::target" for a host address without a published port,
// where balena's parser writes "host_ip:target", which Docker reads as a
// published port).
func (p *parser) ports(w where, s map[string]any) error {
	ports, ok := s["ports"].([]any)
	if !ok {
		return nil
	}
	short := make([]any, 0, len(ports))
	for _, port := range ports {
		m, ok := port.(map[string]any)
		if !ok {
			short = append(short, port)
			continue
		}
		var b strings.Builder
		ip, pub := str(m["host_ip"]), str(m["published"])
		if ip != "" {
			b.WriteString(ip + ":")
		}
		if pub != "" || ip != "" {
			b.WriteString(pub + ":")
		}
		b.WriteString(str(m["target"]))
		if proto := str(m["protocol"]); proto != "" && proto != "tcp" {
			b.WriteString("/" + proto)
		}
		for _, k := range []string{"name", "app_protocol"} {
			if str(m[k]) != "" {
				p.warn = append(p.warn, w.warnf("%q %q: %q is removed, balena does not support it", "ports", b.String(), k))
			}
		}
		if mode := str(m["mode"]); mode != "" && mode != "ingress" {
			p.warn = append(p.warn, w.warnf("%q %q: mode %q is ignored, balena does not support it", "ports", b.String(), mode))
		}
		short = append(short, b.String())
	}
	s["ports"] = short
	return nil
}

// dependsOn: compose-go's long syntax to the list of service names. Only
// what the short syntax means (start after, required) can be converted.
func dependsOn(w where, s map[string]any) error {
	deps, ok := s["depends_on"].(map[string]any)
	if !ok {
		return nil
	}
	names := make([]any, 0, len(deps))
	for _, name := range sortedKeys(deps) {
		d, _ := deps[name].(map[string]any)
		if c := str(d["condition"]); c != "service_started" {
			return w.errorf("%q %q with condition %q is not supported by balena: a service can only wait for another to start", "depends_on", name, c)
		}
		if r, _ := d["required"].(bool); !r {
			return w.errorf("%q %q with required: false is not supported by balena", "depends_on", name)
		}
		names = append(names, name)
	}
	s["depends_on"] = names
	return nil
}

// devices: compose-go's long syntax to "source:target[:permissions]"; CDI
// device names are refused.
func devices(w where, s map[string]any) error {
	devs, ok := s["devices"].([]any)
	if !ok {
		return nil
	}
	short := make([]any, 0, len(devs))
	for _, d := range devs {
		m, _ := d.(map[string]any)
		src, dst, perm := str(m["source"]), str(m["target"]), str(m["permissions"])
		if !strings.HasPrefix(src, "/") || !strings.HasPrefix(dst, "/") {
			return w.errorf("%q %q: CDI device names are not supported by balena", "devices", src)
		}
		v := src + ":" + dst
		if perm != "" {
			v += ":" + perm
		}
		short = append(short, v)
	}
	s["devices"] = short
	return nil
}

// network applies balena's rules to a top-level network.
func (p *parser) network(w where, n map[string]any) error {
	delete(n, "name") // compose-go's project-prefixed name; the supervisor names networks
	for _, k := range []string{"attachable", "external"} {
		if _, ok := n[k]; ok {
			return w.errorf("%q is not supported by balena", k)
		}
	}
	if d := str(n["driver"]); d != "" && d != "bridge" && d != "default" {
		return w.errorf("%q %q is not supported by balena (only bridge or default)", "driver", d)
	}
	if ipam, ok := n["ipam"].(map[string]any); ok {
		for _, c := range list(ipam["config"]) {
			if c, ok := c.(map[string]any); ok && c["aux_addresses"] != nil {
				return w.errorf("%q is not supported by balena", "ipam.config.aux_addresses")
			}
		}
	}
	if n["enable_ipv4"] != nil {
		return w.errorf("%q is not supported by balena", "enable_ipv4")
	}
	if v, _ := n["enable_ipv6"].(bool); v {
		return w.errorf("%q is not supported by balena", "enable_ipv6")
	}
	if opts, ok := n["driver_opts"].(map[string]any); ok && opts["com.docker.network.bridge.name"] != nil {
		p.warn = append(p.warn, w.warnf("driver_opts %q may interfere with the device's firewall", "com.docker.network.bridge.name"))
	}
	return p.sectionLabels(w, n)
}

// volume applies balena's rules to a top-level volume.
func (p *parser) volume(w where, v map[string]any) error {
	delete(v, "name") // as for networks
	if d := str(v["driver"]); d != "" && d != "local" && d != "default" {
		return w.errorf("%q %q is not supported by balena (only local or default)", "driver", d)
	}
	if _, ok := v["external"]; ok {
		return w.errorf("%q is not supported by balena", "external")
	}
	return p.sectionLabels(w, v)
}

func (p *parser) sectionLabels(w where, m map[string]any) error {
	if _, ok := m["labels"]; !ok {
		return nil
	}
	labels := stringMap(m["labels"])
	m["labels"] = anyMap(labels)
	return p.checkLabels(w, "label", labels)
}

// hostsColon: compose-go writes extra_hosts as "host=ip"; balena-engine
// wants "host:ip".
func hostsColon(h []any) []any {
	out := make([]any, len(h))
	for i, e := range h {
		s, ok := e.(string)
		if host, ip, found := strings.Cut(s, "="); ok && found {
			s = host + ":" + ip
		}
		out[i] = s
		if !ok {
			out[i] = e
		}
	}
	return out
}

// stringMap reads a JSON object of labels, environment or args as strings;
// null is "". Always non-nil.
func stringMap(v any) map[string]string {
	m, _ := v.(map[string]any)
	out := make(map[string]string, len(m))
	for k, e := range m {
		out[k] = str(e)
	}
	return out
}

func anyMap(m map[string]string) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func str(v any) string {
	switch v := v.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return fmt.Sprint(v)
	}
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

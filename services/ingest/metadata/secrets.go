package metadata

import (
	"errors"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
)

// Secret is one build secret: Content is mounted at /run/secrets/<Dest>
// during RUN steps only. Dest is a clean relative path. Printing a Secret
// (fmt, slog, encoding/json) never shows Content.
type Secret struct {
	Dest    string
	Content []byte
}

// SecretSet is the build-secrets of .balena/balena.yml.
type SecretSet struct {
	Global   []Secret
	Services map[string][]Secret
}

// For returns a service's secrets: global, then service-specific (a
// service entry with the same Dest wins). The slice is new; the contents
// are shared.
func (s SecretSet) For(service string) []Secret {
	own := s.Services[service]
	out := make([]Secret, 0, len(s.Global)+len(own))
	for _, g := range s.Global {
		if !slices.ContainsFunc(own, func(o Secret) bool { return o.Dest == g.Dest }) {
			out = append(out, g)
		}
	}
	return append(out, own...)
}

// Empty tells whether no service has a secret.
func (s SecretSet) Empty() bool {
	if len(s.Global) > 0 {
		return false
	}
	for _, l := range s.Services {
		if len(l) > 0 {
			return false
		}
	}
	return true
}

// secretRef is a build-secrets entry before its file is read.
type secretRef struct {
	at     string // key path of the entry, e.g. build-secrets.global[0]
	source string // clean, relative to the secrets folder
	dest   string // clean, relative to /run/secrets
}

type secretRefs struct {
	global   []secretRef
	services map[string][]secretRef
}

func (r secretRefs) count() int {
	n := len(r.global)
	for _, l := range r.services {
		n += len(l)
	}
	return n
}

// parseSecrets reads build-secrets: {global: [{source, dest}], services:
// {svc: [{source, dest}]}}.
func parseSecrets(v any, at string, p *problems, shown string) secretRefs {
	var out secretRefs
	m, ok := section(v, at, p, shown)
	if !ok {
		return out
	}
	for _, k := range sortedKeys(m) {
		switch k {
		case "global":
			out.global = parseSecretList(m[k], join(at, k), p, shown)
		case "services":
			svcs := serviceMap(m[k], join(at, k), p, shown)
			for _, name := range sortedKeys(svcs) {
				if out.services == nil {
					out.services = map[string][]secretRef{}
				}
				out.services[name] = parseSecretList(svcs[name], join(join(at, k), name), p, shown)
			}
		default:
			p.add("%s: %s: unknown key (expected global or services)", shown, join(at, k))
		}
	}
	// Conflicts between global and per-service destinations.
	for _, name := range sortedKeys(out.services) {
		checkDests(merge(out.global, out.services[name]), p, shown)
	}
	return out
}

func parseSecretList(v any, at string, p *problems, shown string) []secretRef {
	list, ok := v.([]any)
	if !ok {
		if v != nil {
			p.add("%s: %s: must be a list of {source, dest}, not %s", shown, at, describe(v))
		}
		return nil
	}
	var out []secretRef
	seen := map[string]string{}
	for i, e := range list {
		eat := index(at, i)
		m, ok := e.(map[string]any)
		if !ok {
			p.add("%s: %s: must be a mapping with source and dest, not %s", shown, eat, describe(e))
			continue
		}
		bad := false
		for _, k := range sortedKeys(m) {
			if k != "source" && k != "dest" {
				p.add("%s: %s: unknown key (expected source and dest)", shown, join(eat, k))
				bad = true
			}
		}
		src, okS := secretPath(m, "source", eat, p, shown)
		dst, okD := secretPath(m, "dest", eat, p, shown)
		if bad || !okS || !okD {
			continue
		}
		if prev, dup := seen[dst]; dup {
			p.add("%s: %s.dest: %q is already the dest of %s", shown, eat, dst, prev)
			continue
		}
		seen[dst] = eat
		out = append(out, secretRef{at: eat, source: src, dest: dst})
	}
	checkDests(out, p, shown)
	return out
}

// secretPath validates m[key], a relative path that must stay inside its
// folder: .balena/secrets/ for source (lexically here; os.Root stops links
// when it is read), /run/secrets/ for dest (no .. at all). It returns the
// path cleaned.
func secretPath(m map[string]any, key, at string, p *problems, shown string) (string, bool) {
	kat := at + "." + key
	raw, present := m[key]
	if !present {
		p.add("%s: %s: missing", shown, kat)
		return "", false
	}
	s, ok := raw.(string)
	if !ok {
		p.add("%s: %s: must be a string, not %s", shown, kat, describe(raw))
		return "", false
	}
	where := "/run/secrets/"
	if key == "source" {
		where = "the secrets folder"
	}
	clean := path.Clean(s)
	switch {
	case s == "" || clean == ".":
		p.add("%s: %s: must name a file", shown, kat)
	case strings.ContainsRune(s, 0):
		p.add("%s: %s: %q contains a NUL byte", shown, kat, s)
	case path.IsAbs(s):
		p.add("%s: %s: %q must be a path relative to %s", shown, kat, s, where)
	case key == "source" && (clean == ".." || strings.HasPrefix(clean, "../")):
		p.add("%s: %s: %q must stay inside %s", shown, kat, s, where)
	case key == "dest" && slices.Contains(strings.Split(s, "/"), ".."):
		p.add("%s: %s: %q must stay inside %s (no ..)", shown, kat, s, where)
	case strings.HasSuffix(s, "/"):
		p.add("%s: %s: %q must name a file, not a folder", shown, kat, s)
	default:
		return clean, true
	}
	return "", false
}

// merge is For on refs.
func merge(global, own []secretRef) []secretRef {
	out := make([]secretRef, 0, len(global)+len(own))
	for _, g := range global {
		if !slices.ContainsFunc(own, func(o secretRef) bool { return o.dest == g.dest }) {
			out = append(out, g)
		}
	}
	return append(out, own...)
}

// checkDests reports a dest that is a folder of another one (a and a/b):
// one path cannot be both a file and a folder.
func checkDests(refs []secretRef, p *problems, shown string) {
	for _, a := range refs {
		for _, b := range refs {
			if strings.HasPrefix(b.dest, a.dest+"/") {
				p.add("%s: %s.dest: %q is also used as a folder by %s.dest (%q)", shown, a.at, a.dest, b.at, b.dest)
			}
		}
	}
}

// readSecrets reads every referenced file from <dir>/secrets/ under mr.
func readSecrets(refs secretRefs, mr *os.Root, dir, shown string) (SecretSet, error) {
	var out SecretSet
	if refs.count() == 0 {
		return out, nil
	}
	if n := refs.count(); n > MaxSecrets {
		return out, userErr("%s: build-secrets: %d secrets, over the limit of %d", shown, n, MaxSecrets)
	}
	folder := dir + "/secrets/"
	sr, err := mr.OpenRoot("secrets")
	switch {
	case errors.Is(err, fs.ErrNotExist):
		sr = nil
	case err != nil:
		return out, userErr("%s: cannot be opened: %v", folder, unwrapPath(err))
	default:
		defer sr.Close()
	}
	var p problems
	var fatal error
	cache := map[string][]byte{}
	read := func(list []secretRef) []Secret {
		var secrets []Secret
		for _, r := range list {
			data, ok := cache[r.source]
			if !ok {
				var err error
				data, err = readSecret(sr, r, folder, shown)
				var ue *Error
				switch {
				case errors.As(err, &ue):
					p.add("%s", ue.Msg)
					continue
				case err != nil:
					fatal = err
					continue
				}
				cache[r.source] = data
			}
			secrets = append(secrets, Secret{Dest: r.dest, Content: data})
		}
		return secrets
	}
	out.Global = read(refs.global)
	for _, name := range sortedKeys(refs.services) {
		if out.Services == nil {
			out.Services = map[string][]Secret{}
		}
		out.Services[name] = read(refs.services[name])
	}
	if fatal != nil {
		return SecretSet{}, fatal
	}
	if err := p.err(); err != nil {
		return SecretSet{}, err
	}
	return out, nil
}

func readSecret(sr *os.Root, r secretRef, folder, shown string) ([]byte, error) {
	notFound := userErr("%s: %s.source: %q not found in %s", shown, r.at, r.source, folder)
	if sr == nil {
		return nil, notFound
	}
	if _, err := sr.Lstat(r.source); errors.Is(err, fs.ErrNotExist) {
		return nil, notFound
	}
	return readFile(sr, r.source, shown+": "+r.at+".source: "+folder+r.source, MaxSecretSize)
}

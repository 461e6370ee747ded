package metadata

import (
	"encoding/json"
	"os"
	"regexp"
	"sort"
	"strings"
	"unicode"
)

// DockerHubKey is the key Docker's X-Registry-Config expects for Docker
// Hub; every Docker Hub spelling in registry-secrets is moved to it.
const DockerHubKey = "https://index.docker.io/v1/"

// RegistryCredential is one registry's login from registry-secrets.
// Printing it (fmt, slog, encoding/json) never shows the password.
type RegistryCredential struct{ Username, Password string }

// registryFileNames in @balena/compose's order: when several exist, the
// last one wins.
var registryFileNames = []string{"registry-secrets.json", "registry-secrets.yml", "registry-secrets.yaml"}

// hubDomains are @balena/compose's Docker Hub spellings
// (addCanonicalDockerHubEntry), in its order of preference; "" is Docker
// Hub too.
var hubDomains = []string{"index.docker.io", "idx.docker.io", "docker.io", "cloud.docker.com", "hub.docker.com", "docker.com"}

var hubKey = regexp.MustCompile(`^(?:https?://)?(` + strings.ReplaceAll(strings.Join(hubDomains, "|"), ".", `\.`) + `)(?:/.*)?$`)

// hubRank orders Docker Hub keys by preference (lower first), or -1 if
// key is not Docker Hub.
func hubRank(key string) int {
	switch {
	case key == DockerHubKey:
		return 0
	case key == "":
		return 1
	}
	m := hubKey.FindStringSubmatch(key)
	if m == nil {
		return -1
	}
	for i, d := range hubDomains {
		if d == m[1] {
			return 2 + i
		}
	}
	return -1
}

func loadRegistrySecrets(m *Metadata, mr *os.Root, dir string) error {
	found := present(mr, registryFileNames...)
	if len(found) == 0 {
		return nil
	}
	name := found[len(found)-1]
	shown := dir + "/" + name
	data, err := readFile(mr, name, shown, MaxFileSize)
	if err != nil {
		return err
	}
	// quiet: a syntax error must not echo a password.
	v, err := decode(data, shown, isJSONName(name), true)
	if err != nil {
		return err
	}
	var top map[string]any
	switch x := v.(type) {
	case nil:
		return nil
	case map[string]any:
		top = x
	default:
		return userErr("%s: must be a mapping of registry hosts to {username, password}, not %s", shown, describe(v))
	}
	var p problems
	creds := map[string]RegistryCredential{}
	for _, host := range sortedKeys(top) {
		at := join("", host)
		if strings.ContainsFunc(host, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) {
			p.add("%s: %s: a registry address cannot contain spaces", shown, at)
			continue
		}
		entry, ok := top[host].(map[string]any)
		if !ok {
			p.add("%s: %s: must be a mapping with username and password, not %s", shown, at, describe(top[host]))
			continue
		}
		var c RegistryCredential
		good := true
		for _, k := range sortedKeys(entry) {
			s, isStr := entry[k].(string)
			switch {
			case k != "username" && k != "password":
				p.add("%s: %s: unknown key (expected username and password)", shown, join(at, k))
				good = false
			case !isStr:
				p.add("%s: %s: must be a string, not %s", shown, join(at, k), describe(entry[k]))
				good = false
			case k == "username":
				c.Username = s
			default:
				c.Password = s
			}
		}
		if good {
			creds[host] = c
		}
	}
	if err := p.err(); err != nil {
		return err
	}
	m.RegistryAuth = canonicalHub(creds)
	if len(m.RegistryAuth) == 0 {
		m.RegistryAuth = nil
	}
	return nil
}

// canonicalHub replaces every Docker Hub key with DockerHubKey, keeping
// the most preferred one's credential: DockerHubKey itself, then "", then
// by hubDomains order (ties by key).
func canonicalHub(creds map[string]RegistryCredential) map[string]RegistryCredential {
	var hub []string
	for k := range creds {
		if hubRank(k) >= 0 {
			hub = append(hub, k)
		}
	}
	if len(hub) == 0 {
		return creds
	}
	sort.Slice(hub, func(i, j int) bool {
		ri, rj := hubRank(hub[i]), hubRank(hub[j])
		if ri != rj {
			return ri < rj
		}
		return hub[i] < hub[j]
	})
	best := creds[hub[0]]
	for _, k := range hub {
		delete(creds, k)
	}
	creds[DockerHubKey] = best
	return creds
}

// authConfig is one entry of X-Registry-Config (Docker's
// registry.AuthConfig JSON).
type authConfig struct {
	Username      string `json:"username"`
	Password      string `json:"password"`
	ServerAddress string `json:"serveraddress"`
}

// RegistryConfigJSON returns the JSON of the Docker Engine API's
// X-Registry-Config (the plugin encodes the header): a map host →
// {"username","password","serveraddress"}; "" if
// there are no registry secrets. The value carries passwords: send it,
// never log it.
func (m *Metadata) RegistryConfigJSON() string {
	if m == nil || len(m.RegistryAuth) == 0 {
		return ""
	}
	cfg := make(map[string]authConfig, len(m.RegistryAuth))
	for host, c := range m.RegistryAuth {
		cfg[host] = authConfig{Username: c.Username, Password: c.Password, ServerAddress: host}
	}
	b, err := json.Marshal(cfg)
	if err != nil {
		return "" // strings only: cannot happen
	}
	return string(b)
}

package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/distribution/reference"

	"github.com/open-balena-builder/builder/plugins/engine"
)

// registryClient reads manifests from registries with a job's credentials:
// the job's token for the openBalena registry (own), registry_config for
// the others, anonymous otherwise. It asks the registry itself, where
// buildkitd would serve an image named by digest from its content store.
type registryClient struct {
	own   string
	token string
	auths engine.RegistryAuths
	http  *http.Client
}

func newRegistryClient(own, token string, auths engine.RegistryAuths) *registryClient {
	return &registryClient{own: own, token: token, auths: auths, http: &http.Client{Timeout: 60 * time.Second}}
}

// manifestAccept are the manifest media types asked for.
var manifestAccept = strings.Join([]string{
	"application/vnd.docker.distribution.manifest.v2+json",
	"application/vnd.docker.distribution.manifest.list.v2+json",
	"application/vnd.oci.image.manifest.v1+json",
	"application/vnd.oci.image.index.v1+json",
}, ", ")

// maxManifestSize bounds a manifest read into memory.
const maxManifestSize = 4 << 20

// manifest GETs name's manifest at ref (a tag or a digest).
func (r *registryClient) manifest(ctx context.Context, named reference.Named, ref string) ([]byte, error) {
	domain := reference.Domain(named)
	host := domain
	if host == "docker.io" {
		host = "registry-1.docker.io"
	}
	path := "/v2/" + reference.Path(named) + "/manifests/" + ref
	resp, err := r.get(ctx, host, path, "", named)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", resp.Status, registryErrorText(body))
	}
	return body, nil
}

// get does one authorized GET: the job's token for own; for another
// registry, anonymous first, then what its 401 challenge asks for.
func (r *registryClient) get(ctx context.Context, host, path, auth string, named reference.Named) (*http.Response, error) {
	if auth == "" && r.own != "" && r.token != "" && engine.RegistryHost(host) == engine.RegistryHost(r.own) {
		auth = "Bearer " + r.token
	}
	resp, err := r.do(ctx, host, path, auth)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || auth != "" {
		return resp, err
	}
	challenge := resp.Header.Get("WWW-Authenticate")
	_ = resp.Body.Close()
	auth, err = r.authorize(ctx, host, challenge, reference.Path(named))
	if err != nil {
		return nil, err
	}
	return r.do(ctx, host, path, auth)
}

// do sends a GET over https, or plain http when the registry answers
// https with plain HTTP (a loopback or insecure registry).
func (r *registryClient) do(ctx context.Context, host, path, auth string) (*http.Response, error) {
	send := func(scheme string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+host+path, nil)
		if err != nil {
			return nil, err
		}
		req.Header.Set("Accept", manifestAccept)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		return r.http.Do(req)
	}
	resp, err := send("https")
	if err != nil && strings.Contains(err.Error(), "server gave HTTP response to HTTPS client") {
		return send("http")
	}
	if err != nil && isLoopback(host) {
		return send("http")
	}
	return resp, err
}

// authorize answers a 401 challenge: Basic with registry_config's
// credentials, or Bearer with a token from the realm (with them, if any).
func (r *registryClient) authorize(ctx context.Context, host, challenge, repo string) (string, error) {
	ac, haveCreds := r.auths.Lookup(host)
	scheme, params := parseChallenge(challenge)
	switch strings.ToLower(scheme) {
	case "basic":
		if !haveCreds {
			return "", errors.New("the registry wants credentials and the job has none for it")
		}
		req, _ := http.NewRequest(http.MethodGet, "http://x", nil)
		req.SetBasicAuth(ac.Username, ac.Password)
		return req.Header.Get("Authorization"), nil
	case "bearer":
	default:
		return "", fmt.Errorf("unsupported registry challenge %q", scheme)
	}
	realm, err := url.Parse(params["realm"])
	if err != nil || realm.Host == "" {
		return "", fmt.Errorf("registry challenge: bad realm")
	}
	q := realm.Query()
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := params["scope"]
	if scope == "" {
		scope = "repository:" + repo + ":pull"
	}
	q.Set("scope", scope)
	realm.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, realm.String(), nil)
	if err != nil {
		return "", err
	}
	if haveCreds {
		if ac.IdentityToken != "" {
			req.Header.Set("Authorization", "Bearer "+ac.IdentityToken)
		} else {
			req.SetBasicAuth(ac.Username, ac.Password)
		}
	}
	resp, err := r.http.Do(req)
	if err != nil {
		return "", fmt.Errorf("registry token: %w", err)
	}
	defer resp.Body.Close()
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("registry token: %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return "", fmt.Errorf("registry token: %w", err)
	}
	if tok.Token == "" {
		tok.Token = tok.AccessToken
	}
	return "Bearer " + tok.Token, nil
}

// parseChallenge splits `Bearer realm="...",service="..."`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest != "" {
		rest = strings.TrimLeft(rest, " ,")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k], rest = v[1:1+end], v[2+end:]
		} else {
			val, next, _ := strings.Cut(v, ",")
			params[k], rest = strings.TrimSpace(val), next
		}
	}
	return scheme, params
}

// registryErrorText is the first error message of a registry's error body.
func registryErrorText(body []byte) string {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Errors) > 0 {
		return strings.ToLower(e.Errors[0].Code) + ": " + e.Errors[0].Message
	}
	return "no manifest"
}

// isLoopback tells whether a registry host is on this machine.
func isLoopback(host string) bool {
	h := host
	if hh, _, err := net.SplitHostPort(host); err == nil {
		h = hh
	}
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

// manifestSize is the size of an image manifest's content: its config and
// layers as stored in the registry (compressed).
func manifestSize(body []byte) (int64, error) {
	var m struct {
		Config struct {
			Size int64 `json:"size"`
		} `json:"config"`
		Layers []struct {
			Size int64 `json:"size"`
		} `json:"layers"`
		Manifests []json.RawMessage `json:"manifests"`
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return 0, err
	}
	if len(m.Manifests) > 0 {
		return 0, errors.New("an index, not an image manifest")
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

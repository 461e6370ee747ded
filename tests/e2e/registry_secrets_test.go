package e2e

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/tests/harness"
)

// privateBase pushes busybox to a repository of the token-auth registry and
// removes the host's copy of that name, so a build has to pull it. It
// returns the image under another name of that registry, localhost:<port>:
// to the builder a registry other than openBalena's own (127.0.0.1:<port>),
// which a job reaches with its own token only.
func privateBase(t *testing.T) string {
	t.Helper()
	h := make([]byte, 16)
	rand.Read(h)
	repo := "v2/" + hex.EncodeToString(h)
	ref := env.Registry.Addr() + "/" + repo
	e := env.AMD64.Engine()
	ctx := context.Background()
	q := url.Values{"repo": {ref}, "tag": {"latest"}}
	resp, err := e.Do(ctx, http.MethodPost, "/images/busybox:latest/tag?"+q.Encode(), nil, nil)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("tag: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	auth, _ := json.Marshal(map[string]string{"registrytoken": registryToken(t, repo, "pull,push")})
	if _, err := e.Stream(ctx, http.MethodPost, "/images/"+url.PathEscape(ref)+"/push?tag=latest", nil,
		http.Header{"X-Registry-Auth": {base64.URLEncoding.EncodeToString(auth)}}, nil); err != nil {
		t.Fatalf("push the private base: %v", err)
	}
	resp, err = e.Do(ctx, http.MethodDelete, "/images/"+url.PathEscape(ref+":latest"), nil, nil)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("untag: %v %v", err, resp.Status)
	}
	resp.Body.Close()
	return privateRegistry() + "/" + repo
}

// privateRegistry is the test registry under the name of a private one.
func privateRegistry() string {
	return strings.Replace(env.Registry.Addr(), "127.0.0.1:", "localhost:", 1)
}

func TestRegistrySecretsPullAPrivateBaseImage(t *testing.T) {
	base := privateBase(t)
	f := newFixture(t, "genericx86-64-ext")
	dockerfile := "FROM " + base + "\nRUN echo built-on-a-private-base # " + f.fleet.Slug + "\n"

	without := push(t, f, project(t, map[string]string{"Dockerfile": dockerfile}), harness.PushOptions{})
	if !without.IsError {
		t.Fatalf("a private base image was pulled without credentials:\n%s", without.Text())
	}

	secrets, _ := json.Marshal(map[string]map[string]string{privateRegistry(): {"username": "builder", "password": harness.BuilderToken}})
	with := push(t, f, project(t, map[string]string{
		"Dockerfile":                    dockerfile,
		".balena/registry-secrets.json": string(secrets),
	}), harness.PushOptions{})
	if with.IsError || !strings.Contains(with.Text(), "built-on-a-private-base") {
		t.Fatalf("with registry secrets the build failed:\n%s", with.Text())
	}
	for _, text := range []string{with.Text(), without.Text(), env.BuilderLog()} {
		if strings.Contains(text, harness.BuilderToken) {
			t.Fatal("a registry password reached a log or the response")
		}
	}
}

package e2e

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/tests/harness"
)

const secretValue = "super-secret-value-7f3a9"

// threeServices is a compose project with an image:-only service, a
// Dockerfile.template service and a service that reads a build secret.
func threeServices(f fixture) map[string]string {
	return map[string]string{
		"docker-compose.yml": `version: "2.4"
services:
  frontend:
    build: ./frontend
    labels:
      com.example.tier: web
    environment:
      MODE: prod
      EMPTY:
    volumes:
      - /var/run/balena-engine.sock:/var/run/balena-engine.sock
      - frontend-data:/data
    depends_on:
      - cache
  worker:
    build:
      context: ./worker
      args:
        GREETING: from-compose
    labels:
      io.balena.features.requires.arch.sw: aarch64
  cache:
    image: busybox
volumes:
  frontend-data: {}
`,
		"frontend/Dockerfile.template": "FROM busybox\nRUN echo \"template for %%BALENA_MACHINE_NAME%% %%BALENA_ARCH%% service %%BALENA_SERVICE_NAME%%\" # " + f.fleet.Slug + "\n",
		"worker/Dockerfile":            "FROM busybox\nARG GREETING\nRUN echo \"secret-len-$(wc -c < /run/secrets/api/token)\" # " + f.fleet.Slug + "\nRUN echo \"greeting=$GREETING\"\n",
		".balena/balena.yml": `build-variables:
  services:
    worker:
      - GREETING=from-balena-yml
build-secrets:
  services:
    worker:
      - source: worker-token
        dest: api/token
`,
		".balena/secrets/worker-token": secretValue,
		"balena.yml":                   "type: sw.application\nname: three-services\nversion: 1.4.0\n",
	}
}

func TestCLIComposeThreeServices(t *testing.T) {
	f := newFixture(t, "raspberrypi4-64")
	res := balenaPush(t, cli(t, f), f, project(t, threeServices(f)))
	out := plain(res.Stdout)
	if res.Code != 0 {
		t.Fatalf("exit %d\n%s\n%s", res.Code, out, res.Stderr)
	}
	for _, want := range []string{
		"template for raspberrypi4-64 aarch64 service frontend",
		fmt.Sprintf("secret-len-%d", len(secretValue)),
		"greeting=from-balena-yml",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(out, secretValue) {
		t.Error("the build output shows the secret")
	}
	id := releaseIDFrom(t, out)
	rel := waitRelease(t, id)
	if rel.Status != "success" || rel.Semver != "1.4.0" {
		t.Errorf("release status %q semver %q", rel.Status, rel.Semver)
	}
	var contract map[string]any
	if json.Unmarshal(rel.Contract, &contract) != nil || contract["type"] != "sw.application" {
		t.Errorf("release contract %s", rel.Contract)
	}
	var comp struct {
		Services map[string]map[string]any `json:"services"`
		Volumes  map[string]any            `json:"volumes"`
	}
	if err := json.Unmarshal(rel.Composition, &comp); err != nil {
		t.Fatal(err)
	}
	if len(comp.Services) != 3 || comp.Volumes["frontend-data"] == nil {
		t.Fatalf("composition %s", rel.Composition)
	}
	if labels, _ := comp.Services["frontend"]["labels"].(map[string]any); labels["io.balena.features.balena-socket"] != "1" {
		t.Errorf("frontend labels in the composition %v", comp.Services["frontend"]["labels"])
	}

	images := map[string]apistandin.Image{}
	serviceName := map[int64]string{}
	for _, s := range env.API.Services() {
		serviceName[s.ID] = s.ServiceName
	}
	for _, img := range imagesOf(t, id) {
		images[serviceName[img.Service]] = img
	}
	for _, name := range []string{"frontend", "worker", "cache"} {
		img := images[name]
		if img.Status != "success" || !digestRE.MatchString(img.ContentHash) {
			t.Errorf("image of %s: %+v", name, img)
		}
	}
	if images["frontend"].ProjectType != "Dockerfile.template" || images["cache"].ProjectType != "external service" {
		t.Errorf("project types %q %q", images["frontend"].ProjectType, images["cache"].ProjectType)
	}
	var workerContract map[string]any
	if json.Unmarshal(images["worker"].Contract, &workerContract) != nil || !strings.Contains(string(images["worker"].Contract), `"arch.sw"`) {
		t.Errorf("worker contract %s", images["worker"].Contract)
	}

	// image_label and image_environment_variable rows of the frontend.
	riOf := map[int64]int64{}
	for _, ri := range env.API.ReleaseImages() {
		if ri.Release == id {
			riOf[ri.Image] = ri.ID
		}
	}
	labels, envs := map[string]string{}, map[string]string{}
	for _, l := range env.API.ImageLabels() {
		if l.ReleaseImage == riOf[images["frontend"].ID] {
			labels[l.LabelName] = l.Value
		}
	}
	for _, e := range env.API.ImageEnvironmentVariables() {
		if e.ReleaseImage == riOf[images["frontend"].ID] {
			envs[e.Name] = e.Value
		}
	}
	if labels["com.example.tier"] != "web" || labels["io.balena.features.balena-socket"] != "1" {
		t.Errorf("frontend image_label rows %v", labels)
	}
	if v, ok := envs["EMPTY"]; envs["MODE"] != "prod" || !ok || v != "" {
		t.Errorf("frontend image_environment_variable rows %v", envs)
	}

	// No secret in any pushed layer of any image.
	for name, img := range images {
		if leak := scanImage(t, img.Location, img.ContentHash); leak != "" {
			t.Errorf("image of %s: %s", name, leak)
		}
	}
}

func TestComposeSecretsOnAClassicHostAreRefused(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext") // the amd64 host has only the classic builder
	files := threeServices(f)
	files["frontend/Dockerfile.template"] = "FROM busybox\nRUN sleep 5\n"
	res := push(t, f, project(t, files), harness.PushOptions{})
	text := res.Text()
	if !res.IsError || !strings.Contains(text, "build secrets need BuildKit") {
		t.Fatalf("a secret build on a classic host was not refused clearly:\n%s", text)
	}
	rel := waitRelease(t, res.ReleaseID)
	if rel.Status != "failed" {
		t.Errorf("release status %q", rel.Status)
	}
	for _, img := range imagesOf(t, rel.ID) {
		if img.Status == "running" || img.Status == "success" && img.PushTimestamp == nil {
			t.Errorf("image left %q", img.Status)
		}
	}
}

// scanImage downloads every layer of an image from the registry and says
// where the secret is, or "".
func scanImage(t *testing.T, location, digest string) string {
	t.Helper()
	repo := strings.TrimPrefix(location, env.Registry.Addr()+"/")
	tok := registryToken(t, repo, "pull")
	get := func(path string, accept string) *http.Response {
		req, _ := http.NewRequest(http.MethodGet, env.Registry.URL()+"/v2/"+repo+path, nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s: %v %v", path, err, resp.Status)
		}
		return resp
	}
	resp := get("/manifests/"+digest, "application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json")
	var manifest struct{ Layers []struct{ Digest string } }
	json.NewDecoder(resp.Body).Decode(&manifest)
	resp.Body.Close()
	if len(manifest.Layers) == 0 {
		t.Fatalf("manifest of %s has no layers", location)
	}
	for _, l := range manifest.Layers {
		resp := get("/blobs/"+l.Digest, "")
		zr, err := gzip.NewReader(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(zr)
		for {
			h, err := tr.Next()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(h.Name, "run/secrets/api") {
				resp.Body.Close()
				return "layer " + l.Digest + " has " + h.Name
			}
			b, _ := io.ReadAll(tr)
			if strings.Contains(string(b), secretValue) {
				resp.Body.Close()
				return "layer " + l.Digest + " file " + h.Name + " holds the secret"
			}
		}
		resp.Body.Close()
	}
	return ""
}

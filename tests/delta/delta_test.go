// Package delta pushes through a builder with DELTA_HOST set: the second
// release of a fleet gets a delta from the first one's image before it is
// finalized, and a delta server that fails leaves a warning, not a failed
// release. open-balena-delta needs balena-engine, which cannot run here: an
// httptest server answers as its code does and checks every request.
package delta

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/tests/harness"
)

// server is open-balena-delta's v3 endpoint.
type server struct {
	t        *testing.T
	registry string
	fail     atomic.Bool
	mu       sync.Mutex
	reqs     []string // "src -> dest"
	targets  []int64  // the fleet's target release when each request came
	api      *apistandin.Server
	fleetID  int64
}

func (d *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	src, dest := q.Get("src"), q.Get("dest")
	target, _ := d.api.FleetTarget(d.fleetID)
	d.mu.Lock()
	d.reqs = append(d.reqs, src+" -> "+dest)
	d.targets = append(d.targets, target)
	d.mu.Unlock()
	if r.Method != http.MethodGet || r.URL.Path != "/api/v3/delta" || q.Get("wait") != "true" {
		d.t.Errorf("delta request %s %s", r.Method, r.URL)
	}
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	access := map[string][]string{}
	if parts := strings.Split(tok, "."); ok && len(parts) == 3 {
		raw, _ := base64.RawURLEncoding.DecodeString(parts[1])
		var c struct {
			Access []struct {
				Name    string   `json:"name"`
				Actions []string `json:"actions"`
			} `json:"access"`
		}
		json.Unmarshal(raw, &c)
		for _, a := range c.Access {
			access[a.Name] = a.Actions
		}
	}
	for _, ref := range []string{src, dest} {
		name, digest, _ := strings.Cut(ref, "@")
		repo, ok := strings.CutPrefix(name, d.registry+"/")
		if !ok || !strings.HasPrefix(digest, "sha256:") || !slices.Contains(access[repo], "pull") {
			d.t.Errorf("delta for %q: token access %v", ref, access)
		}
	}
	if d.fail.Load() {
		http.Error(w, "Error: failed to create delta", http.StatusBadRequest)
		return
	}
	srcName, _, _ := strings.Cut(src, "@")
	destName, _, _ := strings.Cut(dest, "@")
	json.NewEncoder(w).Encode(map[string]string{"name": destName + ":delta-" + strings.TrimPrefix(srcName, d.registry+"/v2/")[:16]})
}

func project(t *testing.T, version string) string {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/Dockerfile", []byte("FROM busybox\nRUN echo "+version+" > /version\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReleasesGetDeltasBeforeTheyAreFinal(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := &server{t: t}
	hs := httptest.NewServer(d)
	defer hs.Close()
	s, err := harness.Start(ctx, harness.Options{Env: []string{"DELTA_HOST=" + hs.URL, "OBB_DELTA_TIMEOUT=1m"}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	d.registry, d.api = s.Registry.Addr(), s.API
	token := s.API.AddUser("deltas")
	fleet := s.API.AddFleet("deltas", "fleet", "genericx86-64-ext")
	d.fleetID = fleet.ID

	pushOK := func(version string) *harness.PushResult {
		t.Helper()
		res, err := harness.Push(ctx, s.BuilderURL, project(t, version), harness.PushOptions{Slug: fleet.Slug, Token: token})
		if err != nil {
			t.Fatal(err)
		}
		if res.IsError || res.ReleaseID == 0 {
			t.Fatalf("push %s: %d\n%s", version, res.Status, res.Text())
		}
		if r, _ := s.API.Release(res.ReleaseID); r.Status != "success" || !r.IsFinal {
			t.Errorf("release %d: %q final %v", res.ReleaseID, r.Status, r.IsFinal)
		}
		return res
	}
	image := func(releaseID int64) apistandin.Image {
		for _, ri := range s.API.ReleaseImages() {
			if ri.Release == releaseID {
				img, _ := s.API.Image(ri.Image)
				return img
			}
		}
		t.Fatalf("release %d has no image", releaseID)
		return apistandin.Image{}
	}

	first := pushOK("one")
	if strings.Contains(first.Text(), "[Delta]") || len(d.reqs) != 0 {
		t.Errorf("a first release asked for deltas: %v\n%s", d.reqs, first.Text())
	}
	second := pushOK("two")
	if !strings.Contains(second.Text(), "[Delta] Creating image deltas for main...") || !strings.Contains(second.Text(), "[Delta] Delta for main ready in") {
		t.Errorf("second push:\n%s", second.Text())
	}
	from, to := image(first.ReleaseID), image(second.ReleaseID)
	want := from.Location + "@" + from.ContentHash + " -> " + to.Location + "@" + to.ContentHash
	if len(d.reqs) != 1 || d.reqs[0] != want {
		t.Errorf("delta requests %v, want [%s]", d.reqs, want)
	}
	// Asked while the first release was still the target: devices see the
	// new release only once its delta exists.
	if len(d.targets) != 1 || d.targets[0] != first.ReleaseID {
		t.Errorf("the fleet's target when the delta was asked: %v, want %d", d.targets, first.ReleaseID)
	}

	// A delta server that fails: a warning, and the release is final anyway.
	d.fail.Store(true)
	third := pushOK("three")
	if !strings.Contains(third.Text(), "[Warn] Delta for main not made: delta server: 400 Error: failed to create delta; devices will ask for it on demand") {
		t.Errorf("third push:\n%s", third.Text())
	}
	if target, _ := s.API.FleetTarget(fleet.ID); target != third.ReleaseID {
		t.Errorf("fleet target %d, want the third release %d", target, third.ReleaseID)
	}
}

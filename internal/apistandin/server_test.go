package apistandin

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
)

func TestNewValidatesConfig(t *testing.T) {
	for _, cfg := range []Config{{Issuer: "x"}, {RegistryHost: "x"}} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

func TestPing(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/ping", "", nil)
	if r.status != 200 || string(r.body) != "OK" {
		t.Fatalf("ping: %s", r)
	}
}

func TestWhoami(t *testing.T) {
	h := newHarness(t)
	r := h.do("GET", "/actor/v1/whoami", h.key, nil)
	if r.status != 200 {
		t.Fatalf("actor whoami: %s", r)
	}
	m := r.obj(t)
	if m["actorType"] != "user" || m["username"] != "admin" || m["email"] != "admin@example.com" ||
		m["id"] == nil || m["actorTypeId"] == nil {
		t.Errorf("actor whoami body: %s", r.body)
	}
	r = h.do("GET", "/user/v1/whoami", h.key, nil)
	u := r.obj(t)
	if r.status != 200 || u["id"] != m["actorTypeId"] || u["username"] != "admin" || u["email"] != "admin@example.com" {
		t.Errorf("user whoami: %s", r)
	}
	for _, auth := range []string{"", "notakey", "Basic YWRtaW46eA=="} {
		for _, path := range []string{"/actor/v1/whoami", "/user/v1/whoami"} {
			if r := h.do("GET", path, auth, nil); r.status != 401 || len(r.body) != 0 {
				t.Errorf("%s with %q: %s", path, auth, r)
			}
		}
	}
	if r := h.do("GET", "/actor/v1/whoami?apikey="+h.key, "", nil); r.status != 200 {
		t.Errorf("whoami with ?apikey: %s", r)
	}
	// A second key of the same user, and another user.
	second := h.s.AddUser("admin")
	if len(second) != 32 || second == h.key || !regexp.MustCompile(`^[A-Za-z0-9]{32}$`).MatchString(second) {
		t.Errorf("API key %q", second)
	}
	if again := h.do("GET", "/actor/v1/whoami", second, nil).obj(t); again["id"] != m["id"] {
		t.Errorf("second key is another actor: %v", again)
	}
	if bob := h.do("GET", "/actor/v1/whoami", h.s.AddUser("bob"), nil).obj(t); bob["id"] == m["id"] || bob["username"] != "bob" {
		t.Errorf("bob: %v", bob)
	}
}

func TestUnauthenticatedCallers(t *testing.T) {
	h := newHarness(t)
	img := h.postImage()
	rel := h.postRelease(nil)
	for _, auth := range []string{"", "unknown-key"} {
		for _, path := range []string{"/v7/image(1)", "/v7/release", "/v7/application", "/v7/service"} {
			r := h.do("GET", path, auth, nil)
			if r.status != 200 || string(r.body) != `{"d":[]}` {
				t.Errorf("GET %s (auth %q): %s", path, auth, r)
			}
		}
		for _, c := range []struct{ method, path string }{
			{"POST", "/v7/release"}, {"PATCH", "/v7/release(1)"}, {"POST", "/v7/image"},
			{"PATCH", "/v7/image(1)"}, {"POST", "/v7/service"}, {"POST", "/v7/release_tag"},
		} {
			r := h.do(c.method, c.path, auth, h.releaseBody(nil))
			if r.status != 401 || len(r.body) != 0 {
				t.Errorf("%s %s (auth %q): %s", c.method, c.path, auth, r)
			}
		}
	}
	if d := h.do("GET", "/v7/device_type?$select=slug", "", nil).d(t); len(d) != 7 {
		t.Errorf("device types are public, got %v", d)
	}
	if h.release(rel).Status != "running" {
		t.Error("release changed")
	}
	if im, _ := h.s.Image(img); im.Status != "running" {
		t.Error("image changed")
	}
}

func TestBodyLimit(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", bodyLimit)
	cases := []struct {
		name   string
		size   int
		status int
	}{
		{"just under the limit", bodyLimit - 200, 201},
		{"over the limit", bodyLimit + 1, 413},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			body := h.releaseBody(map[string]any{"build_log": ""})
			raw, _ := marshal(body)
			pad := c.size - len(raw)
			body["build_log"] = big[:pad]
			r := h.do("POST", "/v7/release", h.key, body)
			if r.status != c.status {
				t.Fatalf("status: %s", r.String()[:80])
			}
			if c.status == 413 {
				if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") || !strings.Contains(string(r.body), "<html") {
					t.Errorf("413 must be an HTML page: %q %s", r.header.Get("Content-Type"), r.body)
				}
			}
		})
	}
	// Without a Content-Length (chunked), the limit still applies.
	req, _ := http.NewRequest("PATCH", h.ts.URL+"/v7/release(1)", strings.NewReader(`{"note":"`+big+`"}`))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+h.key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 413 {
		t.Errorf("chunked oversize body: %d", res.StatusCode)
	}
}

func TestMalformedJSON(t *testing.T) {
	h := newHarness(t)
	for _, body := range []string{`{"commit":`, `"a string"`, `{} {}`} {
		r := h.do("POST", "/v7/release", h.key, body)
		if r.status != 400 || !strings.Contains(string(r.body), "<html") {
			t.Errorf("body %q: %s", body, r)
		}
	}
}

func TestRoutes(t *testing.T) {
	h := newHarness(t)
	cases := []struct {
		method, path string
		status       int
	}{
		{"GET", "/v7/nosuchresource", 404},
		{"GET", "/resin/release", 404},
		{"GET", "/v6/release", 501},
		{"DELETE", "/v7/release(1)", 405},
		{"POST", "/v7/device_type", 401},
		{"POST", "/v7/application", 401},
	}
	for _, c := range cases {
		if r := h.do(c.method, c.path, h.key, map[string]any{}); r.status != c.status {
			t.Errorf("%s %s: %s, want %d", c.method, c.path, r, c.status)
		}
	}
}

func TestRequestsLog(t *testing.T) {
	h := newHarness(t)
	h.do("GET", "/ping", "", nil)
	h.do("PATCH", "/v7/release(5)?$filter=status ne 'success'", h.key, map[string]any{"status": "cancelled"})
	got := h.s.Requests()
	want := []string{"GET /ping", "PATCH /v7/release(5)?$filter=status ne 'success'"}
	if len(got) != len(want) {
		t.Fatalf("requests: %q", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("request %d: %q, want %q", i, got[i], want[i])
		}
	}
}

func TestGzipBodyAndMethods(t *testing.T) {
	h := newHarness(t)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	raw, _ := marshal(h.releaseBody(nil))
	zw.Write(raw)
	zw.Close()
	req, _ := http.NewRequest("POST", h.ts.URL+"/v7/release", &buf)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("Authorization", "Bearer "+h.key)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 201 {
		t.Errorf("gzip body: %d", res.StatusCode)
	}
	if r := h.do("PUT", "/v7/release(1)", h.key, map[string]any{"note": "x"}); r.status != 405 {
		t.Errorf("PUT: %s", r)
	}
	// A body that is not JSON is ignored, as body-parser does.
	req, _ = http.NewRequest("POST", h.ts.URL+"/v7/release", strings.NewReader(string(raw)))
	req.Header.Set("Content-Type", "text/plain")
	req.Header.Set("Authorization", "Bearer "+h.key)
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 500 {
		t.Errorf("text/plain body must read as {}: %d", res.StatusCode)
	}
}

func TestConcurrentUse(t *testing.T) {
	h := newHarness(t)
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			r := h.do("POST", "/v7/release", h.key, h.releaseBody(map[string]any{"commit": fmt.Sprint("c", i)}))
			if r.status != 201 {
				t.Errorf("POST %d: %s", i, r)
			}
			h.s.Releases()
			h.s.Requests()
		}(i)
	}
	wg.Wait()
	seen := map[int64]bool{}
	for _, r := range h.s.Releases() {
		if r.Revision == nil || seen[*r.Revision] {
			t.Errorf("revision of %d: %v", r.ID, ptrVal(r.Revision))
		} else {
			seen[*r.Revision] = true
		}
	}
	if len(seen) != 20 {
		t.Errorf("%d releases", len(seen))
	}
}

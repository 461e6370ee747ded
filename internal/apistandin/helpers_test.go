package apistandin

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

const (
	testRegistry = "127.0.0.1:5000"
	testIssuer   = "api.balena.local"
	testBuilder  = "builder-secret-token"
)

type harness struct {
	t     *testing.T
	s     *Server
	ts    *httptest.Server
	key   string // API key of user "admin"
	fleet Fleet
	clock time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, clock: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	s, err := New(Config{
		RegistryHost: testRegistry, Issuer: testIssuer, BuilderToken: testBuilder,
		Now: func() time.Time { return h.clock },
	})
	if err != nil {
		t.Fatal(err)
	}
	h.s = s
	h.ts = httptest.NewServer(s)
	t.Cleanup(h.ts.Close)
	h.key = s.AddUser("admin")
	h.fleet = s.AddFleet("admin", "amd64fleet", "genericx86-64-ext")
	return h
}

// tick advances the stand-in's clock.
func (h *harness) tick(d time.Duration) { h.clock = h.clock.Add(d) }

type resp struct {
	status int
	body   []byte
	header http.Header
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.status, r.body) }

// str decodes a JSON string body (the API's error shape).
func (r resp) str(t *testing.T) string {
	t.Helper()
	var s string
	if err := json.Unmarshal(r.body, &s); err != nil {
		t.Fatalf("body is not a JSON string: %s", r)
	}
	return s
}

func (r resp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body is not a JSON object: %s", r)
	}
	return m
}

// d returns the "d" array of an OData GET.
func (r resp) d(t *testing.T) []map[string]any {
	t.Helper()
	var v struct{ D []map[string]any }
	if err := json.Unmarshal(r.body, &v); err != nil || v.D == nil {
		t.Fatalf("body is not {\"d\":[...]}: %s", r)
	}
	return v.D
}

// encodeURL escapes a readable "path?k=v&k=v" (spaces, quotes, $...).
func encodeURL(p string) string {
	path, query, _ := strings.Cut(p, "?")
	path = strings.ReplaceAll(path, " ", "%20")
	if query == "" {
		return path
	}
	var parts []string
	for _, kv := range strings.Split(query, "&") {
		k, v, _ := strings.Cut(kv, "=")
		parts = append(parts, url.QueryEscape(k)+"="+url.QueryEscape(v))
	}
	return path + "?" + strings.Join(parts, "&")
}

// do sends a request. body: nil (none), string or []byte (raw JSON), or a
// value to marshal. auth: "" (none), a user API key (sent as Bearer), or
// a full Authorization header value when it contains a space.
func (h *harness) do(method, path, auth string, body any) resp {
	h.t.Helper()
	return h.doRaw(method, encodeURL(path), auth, body)
}

func (h *harness) doRaw(method, rawPath, auth string, body any) resp {
	h.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			h.t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, h.ts.URL+rawPath, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	switch {
	case auth == "":
	case strings.Contains(auth, " "):
		req.Header.Set("Authorization", auth)
	default:
		req.Header.Set("Authorization", "Bearer "+auth)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer res.Body.Close()
	data, err := io.ReadAll(res.Body)
	if err != nil {
		h.t.Fatal(err)
	}
	return resp{status: res.StatusCode, body: data, header: res.Header}
}

func (h *harness) get(path string) []map[string]any {
	h.t.Helper()
	r := h.do("GET", path, h.key, nil)
	if r.status != 200 {
		h.t.Fatalf("GET %s: %s", path, r)
	}
	return r.d(h.t)
}

// releaseBody is a valid POST release body for the harness fleet.
func (h *harness) releaseBody(extra map[string]any) map[string]any {
	b := map[string]any{
		"belongs_to__application": h.fleet.ID,
		"commit":                  "0123456789abcdef0123456789abcdef",
		"composition":             map[string]any{"services": map[string]any{"main": map[string]any{}}},
		"status":                  "running",
		"source":                  "cloud",
		"start_timestamp":         h.clock.UnixMilli(),
	}
	for k, v := range extra {
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
	}
	return b
}

// mustPost POSTs and returns the created row's id.
func (h *harness) mustPost(resource string, body any) int64 {
	h.t.Helper()
	r := h.do("POST", "/v7/"+resource, h.key, body)
	if r.status != 201 {
		h.t.Fatalf("POST %s: %s", resource, r)
	}
	return int64(r.obj(h.t)["id"].(float64))
}

func (h *harness) mustPatch(path string, body any) {
	h.t.Helper()
	r := h.do("PATCH", path, h.key, body)
	if r.status != 200 || len(r.body) != 0 {
		h.t.Fatalf("PATCH %s: %s", path, r)
	}
}

func (h *harness) postRelease(extra map[string]any) int64 {
	h.t.Helper()
	return h.mustPost("release", h.releaseBody(extra))
}

// postImage creates service "main" (once) and a running image of it.
func (h *harness) postImage() int64 {
	h.t.Helper()
	svc := h.serviceID("main")
	return h.mustPost("image", map[string]any{
		"is_a_build_of__service": svc, "status": "running", "start_timestamp": h.clock.UnixMilli(),
	})
}

func (h *harness) serviceID(name string) int64 {
	h.t.Helper()
	d := h.get(fmt.Sprintf("/v7/service(application=%d,service_name='%s')?$select=id", h.fleet.ID, name))
	if len(d) == 1 {
		return int64(d[0]["id"].(float64))
	}
	return h.mustPost("service", map[string]any{"application": h.fleet.ID, "service_name": name})
}

func (h *harness) release(id int64) Release {
	h.t.Helper()
	r, ok := h.s.Release(id)
	if !ok {
		h.t.Fatalf("release %d not found", id)
	}
	return r
}

func (h *harness) target() int64 {
	id, _ := h.s.FleetTarget(h.fleet.ID)
	return id
}

func ptrVal(p *int64) any {
	if p == nil {
		return nil
	}
	return *p
}

package admin

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/grpc"

	ingestv1 "github.com/open-balena-builder/builder/proto/builder/ingest/v1"
	schedulerv1 "github.com/open-balena-builder/builder/proto/builder/scheduler/v1"
)

const testToken = "operator-test-token"

type fakeIngest struct{ ingestv1.IngestServiceClient }

func (fakeIngest) ListBuilds(context.Context, *ingestv1.ListBuildsRequest, ...grpc.CallOption) (*ingestv1.ListBuildsResponse, error) {
	return &ingestv1.ListBuildsResponse{Builds: []*ingestv1.Build{{BuildId: "7", Fleet: "org/fleet"}}}, nil
}

type fakeScheduler struct {
	schedulerv1.SchedulerServiceClient
}

func (fakeScheduler) ListHosts(context.Context, *schedulerv1.ListHostsRequest, ...grpc.CallOption) (*schedulerv1.ListHostsResponse, error) {
	return &schedulerv1.ListHostsResponse{Hosts: []*schedulerv1.Host{{Name: "amd64-1", MaxConcurrent: 2}}}, nil
}

func surface(t *testing.T) *httptest.Server {
	t.Helper()
	s, err := New(context.Background(), Config{Token: testToken, Metrics: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("obb_up 1\n"))
	})}, fakeIngest{}, fakeScheduler{}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s)
	t.Cleanup(func() { srv.Close(); s.Stop() })
	return srv
}

func get(t *testing.T, method, url, token string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, string(b)
}

func TestPageIsServedWithoutTheToken(t *testing.T) {
	srv := surface(t)
	for path, want := range map[string]struct{ typ, has string }{
		"/":               {"text/html", `<script src="/ui/app.js"`},
		"/ui/":            {"text/html", `id="token"`},
		"/ui/index.html":  {"text/html", `type="password"`},
		"/ui/app.js":      {"text/javascript", "Authorization: 'Bearer ' + token"},
		"/ui/style.css":   {"text/css", ".log .info"},
		"/ui/favicon.svg": {"image/svg+xml", "<svg"},
		"/favicon.ico":    {"image/svg+xml", "<svg"},
	} {
		res, body := get(t, http.MethodGet, srv.URL+path, "")
		if res.StatusCode != http.StatusOK || !strings.HasPrefix(res.Header.Get("Content-Type"), want.typ) || !strings.Contains(body, want.has) {
			t.Errorf("GET %s without a token: %d %q, body has %q: %v", path, res.StatusCode, res.Header.Get("Content-Type"), want.has, strings.Contains(body, want.has))
		}
		h := res.Header
		if h.Get("Content-Security-Policy") != PageCSP || h.Get("X-Content-Type-Options") != "nosniff" || h.Get("X-Frame-Options") != "DENY" {
			t.Errorf("GET %s: headers %v", path, h)
		}
		if res, body := get(t, http.MethodHead, srv.URL+path, ""); res.StatusCode != http.StatusOK || body != "" {
			t.Errorf("HEAD %s: %d %q", path, res.StatusCode, body)
		}
	}
}

func TestPageCSP(t *testing.T) {
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "connect-src 'self'", "frame-ancestors 'none'"} {
		if !strings.Contains(PageCSP, want) {
			t.Errorf("CSP %q lacks %q", PageCSP, want)
		}
	}
	if strings.Contains(PageCSP, "unsafe") || strings.Contains(PageCSP, "http") || strings.Contains(PageCSP, "*") {
		t.Errorf("CSP %q allows too much", PageCSP)
	}
	// Nothing inline for the CSP to block, nothing from elsewhere.
	html, err := ui.ReadFile("ui/index.html")
	if err != nil {
		t.Fatal(err)
	}
	for _, tag := range regexp.MustCompile(`<script[^>]*>`).FindAllString(string(html), -1) {
		if !strings.Contains(tag, ` src="/ui/`) {
			t.Errorf("index.html has an inline script: %s", tag)
		}
	}
	for _, re := range []string{`<script[^>]*>\s*[^<\s]`, `<style`, `\sstyle=`, `\son[a-z]+=`, `https?://`, `javascript:`} {
		if m := regexp.MustCompile(re).FindString(string(html)); m != "" {
			t.Errorf("index.html has %q (%s)", m, re)
		}
	}
	// Without the script the form must not put the token in a URL.
	if tag := regexp.MustCompile(`<input[^>]*id="token"[^>]*>`).FindString(string(html)); tag == "" || strings.Contains(tag, "name=") {
		t.Errorf("the token field %q: want one, without a name", tag)
	}
	// Build logs are the users': the script puts text in, never HTML.
	js, err := ui.ReadFile("ui/app.js")
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "localStorage", "?token=", "&token="} {
		if strings.Contains(string(js), bad) {
			t.Errorf("app.js uses %s", bad)
		}
	}
}

func TestAPINeedsTheTokenStill(t *testing.T) {
	srv := surface(t)
	for _, path := range []string{"/v1/builds", "/v1/hosts", "/v1/builds/7", "/metrics", "/nope", "/index.htm", "/v1/builds?token=" + testToken} {
		res, body := get(t, http.MethodGet, srv.URL+path, "")
		if res.StatusCode != http.StatusUnauthorized || strings.Contains(body, "amd64-1") || strings.Contains(body, "org/fleet") {
			t.Errorf("GET %s without a token: %d %q", path, res.StatusCode, body)
		}
		if res, _ := get(t, http.MethodGet, srv.URL+path, "wrong-token"); res.StatusCode != http.StatusUnauthorized {
			t.Errorf("GET %s with a wrong token: %d", path, res.StatusCode)
		}
	}
	for path, want := range map[string]string{"/v1/hosts": "amd64-1", "/v1/builds": "org/fleet", "/metrics": "obb_up"} {
		if res, body := get(t, http.MethodGet, srv.URL+path, testToken); res.StatusCode != http.StatusOK || !strings.Contains(body, want) {
			t.Errorf("GET %s with the token: %d %q", path, res.StatusCode, body)
		}
	}
	// The page's paths take no writes, with or without a token.
	for _, path := range []string{"/", "/ui/app.js"} {
		if res, _ := get(t, http.MethodPost, srv.URL+path, testToken); res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("POST %s: %d, want 405", path, res.StatusCode)
		}
	}
}

func TestUnknownPagePathsAre404(t *testing.T) {
	srv := surface(t)
	for _, path := range []string{"/ui/nope", "/ui/app.js.map", "/ui/../admin.go", "/ui/ui/index.html", "/ui/page.go", "/ui/index.html/x"} {
		res, body := get(t, http.MethodGet, srv.URL+path, "")
		if res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d %q, want 404", path, res.StatusCode, body)
		}
		if res.Header.Get("Content-Security-Policy") == "" || res.Header.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("GET %s: headers %v", path, res.Header)
		}
	}
	if res, _ := get(t, http.MethodGet, srv.URL+"/ui", ""); res.StatusCode != http.StatusMovedPermanently || res.Header.Get("Location") != "/ui/" {
		t.Errorf("GET /ui: %d %q", res.StatusCode, res.Header.Get("Location"))
	}
}

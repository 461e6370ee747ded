package admin

import (
	"embed"
	"net/http"
	"strings"
)

// The build page: plain HTML, CSS and JavaScript from the binary, served
// without the token (they hold no data). The page asks for the operator
// token, keeps it in the tab's sessionStorage and calls the REST API with
// "Authorization: Bearer", never with the token in a URL.

//go:embed ui/index.html ui/app.js ui/style.css ui/favicon.svg
var ui embed.FS

type pageFile struct{ name, contentType string }

var (
	pageHTML = pageFile{"ui/index.html", "text/html; charset=utf-8"}
	pageIcon = pageFile{"ui/favicon.svg", "image/svg+xml"}
)

// pageFiles are the page's paths; anything else under /ui/ is 404.
var pageFiles = map[string]pageFile{
	"/":               pageHTML,
	"/ui/":            pageHTML,
	"/ui/index.html":  pageHTML,
	"/ui/app.js":      {"ui/app.js", "text/javascript; charset=utf-8"},
	"/ui/style.css":   {"ui/style.css", "text/css; charset=utf-8"},
	"/ui/favicon.svg": pageIcon,
	"/favicon.ico":    pageIcon,
}

// PageCSP is the build page's Content-Security-Policy: its own script and
// style files only (nothing inline, nothing from elsewhere), fetches to
// this origin only, never in a frame.
const PageCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// servePage answers the page's paths (/, /favicon.ico and /ui/...) and
// reports whether it did; other paths are the token-checked API's.
func servePage(w http.ResponseWriter, r *http.Request) bool {
	p := r.URL.Path
	f, known := pageFiles[p]
	if !known && p != "/ui" && !strings.HasPrefix(p, "/ui/") {
		return false
	}
	h := w.Header()
	h.Set("Content-Security-Policy", PageCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-cache")
	switch {
	case r.Method != http.MethodGet && r.Method != http.MethodHead:
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	case p == "/ui":
		http.Redirect(w, r, "/ui/", http.StatusMovedPermanently)
	case !known:
		http.Error(w, "404 page not found", http.StatusNotFound)
	default:
		b, err := ui.ReadFile(f.name)
		if err != nil {
			http.Error(w, "404 page not found", http.StatusNotFound)
			return true
		}
		h.Set("Content-Type", f.contentType)
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			_, _ = w.Write(b)
		}
	}
	return true
}

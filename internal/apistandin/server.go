package apistandin

import (
	"bytes"
	"compress/gzip"
	"compress/zlib"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"
)

// Config configures a Server.
type Config struct {
	// RegistryHost is REGISTRY2_HOST, e.g. "127.0.0.1:5000": image
	// locations are RegistryHost+"/v2/"+32 lowercase hex, and it is the
	// registry token audience.
	RegistryHost string
	// Issuer is the registry token issuer, e.g. "api.balena.local".
	Issuer string
	// BuilderToken is TOKEN_AUTH_BUILDER_TOKEN; empty disables it.
	BuilderToken string
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// bodyLimit is open-balena-api's bodyParser.json limit ("512kb").
const bodyLimit = 512 * 1024

// Server is the stand-in. It is an http.Handler and safe for concurrent use.
type Server struct {
	cfg      Config
	now      func() time.Time
	schema   *schema
	semverRE *regexp.Regexp
	sign     *signer
	token    tokenPatterns

	mu       sync.Mutex
	st       *state
	seq      map[string]int64
	actorSeq int64
	users    map[int64]*user
	apiKeys  map[string]int64
	requests []string
}

type user struct {
	id, actor       int64
	username, email string
}

// New returns a Server with the device types seeded, and generates the
// ECDSA P-256 key and self-signed certificate that sign registry tokens.
func New(cfg Config) (*Server, error) {
	if cfg.RegistryHost == "" {
		return nil, errors.New("apistandin: Config.RegistryHost is required")
	}
	if cfg.Issuer == "" {
		return nil, errors.New("apistandin: Config.Issuer is required")
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	sg, err := newSigner(cfg.Issuer, now())
	if err != nil {
		return nil, fmt.Errorf("apistandin: %w", err)
	}
	s := &Server{
		cfg:      cfg,
		now:      func() time.Time { return now().UTC().Truncate(time.Millisecond) },
		schema:   newSchema(),
		semverRE: semverPattern(),
		sign:     sg,
		token:    newTokenPatterns(),
		seq:      map[string]int64{},
		users:    map[int64]*user{},
		apiKeys:  map[string]int64{},
	}
	s.st = newState(s.schema)
	s.seed()
	return s, nil
}

// CertPEM returns the PEM certificate for the registry's
// auth.token.rootcertbundle.
func (s *Server) CertPEM() []byte { return bytes.Clone(s.sign.certPEM) }

// KeyID returns the libtrust key id of the token signing key (the JWT
// "kid"); base64 of it is what open-balena calls TOKEN_AUTH_CERT_KID.
func (s *Server) KeyID() string { return s.sign.kid }

// JWKS returns the signing key as a JSON Web Key Set (auth.token.jwks of
// distribution v3; registry 2.8 needs only CertPEM).
func (s *Server) JWKS() []byte { return bytes.Clone(s.sign.jwks) }

// Requests returns "METHOD path?query" (query decoded) of every request
// served so far, in order.
func (s *Server) Requests() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.requests...)
}

func (s *Server) nextID(table string) int64 {
	s.seq[table]++
	return s.seq[table]
}

// ServeHTTP serves the API.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, aerr := readBody(r)
	p := parseParams(r.URL.RawQuery)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, describeRequest(r))
	if aerr != nil {
		writeError(w, aerr)
		return
	}
	path := r.URL.Path
	switch {
	case path == "/ping":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "OK")
	case path == "/actor/v1/whoami" || path == "/user/v1/whoami":
		s.serveWhoami(w, r, p)
	case path == "/auth/v1/token":
		s.serveToken(w, r, p)
	case strings.HasPrefix(path, "/v7/"):
		s.serveOData(w, r, p, body)
	case strings.HasPrefix(path, "/v6/"):
		http.Error(w, "apistandin: /v6 is not implemented (use /v7)", http.StatusNotImplemented)
	default:
		w.WriteHeader(http.StatusNotFound)
	}
}

func describeRequest(r *http.Request) string {
	d := r.Method + " " + r.URL.Path
	if r.URL.RawQuery != "" {
		q := r.URL.RawQuery
		if u, err := url.QueryUnescape(q); err == nil {
			q = u
		}
		d += "?" + q
	}
	return d
}

// readBody parses the request body as express's body-parser does for the
// API: JSON (strict: object or array) and urlencoded forms, gzip or
// deflate encoded or not, with the 512kb limit (on the decoded body)
// answered by express's HTML 413 page. Other content types leave the body
// empty.
func readBody(r *http.Request) (any, *apiError) {
	if r.Body == nil {
		return nil, nil
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/json" && ct != "application/x-www-form-urlencoded" {
		return nil, nil
	}
	var rd io.Reader = r.Body
	switch enc := strings.ToLower(r.Header.Get("Content-Encoding")); enc {
	case "", "identity":
		if r.ContentLength > bodyLimit {
			return nil, htmlError(413, "Payload Too Large")
		}
	case "gzip", "deflate":
		var err error
		if enc == "gzip" {
			rd, err = gzip.NewReader(r.Body)
		} else {
			rd, err = zlib.NewReader(r.Body)
		}
		if err != nil {
			return nil, htmlError(400, "Bad Request")
		}
	default:
		return nil, htmlError(415, "Unsupported Media Type")
	}
	data, err := io.ReadAll(io.LimitReader(rd, bodyLimit+1))
	if err != nil {
		return nil, htmlError(400, "Bad Request")
	}
	if len(data) > bodyLimit {
		return nil, htmlError(413, "Payload Too Large")
	}
	if ct == "application/x-www-form-urlencoded" {
		form := map[string]any{}
		for k, v := range parseParams(string(data)) {
			form[k] = v[len(v)-1]
		}
		return form, nil
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return map[string]any{}, nil
	}
	if trimmed[0] != '{' && trimmed[0] != '[' {
		return nil, htmlError(400, "Bad Request")
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil || dec.More() {
		return nil, htmlError(400, "Bad Request")
	}
	return v, nil
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.contentType != "" {
		w.Header().Set("Content-Type", e.contentType)
	}
	w.WriteHeader(e.status)
	w.Write(e.body)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := marshal(v)
	if err != nil {
		writeError(w, emptyError(500))
		return
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(b)
}

// authenticate resolves an OData caller: "Authorization: Bearer <api key>"
// or ?apikey=<key>. An unknown key is no user, as pinejs treats it.
func (s *Server) authenticate(r *http.Request, p params) *user {
	if key, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer "); ok {
		return s.userByKey(strings.TrimSpace(key))
	}
	if key, ok := p.get("apikey"); ok {
		return s.userByKey(key)
	}
	return nil
}

func (s *Server) userByKey(key string) *user {
	if id, ok := s.apiKeys[key]; ok && key != "" {
		return s.users[id]
	}
	return nil
}

func (s *Server) serveWhoami(w http.ResponseWriter, r *http.Request, p params) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	u := s.authenticate(r, p)
	if u == nil {
		writeError(w, emptyError(401))
		return
	}
	if r.URL.Path == "/user/v1/whoami" {
		writeJSON(w, 200, object{{"id", u.id}, {"username", u.username}, {"email", u.email}})
		return
	}
	writeJSON(w, 200, object{
		{"id", u.actor}, {"actorType", "user"}, {"actorTypeId", u.id},
		{"username", u.username}, {"email", u.email},
	})
}

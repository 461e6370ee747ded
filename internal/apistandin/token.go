package apistandin

import (
	"net/http"
	"regexp"
	"strings"
)

// The registry token endpoint, after open-balena-api's
// src/features/registry/{registry,middleware}.ts.

type tokenPatterns struct {
	scope      *regexp.Regexp // SCOPE_PARSE_REGEX
	newReg     *regexp.Regexp // NEW_REGISTRY_REGEX: v2/<hash>[-n], <appId>/<buildId>
	appRelease *regexp.Regexp // APP_RELEASE_REGEX: <org>/<app>[/<semver|commit>[/<service>]]
	supervisor *regexp.Regexp
}

func newTokenPatterns() tokenPatterns {
	return tokenPatterns{
		scope: regexp.MustCompile(`^([a-z]+):([a-z0-9_-]+/[a-z0-9_-]+(?:/[a-z0-9_.-]+)?(?:/[a-z0-9_-]+)?|\d+/[\d-]+|v2/[a-z0-9]+-[0-9]+)` +
			`(?::[a-z0-9]+|@sha256:[a-f0-9]+)?:((?:push|pull|,)+)$`),
		newReg:     regexp.MustCompile(`(^(\d+)/[\d-]+$|^(v2/[a-z0-9]+)(-[0-9]+)?)`),
		appRelease: regexp.MustCompile(`^(([a-z0-9_-]+)/([a-z0-9_-]+))(?:/([a-z0-9_.-]+))?(?:/([a-z0-9_-]+))?$`),
		supervisor: regexp.MustCompile(`^resin/(?:[a-zA-Z0-9]+-)+supervisor$`),
	}
}

// access is one entry of the token's "access" claim.
type access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
	Alias   string   `json:"alias,omitempty"`
}

type scopeReq struct {
	typ, name string
	actions   []string
}

type tokenClaims struct {
	JTI    string   `json:"jti"`
	NBF    int64    `json:"nbf"`
	Access []access `json:"access"`
	IAT    int64    `json:"iat"`
	EXP    int64    `json:"exp"`
	AUD    string   `json:"aud"`
	ISS    string   `json:"iss"`
	SUB    string   `json:"sub"`
}

// tokenExpiry is REGISTRY_TOKEN_EXPIRY_SECONDS' default (4 hours).
const tokenExpiry = 14400

func (s *Server) serveToken(w http.ResponseWriter, r *http.Request, p params) {
	if r.Method != http.MethodGet {
		w.WriteHeader(http.StatusMethodNotAllowed)
		return
	}
	var (
		u       *user
		builder bool
	)
	authz := r.Header.Get("Authorization")
	switch {
	case authz != "":
		if _, pass, ok := r.BasicAuth(); ok {
			if s.cfg.BuilderToken != "" && pass == s.cfg.BuilderToken {
				builder = true
			} else if u = s.userByKey(pass); u == nil {
				writeError(w, emptyError(401))
				return
			}
		} else if key, ok := strings.CutPrefix(authz, "Bearer "); ok {
			if u = s.userByKey(strings.TrimSpace(key)); u == nil {
				writeError(w, emptyError(401))
				return
			}
		} else {
			writeError(w, emptyError(401))
			return
		}
	default:
		if key, ok := p.get("apikey"); ok {
			if u = s.userByKey(key); u == nil {
				writeError(w, emptyError(401))
				return
			}
		}
	}

	var scopes []scopeReq
	for _, raw := range p["scope"] {
		if m := s.token.scope.FindStringSubmatch(raw); m != nil && m[1] == "repository" {
			scopes = append(scopes, scopeReq{typ: m[1], name: m[2], actions: strings.Split(m[3], ",")})
		}
	}
	grants := make([]access, 0, len(scopes))
	for _, sc := range scopes {
		if builder {
			grants = append(grants, s.builderAccess(sc))
		} else {
			grants = append(grants, s.callerAccess(u, sc))
		}
	}
	sub := ""
	if u != nil {
		sub = u.username
	}
	now := s.now().Unix()
	tok, err := s.sign.signJWT(tokenClaims{
		JTI: newUUID(), NBF: now - 10, Access: grants, IAT: now, EXP: now + tokenExpiry,
		AUD: s.cfg.RegistryHost, ISS: s.cfg.Issuer, SUB: sub,
	})
	if err != nil {
		writeError(w, emptyError(500))
		return
	}
	writeJSON(w, 200, object{{"token", tok}})
}

// builderAccess is grantAllToBuilder: pull,push on every parsed scope
// (pull only on resin/resinos and supervisors), intersected with the
// requested actions.
func (s *Server) builderAccess(sc scopeReq) access {
	allowed := []string{"pull", "push"}
	if sc.name == "resin/resinos" || s.token.supervisor.MatchString(sc.name) {
		allowed = []string{"pull"}
	}
	return access{Type: sc.typ, Name: sc.name, Actions: intersect(sc.actions, allowed)}
}

// callerAccess is authorizeRequest for a user (u) or an anonymous caller
// (u nil).
func (s *Server) callerAccess(u *user, sc scopeReq) access {
	if sc.name == "resin/resinos" || s.token.supervisor.MatchString(sc.name) {
		return access{Type: sc.typ, Name: sc.name, Actions: intersect(sc.actions, []string{"pull"})}
	}
	if m := s.token.newReg.FindStringSubmatch(sc.name); m != nil {
		effective := sc.name
		if m[4] != "" {
			effective = m[3] // a multistage cache repo is authorised as its root image
		}
		return s.resolveAccess(u, sc, sc.name, effective, sc.actions, nil, "")
	}
	if m := s.token.appRelease.FindStringSubmatch(sc.name); m != nil {
		slug, version, service := m[1], m[4], m[5]
		if service != "" {
			return access{Type: sc.typ, Name: sc.name, Actions: []string{}}
		}
		switch version {
		case "latest", "current", "default", "pinned":
			version = ""
		}
		if loc := s.resolveImageLocation(u, slug, version); loc != "" {
			_, name, _ := strings.Cut(loc, "/")
			return s.resolveAccess(u, sc, name, name, intersect(sc.actions, []string{"pull"}), []string{"pull"}, sc.name)
		}
		if version != "" {
			return access{Type: sc.typ, Name: sc.name, Actions: []string{}}
		}
	}
	// legacy public-read <app>/<commit> names
	return s.resolveAccess(u, sc, sc.name, sc.name, sc.actions, []string{"pull"}, "")
}

func (s *Server) resolveAccess(u *user, sc scopeReq, name, effective string, requested, defaults []string, alias string) access {
	allowed := append([]string(nil), defaults...)
	needsPull := contains(requested, "pull") && !contains(defaults, "pull")
	needsPush := contains(requested, "push") && !contains(defaults, "push")
	if needsPull || needsPush {
		if img := s.imageByLocationSuffix(effective); img != nil {
			if needsPull && s.canPullImage(u, img.id()) {
				allowed = append(allowed, "pull")
			}
			if needsPush && u != nil { // users hold resin.image.all
				allowed = append(allowed, "push")
			}
		}
	}
	return access{Type: sc.typ, Name: name, Actions: intersect(requested, allowed), Alias: alias}
}

func (s *Server) imageByLocationSuffix(suffix string) row {
	for _, img := range s.st.rows("image") {
		if strings.HasSuffix(img.str("is_stored_at__image_location"), suffix) {
			return img
		}
	}
	return nil
}

// canPullImage: the caller can read an application owning a release that
// contains the image.
func (s *Server) canPullImage(u *user, imageID int64) bool {
	c := &evalCtx{s: s, st: s.st, u: u}
	for _, ri := range s.st.rows("image__is_part_of__release") {
		if ri.int("image") != imageID {
			continue
		}
		rel, ok := s.st.get("release", ri.int("is_part_of__release"))
		if !ok {
			continue
		}
		if app, ok := s.st.get("application", rel.int("belongs_to__application")); ok &&
			c.canRead(s.schema.tables["application"], app) {
			return true
		}
	}
	return false
}

// resolveImageLocation finds the successful image of a single-service,
// successful release of the fleet: its target release when version is
// empty, else the release with that commit, final semver or draft
// raw_version.
func (s *Server) resolveImageLocation(u *user, slug, version string) string {
	c := &evalCtx{s: s, st: s.st, u: u}
	appT := s.schema.tables["application"]
	type cand struct {
		loc   string
		rev   *int64
		image int64
	}
	var cands []cand
	for _, ri := range s.st.rows("image__is_part_of__release") {
		img, ok := s.st.get("image", ri.int("image"))
		if !ok || img.str("status") != "success" {
			continue
		}
		rel, ok := s.st.get("release", ri.int("is_part_of__release"))
		if !ok || rel.str("status") != "success" {
			continue
		}
		app, ok := s.st.get("application", rel.int("belongs_to__application"))
		if !ok || app.str("slug") != slug || !c.canRead(appT, app) {
			continue
		}
		n := 0
		for _, o := range s.st.rows("image__is_part_of__release") {
			if o.int("is_part_of__release") == rel.id() {
				n++
			}
		}
		if n != 1 {
			continue
		}
		v := versionOf(rel)
		final := !rel.isNull("revision")
		if version == "" {
			if app["should_be_running__release"] != rel.id() {
				continue
			}
		} else if rel.str("commit") != version && !(final && v.semver == version) && !(!final && v.raw == version) {
			continue
		}
		cd := cand{loc: img.str("is_stored_at__image_location"), image: img.id()}
		if final {
			rev := rel.int("revision")
			cd.rev = &rev
		}
		cands = append(cands, cd)
	}
	best := -1
	for i, cd := range cands {
		if best < 0 {
			best = i
			continue
		}
		b := cands[best]
		switch {
		case cd.rev == nil && b.rev != nil: // NULLS FIRST for desc
			best = i
		case cd.rev != nil && b.rev != nil && *cd.rev > *b.rev:
			best = i
		case (cd.rev == nil) == (b.rev == nil) && (cd.rev == nil || *cd.rev == *b.rev) && cd.image < b.image:
			best = i
		}
	}
	if best < 0 {
		return ""
	}
	return cands[best].loc
}

// intersect is lodash's _.intersection(requested, allowed).
func intersect(requested, allowed []string) []string {
	out := []string{}
	for _, a := range requested {
		if contains(allowed, a) && !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

func newUUID() string {
	h := randomHex(16)
	b := []byte(h)
	b[12] = '4'
	b[16] = "89ab"[int(b[16])%4]
	return string(b[0:8]) + "-" + string(b[8:12]) + "-" + string(b[12:16]) + "-" + string(b[16:20]) + "-" + string(b[20:])
}

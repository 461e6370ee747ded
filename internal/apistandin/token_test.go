package apistandin

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"regexp"
	"strings"
	"testing"
)

type jwtParts struct {
	header map[string]any
	claims tokenClaims
	raw    map[string]any // claims as a generic map
	keys   []string       // claim names in order
}

// verifyJWT checks an ES256 token against the certificate in CertPEM the
// way docker registry 2.8 does (kid = libtrust id of the cert's key,
// signature = R||S over "header.payload") and decodes it.
func verifyJWT(t *testing.T, s *Server, tok string) jwtParts {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("token has %d parts", len(parts))
	}
	dec := func(p string) []byte {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatalf("base64url (no padding) decode %q: %v", p, err)
		}
		return b
	}
	block, _ := pem.Decode(s.CertPEM())
	if block == nil || block.Type != "CERTIFICATE" {
		t.Fatal("CertPEM is not a PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve.Params().Name != "P-256" {
		t.Fatalf("cert key is %T", cert.PublicKey)
	}
	var out jwtParts
	if err := json.Unmarshal(dec(parts[0]), &out.header); err != nil {
		t.Fatal(err)
	}
	if string(dec(parts[0])) != fmt.Sprintf(`{"alg":"ES256","typ":"JWT","kid":"%s"}`, s.KeyID()) {
		t.Errorf("header: %s", dec(parts[0]))
	}
	wantKid, err := libtrustKeyID(pub)
	if err != nil || out.header["kid"] != wantKid {
		t.Errorf("kid %v, want the libtrust id of the cert key %s", out.header["kid"], wantKid)
	}
	sig := dec(parts[2])
	if len(sig) != 64 {
		t.Fatalf("signature is %d bytes, want 64 (R||S)", len(sig))
	}
	digest := sha256.Sum256([]byte(parts[0] + "." + parts[1]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		t.Fatal("signature does not verify with the certificate's key")
	}
	payload := dec(parts[1])
	if err := json.Unmarshal(payload, &out.claims); err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(payload, &out.raw)
	d := json.NewDecoder(strings.NewReader(string(payload)))
	d.Token()
	for d.More() {
		k, _ := d.Token()
		out.keys = append(out.keys, k.(string))
		var skip json.RawMessage
		d.Decode(&skip)
	}
	return out
}

func (h *harness) token(auth, query string) (resp, jwtParts) {
	h.t.Helper()
	r := h.doRaw("GET", "/auth/v1/token?"+query, auth, nil)
	if r.status != 200 {
		return r, jwtParts{}
	}
	var body map[string]any
	if err := json.Unmarshal(r.body, &body); err != nil || len(body) != 1 || body["token"] == nil {
		h.t.Fatalf("token body must be only {\"token\":...}: %s", r)
	}
	return r, verifyJWT(h.t, h.s, body["token"].(string))
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func accessString(a []access) string {
	var parts []string
	for _, e := range a {
		s := e.Name + "=" + strings.Join(e.Actions, ",")
		if e.Alias != "" {
			s += "(alias " + e.Alias + ")"
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, " ")
}

func TestTokenClaims(t *testing.T) {
	h := newHarness(t)
	_, jwt := h.token(basic("builder", testBuilder), "service=something.else&scope=repository:v2/0123abcd:push,pull")
	c := jwt.claims
	if c.AUD != testRegistry || c.ISS != testIssuer || c.SUB != "" {
		t.Errorf("aud/iss/sub: %+v", c)
	}
	if c.IAT != h.clock.Unix() || c.NBF != c.IAT-10 || c.EXP != c.IAT+14400 {
		t.Errorf("times: %+v", c)
	}
	if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`).MatchString(c.JTI) {
		t.Errorf("jti %q", c.JTI)
	}
	if strings.Join(jwt.keys, ",") != "jti,nbf,access,iat,exp,aud,iss,sub" {
		t.Errorf("claim order: %v", jwt.keys)
	}
	if fmt.Sprint(jwt.raw["access"]) != "[map[actions:[push pull] name:v2/0123abcd type:repository]]" {
		t.Errorf("access: %v", jwt.raw["access"])
	}
	_, jwt2 := h.token(basic("builder", testBuilder), "scope=repository:v2/0123abcd:pull")
	if jwt2.claims.JTI == c.JTI {
		t.Error("jti must be random")
	}
}

func TestTokenAccess(t *testing.T) {
	h := newHarness(t)
	user := h.s.AddUser("bob")
	// An image linked to a release, one that is not, and no image at all.
	rel := h.postRelease(map[string]any{"commit": "linked"})
	linked := h.postImage()
	h.mustPost("release_image", map[string]any{"image": linked, "is_part_of__release": rel})
	unlinked := h.postImage()
	hashOf := func(id int64) string {
		img, _ := h.s.Image(id)
		return strings.TrimPrefix(img.Location, testRegistry+"/")
	}
	lk, ul := hashOf(linked), hashOf(unlinked)
	missing := "v2/" + strings.Repeat("f", 32)

	cases := []struct {
		name, auth, scopes string
		want               string // access entries, or "401"
		sub                string
	}{
		{"builder, no image row", basic("builder", testBuilder), "scope=repository:" + missing + ":pull,push", missing + "=pull,push", ""},
		{"builder, requested pull only", basic("x", testBuilder), "scope=repository:" + missing + ":pull", missing + "=pull", ""},
		{"builder, resinos pull only", basic("builder", testBuilder), "scope=repository:resin/resinos:push,pull", "resin/resinos=pull", ""},
		{"builder, multiple scopes", basic("builder", testBuilder),
			"scope=repository:" + lk + ":push,pull&scope=repository:" + ul + ":pull", lk + "=push,pull " + ul + "=pull", ""},
		{"user bearer, linked image", "Bearer " + h.key, "scope=repository:" + lk + ":pull,push", lk + "=pull,push", "admin"},
		{"user bearer, multistage cache repo", "Bearer " + h.key, "scope=repository:" + lk + "-1:pull,push", lk + "-1=pull,push", "admin"},
		{"user bearer, image not in a release", "Bearer " + h.key, "scope=repository:" + ul + ":pull,push", ul + "=push", "admin"},
		{"user bearer, no image row", "Bearer " + h.key, "scope=repository:" + missing + ":pull,push", missing + "=", "admin"},
		{"user basic with API key", basic("whoever", user), "scope=repository:" + lk + ":pull", lk + "=pull", "bob"},
		{"user ?apikey", "", "apikey=" + user + "&scope=repository:" + lk + ":pull", lk + "=pull", "bob"},
		{"user, fleet slug (legacy name)", "Bearer " + h.key, "scope=repository:admin/amd64fleet:pull", "admin/amd64fleet=pull", "admin"},
		{"user, fleet slug push", "Bearer " + h.key, "scope=repository:admin/amd64fleet:push", "admin/amd64fleet=", "admin"},
		{"user, service of a fleet", "Bearer " + h.key, "scope=repository:admin/amd64fleet/latest/main:pull", "admin/amd64fleet/latest/main=", "admin"},
		{"anonymous, linked image", "", "scope=repository:" + lk + ":pull,push", lk + "=", ""},
		{"anonymous, fleet slug (legacy public read)", "", "scope=repository:admin/amd64fleet:pull,push", "admin/amd64fleet=pull", ""},
		{"anonymous, two scopes", "", "scope=repository:" + missing + ":pull&scope=repository:" + ul + ":push", missing + "= " + ul + "=", ""},
		{"host-prefixed name is dropped", basic("builder", testBuilder), "scope=repository:" + testRegistry + "/" + lk + ":pull,push", "", ""},
		{"host-prefixed name, user", "Bearer " + h.key, "scope=repository:registry2.balena.local/" + lk + ":pull", "", "admin"},
		{"tag and digest are not part of the name", "Bearer " + h.key,
			"scope=repository:" + lk + ":latest:pull&scope=repository:" + lk + "@sha256:" + strings.Repeat("a", 64) + ":pull", lk + "=pull " + lk + "=pull", "admin"},
		{"non-repository scope dropped", basic("builder", testBuilder), "scope=registry:catalog:*", "", ""},
		{"docker login, no scope", basic("builder", testBuilder), "account=builder&client_id=docker&offline_token=true&service=" + testRegistry, "", ""},
		{"wrong builder password", basic("builder", "wrong"), "scope=repository:" + missing + ":pull", "401", ""},
		{"empty password", basic("builder", ""), "scope=repository:" + missing + ":pull", "401", ""},
		{"unknown bearer", "Bearer nope", "scope=repository:" + missing + ":pull", "401", ""},
		{"builder token as bearer", "Bearer " + testBuilder, "scope=repository:" + missing + ":pull", "401", ""},
		{"unknown ?apikey", "", "apikey=nope&scope=repository:" + missing + ":pull", "401", ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r, jwt := h.token(c.auth, c.scopes)
			if c.want == "401" {
				if r.status != 401 || len(r.body) != 0 {
					t.Fatalf("want 401 with an empty body: %s", r)
				}
				return
			}
			if r.status != 200 {
				t.Fatalf("status: %s", r)
			}
			if got := accessString(jwt.claims.Access); got != c.want {
				t.Errorf("access %q, want %q", got, c.want)
			}
			if _, ok := jwt.raw["access"].([]any); !ok {
				t.Errorf("access must be an array, got %#v", jwt.raw["access"])
			}
			if jwt.claims.SUB != c.sub {
				t.Errorf("sub %q, want %q", jwt.claims.SUB, c.sub)
			}
		})
	}
}

func TestTokenAppReleaseNames(t *testing.T) {
	h := newHarness(t)
	rel := h.postRelease(map[string]any{"commit": "abc123", "semver": "1.0.0"})
	img := h.postImage()
	h.mustPost("release_image", map[string]any{"image": img, "is_part_of__release": rel})
	h.mustPatch(fmt.Sprintf("/v7/image(%d)", img), map[string]any{"status": "success", "push_timestamp": h.clock.UnixMilli()})
	h.mustPatch(fmt.Sprintf("/v7/release(%d)", rel), map[string]any{"status": "success"})
	i, _ := h.s.Image(img)
	name := strings.TrimPrefix(i.Location, testRegistry+"/")
	for _, c := range []struct{ scope, want string }{
		{"admin/amd64fleet:pull", name + "=pull(alias admin/amd64fleet)"},
		{"admin/amd64fleet/latest:pull", name + "=pull(alias admin/amd64fleet/latest)"},
		{"admin/amd64fleet/abc123:pull,push", name + "=pull(alias admin/amd64fleet/abc123)"},
		{"admin/amd64fleet/1.0.0:pull", name + "=pull(alias admin/amd64fleet/1.0.0)"},
		{"admin/amd64fleet/9.9.9:pull", "admin/amd64fleet/9.9.9="},
	} {
		_, jwt := h.token("Bearer "+h.key, "scope=repository:"+c.scope)
		if got := accessString(jwt.claims.Access); got != c.want {
			t.Errorf("%s: %q, want %q", c.scope, got, c.want)
		}
	}
}

func TestLibtrustKeyID(t *testing.T) {
	h := newHarness(t)
	kid := h.s.KeyID()
	if !regexp.MustCompile(`^([A-Z2-7]{4}:){11}[A-Z2-7]{4}$`).MatchString(kid) {
		t.Fatalf("kid %q is not 12 groups of 4 base32 characters", kid)
	}
	// Independent computation from the certificate.
	block, _ := pem.Decode(h.s.CertPEM())
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	enc := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var groups []string
	for i := 0; i < 48; i += 4 {
		groups = append(groups, enc[i:i+4])
	}
	if want := strings.Join(groups, ":"); kid != want {
		t.Errorf("kid %s, want %s", kid, want)
	}
	if !cert.IsCA || cert.Subject.CommonName != testIssuer {
		t.Errorf("cert: CA %v CN %q", cert.IsCA, cert.Subject.CommonName)
	}
	var jwks struct {
		Keys []struct{ Kty, Crv, Kid, X, Y string }
	}
	if err := json.Unmarshal(h.s.JWKS(), &jwks); err != nil || len(jwks.Keys) != 1 {
		t.Fatalf("JWKS: %s %v", h.s.JWKS(), err)
	}
	k := jwks.Keys[0]
	pub := cert.PublicKey.(*ecdsa.PublicKey)
	point, _ := pub.Bytes()
	x, _ := base64.RawURLEncoding.DecodeString(k.X)
	y, _ := base64.RawURLEncoding.DecodeString(k.Y)
	if k.Kty != "EC" || k.Crv != "P-256" || k.Kid != kid || string(x) != string(point[1:33]) || string(y) != string(point[33:]) {
		t.Errorf("JWKS key: %+v", k)
	}
	// Two servers have different keys.
	s2, _ := New(Config{RegistryHost: testRegistry, Issuer: testIssuer})
	if s2.KeyID() == kid {
		t.Error("keys must be generated per server")
	}
}

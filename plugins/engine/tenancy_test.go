package engine

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/distribution/reference"
	"github.com/docker/docker/api/types/image"
	"github.com/moby/buildkit/session/auth"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func TestBaseImages(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		args       map[string]string
		want       string
		unresolved string
	}{
		{"one image", "FROM busybox\nRUN x\n", nil, "busybox", ""},
		{"platform flag and stage", "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM build\nFROM scratch\n", nil, "golang:1.22", ""},
		{"stage names in any case", "FROM alpine AS Base\nFROM base\n", nil, "alpine", ""},
		{"a stage name used before its stage is an image", "FROM app\nFROM alpine AS app\n", nil, "app,alpine", ""},
		{"global ARG default", "ARG BASE=reg.example.com/base:1\nFROM ${BASE}\n", nil, "reg.example.com/base:1", ""},
		{"quoted ARG default, several ARGs", "ARG A=1 BASE=\"r.io/x\"\nFROM $BASE:$A\n", nil, "r.io/x:1", ""},
		{"build arg wins", "ARG BASE=busybox\nFROM $BASE\n", map[string]string{"BASE": "r.io/x"}, "r.io/x", ""},
		{"a build arg without ARG is not seen", "FROM $BASE\n", map[string]string{"BASE": "r.io/x"}, "", "$BASE"},
		{"default of an unset ARG", "ARG BASE\nFROM ${BASE:-busybox}\n", nil, "busybox", ""},
		{"alternative of a set ARG", "ARG V=1\nFROM busybox${V:+:1.36}\n", nil, "busybox:1.36", ""},
		{"unset ARG", "FROM $NOPE\n", nil, "", "$NOPE"},
		{"empty ARG", "ARG B\nFROM $B\n", nil, "", "$B"},
		{"ARG after FROM is not global", "FROM busybox\nARG B=x\nFROM $B\n", nil, "busybox", "$B"},
		{"continuation lines and comments in them", "FROM \\\n# the base\n  registry2.example.com/v2/abc\n", nil, "registry2.example.com/v2/abc", ""},
		{"escape directive", "# escape=`\nFROM `\n  r.io/y\nRUN dir c:\\\n", nil, "r.io/y", ""},
		{"lower case from", "from busybox as b\n", nil, "busybox", ""},
		{"not a reference", "FROM Not:A:Ref!\n", nil, "", "Not:A:Ref!"},
		{"image ids", "FROM 5\nFROM sha256:59753f\n", nil, "5,sha256:59753f", ""},
		{"COPY --from an image, a stage, an index", "FROM busybox AS b\nCOPY --from=b /x /x\nCOPY --from=0 /x /x\nCOPY --chown=1 --from=r.io/z:1 /a /a\nCOPY --from=later /y /y\nFROM alpine AS later\n", nil, "busybox,r.io/z:1,alpine", ""},
		{"COPY --from an id, ADD --from", "FROM busybox\nCOPY --from=e3f /x /x\nADD --from=r.io/w /x /x\n", nil, "busybox,e3f,r.io/w", ""},
		{"COPY --from a variable", "FROM busybox\nARG S\nCOPY --from=$S /x /x\n", nil, "busybox", "$S"},
		{"RUN --mount from", "FROM busybox AS b\nRUN --mount=type=bind,from=r.io/m,target=/m --mount=type=cache,target=/c ls\nRUN --mount=from=b,target=/b ls\n", nil, "busybox,r.io/m", ""},
		{"a RUN that only says FROM", "FROM busybox\nRUN echo FROM evil --from=x\n", nil, "busybox", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := baseImages([]byte(tt.dockerfile), tt.args)
			if strings.Join(got.names, ",") != tt.want || strings.Join(got.unresolved, ",") != tt.unresolved {
				t.Errorf("baseImages = %q unresolved %q, want %q unresolved %q", got.names, got.unresolved, tt.want, tt.unresolved)
			}
		})
	}
}

func TestNamesImageID(t *testing.T) {
	for name, want := range map[string]bool{
		"5": true, "59753f984c5e": true, "sha256:5975": true, "sha256:" + strings.Repeat("a", 64): true,
		"busybox": false, "cafe/app": false, "abc:latest": false, "r.io/5": false, "scratch": false,
	} {
		if got := namesImageID(name); got != want {
			t.Errorf("namesImageID(%q) = %v, want %v", name, got, want)
		}
	}
}

func TestFreshReason(t *testing.T) {
	const own = "registry2.example.com"
	auths := RegistryAuths{"private.example.com": {Username: "u", Password: "p"}}
	tests := []struct {
		name string
		imgs dockerfileImages
		held string
		want string // in the reason; "" for none
	}{
		{"public images from the host's cache", dockerfileImages{names: []string{"busybox", "balenalib/rpi-debian"}}, "", ""},
		{"the openBalena registry", dockerfileImages{names: []string{"busybox", own + "/v2/abc"}}, "", "openBalena registry"},
		{"the openBalena registry in other case", dockerfileImages{names: []string{"Registry2.Example.com/v2/abc"}}, "", "openBalena registry"},
		{"a registry of the registry secrets", dockerfileImages{names: []string{"private.example.com/team/base"}}, "", "registry secrets"},
		{"an unresolved name", dockerfileImages{names: []string{"busybox"}, unresolved: []string{"$X"}}, "", "cannot be resolved"},
		{"an image id", dockerfileImages{names: []string{"busybox", "e3f"}}, "", "by its id"},
		{"held by another build", dockerfileImages{names: []string{"other.example.com/x"}}, "other.example.com/x", "another build"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := freshReason(tt.imgs, own, auths, func(n string) bool { return n == tt.held })
			if tt.want == "" && got != "" || !strings.Contains(got, tt.want) {
				t.Errorf("freshReason = %q, want one with %q", got, tt.want)
			}
		})
	}
}

func TestHoldRelease(t *testing.T) {
	d := New(nil)
	d.hold(true, "r.io/x", "busybox")
	d.hold(false, "r.io/x:latest")
	if !d.isHeld("docker.io/library/busybox:latest") || !d.isHeld("r.io/x") {
		t.Fatal("not held under its normal name")
	}
	if d.release("r.io/x", true) {
		t.Error("released while another build holds it")
	}
	if !d.isHeld("r.io/x") || d.heldPrivately("r.io/x") {
		t.Error("after the private holder left: held publicly only")
	}
	if !d.release("r.io/x:latest", false) || d.isHeld("r.io/x") {
		t.Error("still held after the last release")
	}
	if !d.release("never-held", false) {
		t.Error("a name nobody holds is not the last one's")
	}
}

// A public image another build pulled anonymously is no reason to pull it
// fresh (offline, that would fail for nothing); one pulled with
// credentials is.
func TestOnlyPrivateHoldsForceAFreshPull(t *testing.T) {
	d := New(nil)
	imgs := dockerfileImages{names: []string{"busybox"}}
	d.hold(false, "busybox")
	if r := freshReason(imgs, "", nil, d.heldPrivately); r != "" {
		t.Errorf("a public hold forces a fresh pull: %q", r)
	}
	d.hold(true, "busybox")
	if r := freshReason(imgs, "", nil, d.heldPrivately); !strings.Contains(r, "pulled with credentials by another build") {
		t.Errorf("a private hold: %q", r)
	}
}

func TestHasName(t *testing.T) {
	img := image.InspectResponse{
		ID:          "sha256:" + strings.Repeat("a", 64),
		RepoTags:    []string{"busybox:latest", "127.0.0.1:5000/v2/x:latest"},
		RepoDigests: []string{"127.0.0.1:5000/v2/x@sha256:" + strings.Repeat("b", 64)},
	}
	for ref, want := range map[string]bool{
		"busybox": true, "docker.io/library/busybox:latest": true, "busybox:1": false, "127.0.0.1:5000/v2/x": true,
		"127.0.0.1:5000/v2/x@sha256:" + strings.Repeat("b", 64): true, "127.0.0.1:5000/v2/x:1@sha256:" + strings.Repeat("b", 64): true,
		"127.0.0.1:5000/v2/x@sha256:" + strings.Repeat("c", 64): false, "aaaa": false,
	} {
		named, err := reference.ParseNormalizedNamed(ref)
		if err != nil {
			t.Fatal(err)
		}
		if got := hasName(img, named); got != want {
			t.Errorf("hasName(%s) = %v, want %v", ref, got, want)
		}
	}
}

func TestAuthProviderGivesTheJobTokenForItsRegistryOnly(t *testing.T) {
	ctx := context.Background()
	p, err := NewAuthProvider(RegistryAuths{"r.io": {Username: "u", Password: "pw"}}, "registry2.example.com", "job-token")
	if err != nil {
		t.Fatal(err)
	}
	own := "registry2.example.com"
	got, err := p.FetchToken(ctx, &auth.FetchTokenRequest{Host: own, Scopes: []string{"repository:v2/other:pull"}})
	if err != nil || got.GetToken() != "job-token" || got.GetExpiresIn() <= 0 {
		t.Errorf("FetchToken(own) = %v, %v", got, err)
	}
	if _, err := p.FetchToken(ctx, &auth.FetchTokenRequest{Host: "r.io"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("FetchToken(r.io) = %v, want Unimplemented", err)
	}
	ta, err := p.GetTokenAuthority(ctx, &auth.GetTokenAuthorityRequest{Host: own})
	if err != nil || len(ta.GetPublicKey()) != ed25519.PublicKeySize {
		t.Fatalf("GetTokenAuthority(own) = %v, %v", ta, err)
	}
	if _, err := p.GetTokenAuthority(ctx, &auth.GetTokenAuthorityRequest{Host: "r.io"}); status.Code(err) != codes.Unimplemented {
		t.Errorf("GetTokenAuthority(r.io) = %v, want Unimplemented: BuildKit then uses Credentials", err)
	}
	payload := []byte("0123456789abcdef0123456789abcdef")
	v, err := p.VerifyTokenAuthority(ctx, &auth.VerifyTokenAuthorityRequest{Host: own, Payload: payload})
	if err != nil {
		t.Fatal(err)
	}
	signed := v.GetSigned()
	if len(signed) != ed25519.SignatureSize+len(payload) || !bytes.Equal(signed[ed25519.SignatureSize:], payload) ||
		!ed25519.Verify(ta.GetPublicKey(), payload, signed[:ed25519.SignatureSize]) {
		t.Error("VerifyTokenAuthority did not sign the payload with the authority's key")
	}
	other, _ := NewAuthProvider(nil, own, "other-token")
	ota, _ := other.GetTokenAuthority(ctx, &auth.GetTokenAuthorityRequest{Host: own})
	if bytes.Equal(ota.GetPublicKey(), ta.GetPublicKey()) {
		t.Error("two sessions share an authority key: BuildKit would share their tokens")
	}
	c, _ := p.Credentials(ctx, &auth.CredentialsRequest{Host: own})
	oc, _ := other.Credentials(ctx, &auth.CredentialsRequest{Host: own})
	if c.GetSecret() != "" || c.GetUsername() == "" || c.GetUsername() == oc.GetUsername() {
		t.Errorf("Credentials(own) = %v (other session %v), want a user name of the session's own and no secret", c, oc)
	}
	if c, _ := p.Credentials(ctx, &auth.CredentialsRequest{Host: "r.io"}); c.GetUsername() != "u" || c.GetSecret() != "pw" {
		t.Errorf("Credentials(r.io) = %v", c)
	}
}

func TestWithJobTokenReplacesTheRegistrysCredentials(t *testing.T) {
	auths := RegistryAuths{"http://REGISTRY2.example.com/": {Username: "user", Password: "api-key"}, "other.io": {Username: "o"}}
	got := withJobToken(auths, "registry2.example.com", "job-token")
	ac, ok := got.Lookup("registry2.example.com")
	if !ok || ac.RegistryToken != "job-token" || ac.Username != "" || ac.Password != "" {
		t.Errorf("openBalena registry credentials %+v", ac)
	}
	if len(got) != 2 || got["other.io"].Username != "o" {
		t.Errorf("other credentials lost: %+v", got)
	}
	if auths["http://REGISTRY2.example.com/"].Username != "user" {
		t.Error("the caller's map was changed")
	}
	if got := withJobToken(nil, "r", ""); got != nil {
		t.Errorf("no token: %v", got)
	}
}

func TestUnreachable(t *testing.T) {
	for msg, want := range map[string]bool{
		`Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io: no such host`:    true,
		`Get "http://127.0.0.1:1/v2/": dial tcp 127.0.0.1:1: connect: connection refused`:                true,
		`Get "https://r.io/v2/": net/http: TLS handshake timeout`:                                        true,
		`pull access denied for x, repository does not exist or may require 'docker login': denied`:      false,
		`Head "http://127.0.0.1:5000/v2/v2/abc/manifests/latest": unauthorized: authentication required`: false,
		`manifest unknown: manifest unknown`:                                                             false,
	} {
		if got := unreachable(errors.New(msg)); got != want {
			t.Errorf("unreachable(%q) = %v, want %v", msg, got, want)
		}
	}
}

func TestPeekDockerfileKeepsTheContextWhole(t *testing.T) {
	tarOf := func(entries ...*tar.Header) []byte {
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		for _, h := range entries {
			body := strings.Repeat("x", int(h.Size))
			if h.Name == "Dockerfile" && h.Typeflag == tar.TypeReg {
				body = "FROM busybox\n"
				h.Size = int64(len(body))
			}
			if err := tw.WriteHeader(h); err != nil {
				t.Fatal(err)
			}
			if _, err := tw.Write([]byte(body)); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.Close(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	df := &tar.Header{Name: "Dockerfile", Typeflag: tar.TypeReg, Mode: 0o644}
	big := &tar.Header{Name: "big.bin", Typeflag: tar.TypeReg, Size: maxPeekBytes + 1, Mode: 0o644}
	small := &tar.Header{Name: "app.txt", Typeflag: tar.TypeReg, Size: 100000, Mode: 0o644}
	tests := []struct {
		name    string
		context []byte
		names   []string
		err     string // "" for found
	}{
		{"found", tarOf(df, small), []string{"Dockerfile"}, ""},
		{"found after other entries", tarOf(small, df), []string{"Dockerfile"}, ""},
		{"./Dockerfile", tarOf(&tar.Header{Name: "./Dockerfile", Typeflag: tar.TypeReg, Size: 5, Mode: 0o644}), []string{"Dockerfile"}, ""},
		{"not in the context", tarOf(df, small), []string{"Other"}, "has no Dockerfile"},
		{"a link", tarOf(&tar.Header{Name: "Dockerfile", Typeflag: tar.TypeSymlink, Linkname: "app.txt"}, small), []string{"Dockerfile"}, "not a regular file"},
		{"too far", tarOf(small, big, df), []string{"Dockerfile"}, "not within the first"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, whole, err := peekDockerfile(bytes.NewReader(tt.context), tt.names)
			switch {
			case tt.err == "" && (err != nil || len(got) == 0):
				t.Fatalf("peek = %q, %v", got, err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("peek error %v, want one with %q", err, tt.err)
			}
			all, _ := io.ReadAll(whole)
			if !bytes.Equal(all, tt.context) {
				t.Errorf("the context changed: %d bytes, want %d", len(all), len(tt.context))
			}
		})
	}
}

func TestShortReasonOfAnErrorList(t *testing.T) {
	err := errors.New("Error response from daemon: errors:\ndenied: requested access to the resource is denied\nunauthorized: authentication required\n")
	if got, want := shortReason(err), "errors: denied: requested access to the resource is denied"; got != want {
		t.Errorf("shortReason = %q, want %q", got, want)
	}
}

func TestFrontend(t *testing.T) {
	tests := []struct {
		dockerfile string
		args       map[string]string
		want       string
		official   bool
	}{
		{"FROM busybox\n", nil, "", false},
		{"# syntax=docker/dockerfile:1.4\nFROM busybox\n", nil, "docker/dockerfile:1.4", true},
		{"#syntax = docker.io/docker/dockerfile-upstream:master@sha256:" + strings.Repeat("a", 64) + "\n", nil, "docker.io/docker/dockerfile-upstream:master@sha256:" + strings.Repeat("a", 64), true},
		{"# escape=`\n\n# SYNTAX=r.io/evil/frontend\nFROM busybox\n", nil, "r.io/evil/frontend", false},
		{"FROM busybox\n# syntax=r.io/too/late\n", nil, "", false},
		{"# syntax=docker/dockerfile:1\n", map[string]string{"BUILDKIT_SYNTAX": "evil/dockerfile"}, "evil/dockerfile", false},
		{"# syntax=docker/dockerfile-evil\n", nil, "docker/dockerfile-evil", false},
	}
	for _, tt := range tests {
		got := frontend([]byte(tt.dockerfile), tt.args)
		if got != tt.want || got != "" && OfficialFrontend(got) != tt.official {
			t.Errorf("frontend(%q, %v) = %q (official %v), want %q (%v)", tt.dockerfile, tt.args, got, OfficialFrontend(got), tt.want, tt.official)
		}
	}
}

func TestBuildKitCacheMountsAreTheBuildsOwn(t *testing.T) {
	spec := &pluginv1.BuildSpec{ImageRef: "r.io/v2/abc", Host: &pluginv1.HostConfig{Buildkit: true},
		BuildArgs: map[string]string{CacheMountNSArg: "someone-elses", "A": "1"}}
	opts := buildOptions(spec, nil)
	if ns := opts.BuildArgs[CacheMountNSArg]; ns == nil || *ns != cacheMountNS(spec) || *opts.BuildArgs["A"] != "1" {
		t.Errorf("BuildKit build args %v", opts.BuildArgs)
	}
	if other := cacheMountNS(&pluginv1.BuildSpec{ImageRef: "r.io/v2/def"}); other == cacheMountNS(spec) {
		t.Error("two builds share a cache mount namespace")
	}
	spec.Host.Buildkit = false
	spec.BuildArgs = nil
	if _, ok := buildOptions(spec, nil).BuildArgs[CacheMountNSArg]; ok {
		t.Error("the classic builder got BuildKit's build arg")
	}
}

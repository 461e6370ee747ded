package release

import (
	"context"
	"encoding/base64"
	"slices"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	releasev1 "github.com/open-balena-builder/builder/proto/builder/release/v1"
	"github.com/open-balena-builder/builder/services/release/openbalena"
)

func TestRegistryToken(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	created := h.createMain(t, false)
	repo := strings.TrimPrefix(created.GetImages()[0].GetLocation(), testRegistry+"/")
	other := "v2/0123456789abcdef0123456789abcdef" // no image row: the builder still gets it

	resp, err := h.srv.RegistryToken(context.Background(), &releasev1.RegistryTokenRequest{
		Repositories: []string{repo, other}, Actions: []string{"pull", "push"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRegistry() != testRegistry {
		t.Errorf("registry = %q", resp.GetRegistry())
	}
	var claims struct {
		Sub    string `json:"sub"`
		Aud    string `json:"aud"`
		Access []struct {
			Type, Name string
			Actions    []string
		} `json:"access"`
	}
	if !decodeJWTClaims(resp.GetToken(), &claims) {
		t.Fatalf("token is not a JWT: %q", resp.GetToken())
	}
	if claims.Sub != "" || claims.Aud != testRegistry {
		t.Errorf("sub %q aud %q", claims.Sub, claims.Aud)
	}
	if len(claims.Access) != 2 {
		t.Fatalf("access = %+v", claims.Access)
	}
	for i, want := range []string{repo, other} {
		a := claims.Access[i]
		slices.Sort(a.Actions)
		if a.Type != "repository" || a.Name != want || !slices.Equal(a.Actions, []string{"pull", "push"}) {
			t.Errorf("access[%d] = %+v", i, a)
		}
	}
}

func TestRegistryTokenErrors(t *testing.T) {
	h := newHarness(t, "genericx86-64-ext", nil)
	tests := []struct {
		name    string
		builder string
		repos   []string
		actions []string
		code    codes.Code
		msg     string
	}{
		{"registry host in the name", testBuilderToken, []string{testRegistry + "/v2/abc"}, []string{"pull"}, codes.InvalidArgument, "registry host"},
		{"unknown action", testBuilderToken, []string{"v2/abc"}, []string{"delete"}, codes.InvalidArgument, "delete"},
		{"no repository", testBuilderToken, nil, []string{"pull"}, codes.InvalidArgument, "no repository"},
		{"wrong builder token", "wrong-builder-token", []string{"v2/abc"}, []string{"pull"}, codes.Internal, "TOKEN_AUTH_BUILDER_TOKEN"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := openbalena.New(h.url, nil, nil, openbalena.WithRetry(openbalena.RetryPolicy{Attempts: 1}))
			srv := New(Config{APIURL: h.url, BuilderToken: tt.builder, RegistryHost: testRegistry}, client, nil)
			_, err := srv.RegistryToken(context.Background(), &releasev1.RegistryTokenRequest{Repositories: tt.repos, Actions: tt.actions})
			wantCode(t, err, tt.code, tt.msg)
			if strings.Contains(err.Error(), tt.builder) {
				t.Errorf("error %q holds the builder token", err)
			}
		})
	}
}

func TestMissingGrants(t *testing.T) {
	tok := func(payload string) string {
		return "e30." + b64(payload) + ".sig"
	}
	full := tok(`{"access":[{"type":"repository","name":"v2/a","actions":["pull","push"]}]}`)
	empty := tok(`{"access":[{"type":"repository","name":"v2/a","actions":[]}]}`)
	if m := missingGrants(full, []string{"v2/a"}, []string{"push", "pull"}); m != "" {
		t.Errorf("full: missing %q", m)
	}
	if m := missingGrants(empty, []string{"v2/a"}, []string{"push"}); m != "push on v2/a" {
		t.Errorf("empty: missing %q", m)
	}
	if m := missingGrants("opaque", []string{"v2/a"}, []string{"push"}); m != "" {
		t.Errorf("opaque token: missing %q", m)
	}
}

func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

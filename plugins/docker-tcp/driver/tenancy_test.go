package driver

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
)

func TestBaseImages(t *testing.T) {
	tests := []struct {
		name       string
		dockerfile string
		args       map[string]string
		want       string
		unresolved bool
	}{
		{"one image", "FROM busybox\nRUN x\n", nil, "busybox", false},
		{"platform flag and stage", "FROM --platform=$BUILDPLATFORM golang:1.22 AS build\nFROM build\nFROM scratch\n", nil, "golang:1.22", false},
		{"stage names in any case", "FROM alpine AS Base\nFROM base\n", nil, "alpine", false},
		{"global ARG default", "ARG BASE=reg.example.com/base:1\nFROM ${BASE}\n", nil, "reg.example.com/base:1", false},
		{"build arg wins", "ARG BASE=busybox\nFROM $BASE\n", map[string]string{"BASE": "r.io/x"}, "r.io/x", false},
		{"unset ARG", "FROM $NOPE\n", nil, "", true},
		{"ARG after FROM is not global", "FROM busybox\nARG B=x\nFROM $B\n", nil, "busybox", true},
		{"continuation lines", "FROM \\\n  registry2.example.com/v2/abc\n", nil, "registry2.example.com/v2/abc", false},
		{"lower case from", "from busybox as b\n", nil, "busybox", false},
		{"not a reference", "FROM Not:A:Ref!\n", nil, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, unresolved := baseImages([]byte(tt.dockerfile), tt.args)
			if strings.Join(got, ",") != tt.want || unresolved != tt.unresolved {
				t.Errorf("baseImages = %v %v, want %q %v", got, unresolved, tt.want, tt.unresolved)
			}
		})
	}
}

func TestPullFresh(t *testing.T) {
	const own = "registry2.example.com"
	auths := registryAuths{"private.example.com": {Username: "u", Password: "p"}}
	tests := []struct {
		name       string
		images     []string
		unresolved bool
		fresh      bool
	}{
		{"public images from the host's cache", []string{"busybox", "balenalib/rpi-debian"}, false, false},
		{"the openBalena registry", []string{"busybox", own + "/v2/abc"}, false, true},
		{"the openBalena registry in other case", []string{"Registry2.Example.com/v2/abc"}, false, true},
		{"a registry of the registry secrets", []string{"private.example.com/team/base"}, false, true},
		{"an unresolved FROM", []string{"busybox"}, true, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fresh, pulled := pullFresh(tt.images, tt.unresolved, own, auths)
			if fresh != tt.fresh || fresh && len(pulled) != len(tt.images) || !fresh && pulled != nil {
				t.Errorf("pullFresh = %v %v, want %v", fresh, pulled, tt.fresh)
			}
		})
	}
}

func TestWithJobTokenReplacesTheRegistrysCredentials(t *testing.T) {
	auths := registryAuths{"http://REGISTRY2.example.com/": {Username: "user", Password: "api-key"}, "other.io": {Username: "o"}}
	got := withJobToken(auths, "registry2.example.com", "job-token")
	ac, ok := got.lookup("registry2.example.com")
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
	ctx := sdktest.ContextTar(t, map[string]string{"Dockerfile": "FROM busybox\n", "app.txt": strings.Repeat("x", 100000)})
	tests := []struct {
		name  string
		names []string
		found bool
	}{
		{"found", []string{"Dockerfile"}, true},
		{"not in the context", []string{"Other"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			df, whole, found, err := peekDockerfile(bytes.NewReader(ctx), tt.names)
			if err != nil || found != tt.found || found && string(df) != "FROM busybox\n" {
				t.Fatalf("peek = %q %v %v", df, found, err)
			}
			all, _ := io.ReadAll(whole)
			if !bytes.Equal(all, ctx) {
				t.Errorf("the context changed: %d bytes, want %d", len(all), len(ctx))
			}
		})
	}
}

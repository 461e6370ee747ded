package driver

import (
	"errors"
	"slices"
	"testing"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

func TestImageRefs(t *testing.T) {
	df := "ARG BASE=reg.example/v2/abc\nFROM ${BASE}@sha256:0000000000000000000000000000000000000000000000000000000000000000 AS one\n" +
		"FROM busybox\nCOPY --from=one /a /a\nCOPY --from=other.example/img:1 /b /b\nRUN --mount=type=bind,from=mnt.example/x,target=/m true\nFROM scratch\nCOPY --from=0 /a /a\n"
	got := imageRefs([]byte(df), map[string]string{"BASE": "reg.example/v2/def"})
	want := []string{"reg.example/v2/def@sha256:0000000000000000000000000000000000000000000000000000000000000000", "busybox", "other.example/img:1", "mnt.example/x"}
	if !slices.Equal(got, want) {
		t.Errorf("imageRefs = %q, want %q", got, want)
	}
	if p := pinned(got); len(p) != 1 || p[0].Name() != "reg.example/v2/def" {
		t.Errorf("pinned = %v", p)
	}
}

func TestCheckFrontend(t *testing.T) {
	for df, ok := range map[string]bool{
		"FROM busybox\n": true,
		"# syntax=docker/dockerfile:1\nFROM busybox\n":     true,
		"# syntax=docker.io/docker/dockerfile:1.7\nFROM x": true,
		"# syntax=evil.example/frontend\nFROM busybox\n":   false,
	} {
		_, err := checkFrontend("j", []byte(df), nil)
		if (err == nil) != ok || (err != nil && !errors.Is(err, sdk.ErrInvalidArgument)) {
			t.Errorf("checkFrontend(%q) = %v, want ok %v", df, err, ok)
		}
	}
	if _, err := checkFrontend("j", []byte("FROM busybox\n"), map[string]string{syntaxArg: "evil.example/f"}); err == nil {
		t.Errorf("BUILDKIT_SYNTAX of a custom frontend accepted")
	}
}

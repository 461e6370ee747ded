package driver

import (
	"strings"
	"testing"
	"time"

	bkclient "github.com/moby/buildkit/client"
	digest "github.com/opencontainers/go-digest"

	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

func TestProgressLines(t *testing.T) {
	var lines []*pluginv1.Log
	p := newProgress(func(l *pluginv1.Log) error { lines = append(lines, l); return nil })
	now := time.Now()
	vertex := func(d, name, errText string) *bkclient.Vertex {
		return &bkclient.Vertex{Digest: digest.Digest(d), Name: name, Started: &now, Completed: &now, Error: errText}
	}
	err := p.status(&bkclient.SolveStatus{Vertexes: []*bkclient.Vertex{
		vertex("sha256:a", "importing cache manifest from reg/v2/x:cache", "failed to configure registry cache importer: reg/v2/x:cache: not found"),
		vertex("sha256:b", "exporting cache to registry", "unexpected status 500"),
		vertex("sha256:c", "[2/2] RUN false", "process \"/bin/sh -c false\" did not complete successfully: exit code: 1"),
	}})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range lines {
		tag := "  "
		if l.GetError() {
			tag = "E "
		}
		got = append(got, tag+l.GetText())
	}
	want := []string{
		"  #1 importing cache manifest from reg/v2/x:cache",
		"  #1 no cache yet for this fleet's service (its first build here)",
		"  #2 exporting cache to registry",
		"  #2 cache not used: unexpected status 500",
		"  #3 [2/2] RUN false",
		`E #3 ERROR: process "/bin/sh -c false" did not complete successfully: exit code: 1`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("lines:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(p.failed, "exit code: 1") {
		t.Errorf("failed = %q: the RUN step's error, not the cache's", p.failed)
	}
}

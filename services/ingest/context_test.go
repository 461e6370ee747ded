package ingest

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/open-balena-builder/builder/services/ingest/project"
)

func TestWriteContext(t *testing.T) {
	root := t.TempDir()
	for name, body := range map[string]string{
		"Dockerfile.template":  "FROM x",
		"Dockerfile":           "stale, replaced by the rendered template",
		".dockerignore":        "*.log\nbuild/\n!build/keep.txt\n",
		"app.go":               "package main",
		"debug.log":            "ignored",
		"build/out.bin":        "ignored",
		"build/keep.txt":       "re-included",
		".balena/balena.yml":   "build-variables: {}",
		".balena/secrets/tok":  "secret",
		"sub/.balena/kept.txt": "only the context root's metadata goes",
	} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
	svc := &project.Service{Name: "main", Context: ".", Dockerfile: "Dockerfile", Source: "Dockerfile.template", Templated: true, Content: []byte("FROM busybox\n")}
	var buf bytes.Buffer
	if err := writeContext(&buf, root, svc); err != nil {
		t.Fatal(err)
	}
	files := map[string]string{}
	tr := tar.NewReader(&buf)
	for first := true; ; first = false {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if first && h.Name != "Dockerfile" {
			t.Errorf("first entry %q: the Dockerfile goes first (plugins read its FROM lines before building)", h.Name)
		}
		if _, dup := files[h.Name]; dup {
			t.Errorf("%s twice in the context", h.Name)
		}
		if h.Typeflag == tar.TypeReg {
			b, _ := io.ReadAll(tr)
			files[h.Name] = string(b)
		}
	}
	var names []string
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	want := ".dockerignore,Dockerfile,Dockerfile.template,app.go,build/keep.txt,sub/.balena/kept.txt"
	if strings.Join(names, ",") != want {
		t.Errorf("context files %s\nwant %s", strings.Join(names, ","), want)
	}
	if files["Dockerfile"] != "FROM busybox\n" {
		t.Errorf("Dockerfile = %q, want the rendered template", files["Dockerfile"])
	}
}

func TestWriteContextSendsAPlainDockerfileFirst(t *testing.T) {
	root := t.TempDir()
	for name, body := range map[string]string{"a.txt": "a", "deploy/Dockerfile.alt": "FROM busybox\n", "deploy/z.txt": "z"} {
		p := filepath.Join(root, name)
		os.MkdirAll(filepath.Dir(p), 0o755)
		os.WriteFile(p, []byte(body), 0o644)
	}
	svc := &project.Service{Name: "main", Context: ".", Dockerfile: "deploy/Dockerfile.alt"}
	var buf bytes.Buffer
	if err := writeContext(&buf, root, svc); err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(&buf)
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
	}
	if want := "deploy/Dockerfile.alt,a.txt,deploy/,deploy/z.txt"; strings.Join(names, ",") != want {
		t.Errorf("entries %s, want %s", strings.Join(names, ","), want)
	}
}

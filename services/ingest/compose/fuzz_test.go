package compose

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse: any compose file gives an *Error or a composition whose
// services all have a build or an image, whose build contexts stay inside
// the project, and which holds nothing from the builder's environment.
// Seeds: testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Setenv(secretEnv, secret)
	root := f.TempDir()
	for name, content := range map[string]string{
		"app/Dockerfile":     "FROM alpine\n",
		"config/app.env":     "FROM_FILE=1\n",
		"config/app.labels":  "com.example.file=1\n",
		"../outside/app.env": "SECRET=" + secret + "\n",
	} {
		p := filepath.Join(root, "project", name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			f.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			f.Fatal(err)
		}
	}
	root = filepath.Join(root, "project")
	real, err := filepath.EvalSymlinks(root)
	if err != nil {
		f.Fatal(err)
	}
	compose := filepath.Join(root, "docker-compose.yml")

	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(compose, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Parse(root, "docker-compose.yml")
		if err != nil {
			if !errors.As(err, new(*Error)) {
				t.Fatalf("%T %v: want an *Error for a bad compose file", err, err)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("the error shows the builder's environment or a file outside the project: %v", err)
			}
			return
		}
		raw, err := json.Marshal(c.Raw)
		if err != nil {
			t.Fatalf("Raw is not JSON: %v", err)
		}
		if strings.Contains(string(raw), secret) {
			t.Fatalf("the composition holds the builder's environment or a file outside the project: %s", raw)
		}
		for _, k := range []string{"version", "name"} {
			if _, ok := c.Raw[k]; ok {
				t.Fatalf("Raw has %q", k)
			}
		}
		services, _ := c.Raw["services"].(map[string]any)
		if len(services) == 0 || len(services) != len(c.Services) {
			t.Fatalf("%d services in Raw, %d in Services", len(services), len(c.Services))
		}
		for _, s := range c.Services {
			if s.Build == nil && s.Image == "" {
				t.Fatalf("service %q has neither build nor image", s.Name)
			}
			if s.Build == nil {
				continue
			}
			ctx := filepath.FromSlash(s.Build.Context)
			if s.Build.Context != "." && !filepath.IsLocal(ctx) {
				t.Fatalf("service %q: context %q is not inside the project", s.Name, s.Build.Context)
			}
			dir := filepath.Join(real, ctx)
			if r, err := filepath.EvalSymlinks(dir); err == nil {
				dir = r
			}
			if rel, err := filepath.Rel(real, dir); err != nil || (rel != "." && !filepath.IsLocal(rel)) {
				t.Fatalf("service %q: context %q leads outside the project", s.Name, s.Build.Context)
			}
		}
	})
}

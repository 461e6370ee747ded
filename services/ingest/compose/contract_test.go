package compose

import "testing"

// validRange follows node-semver's validRange (what balena checks the
// version labels with).
func TestValidRange(t *testing.T) {
	for _, r := range []string{
		"", "*", "x", "1", "1.x", "1.2.X", "16.0.0", "3.10", ">=11", ">= 11",
		"<2.0.0", "=1.2.3", "v1.2.3", "~1.2", "~>1.2.3", "^5.10", "^0.0.1-beta.1",
		"1.2.3-rc.1+build.5", ">=2.100.0 <3", "1.2 - 2.3.4", "^1 || ^2", ">=1.0.0 <2.0.0 || >=3",
	} {
		if !validRange(r) {
			t.Errorf("validRange(%q) = false, want true", r)
		}
	}
	for _, r := range []string{
		"not-valid", "1.2.3.4", ">=", "01.2.3", "1.2.3-", "1.2.3-01", ">=1.2.3 foo",
		"^", "~", "1.2 -", "latest", "1..2", ">=11 || bad",
	} {
		if validRange(r) {
			t.Errorf("validRange(%q) = true, want false", r)
		}
	}
}

func TestRemoteContext(t *testing.T) {
	for ctx, want := range map[string]bool{
		"/project/app":                      false,
		"/project/app.git":                  true, // as balena: a path ending in .git
		"https://github.com/a/b.git#main":   true,
		"http://example.com/context.tar.gz": true,
		"git://example.com/repo":            true,
		"ssh://git@example.com/repo":        true,
		"git@github.com:a/b":                true,
		"github.com/a/b":                    true,
		"docker-image://alpine":             true,
		"service:base":                      true,
	} {
		if got := remoteContext(ctx); got != want {
			t.Errorf("remoteContext(%q) = %v, want %v", ctx, got, want)
		}
	}
}

func TestDisplay(t *testing.T) {
	p := &parser{root: "/tmp/builds/b1/project"}
	for path, want := range map[string]string{
		"/tmp/builds/b1/project":          ".",
		"/tmp/builds/b1/project/app":      "./app",
		"/tmp/builds/b1/other":            "../other",
		"/tmp/builds/elsewhere/x":         "../../elsewhere/x",
		"/home":                           "/home",
		"/tmp/x":                          "/tmp/x",
		"relative/as/written":             "relative/as/written",
		"/tmp/builds/b1/project/a/../b/c": "./b/c",
	} {
		if got := p.display(path); got != want {
			t.Errorf("display(%q) = %q, want %q", path, got, want)
		}
	}
}

package e2e

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// cli returns a logged-in balena-cli for a fixture's user.
func cli(t *testing.T, f fixture) *harness.CLI {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	c, err := env.NewCLI(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if f.token != "" {
		res, err := c.Run(ctx, "login", "--token", f.token)
		if err != nil || res.Code != 0 {
			t.Fatalf("balena login: %v %+v", err, res)
		}
	}
	return c
}

func balenaPush(t *testing.T, c *harness.CLI, f fixture, dir string, flags ...string) harness.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	res, err := c.Run(ctx, append([]string{"push", f.fleet.AppName, "--source", dir}, flags...)...)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

// plain collapses a CLI's output as balena-cli's own tests compare it.
func plain(s string) string {
	var lines []string
	for _, l := range strings.Split(harness.StripANSI(strings.ReplaceAll(s, "\r", "\n")), "\n") {
		if l = strings.Join(strings.Fields(l), " "); l != "" {
			lines = append(lines, l)
		}
	}
	return strings.Join(lines, "\n")
}

func TestCLIPlainPush(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	c := cli(t, f)
	res := balenaPush(t, c, f, project(t, map[string]string{"Dockerfile": archProject}))
	out := plain(res.Stdout)
	if res.Code != 0 {
		t.Fatalf("balena push exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, out, res.Stderr)
	}
	t.Log(out)
}

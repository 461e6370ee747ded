package pool

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// warm is the placement reason of a job sent to the host that built its
// fleet's service last.
func warm(f fixture) string {
	return fmt.Sprintf("it built %s/main last, its cache is warm", f.fleet.Slug)
}

// TestRepushGoesToTheHostWithTheWarmCache pushes multi-step projects of
// two fleets at once (one build slot per host: they mostly land on two
// hosts), then each unchanged again: each re-push goes to the host that
// built that fleet's service, and its steps come from the cache.
func TestRepushGoesToTheHostWithTheWarmCache(t *testing.T) {
	s := poolStack(t, affinity)
	const steps = 4
	fleets := []fixture{newFixture(s, "warm"), newFixture(s, "other")}
	dirs := []string{project(t, multiStep(steps, "")), project(t, multiStep(steps, ""))}
	cold := make([]pushed, len(fleets))
	t.Run("cold", func(t *testing.T) {
		for i, f := range fleets {
			t.Run(f.fleet.AppName, func(t *testing.T) {
				t.Parallel()
				cold[i] = push(t, s, f, dirs[i])
			})
		}
	})
	if t.Failed() {
		t.FailNow()
	}
	for i, f := range fleets {
		if !strings.HasPrefix(cold[i].why, "least loaded of ") || strings.Contains(cold[i].why, " last") {
			t.Errorf("first push of %s: placed on %s because %q, want the least loaded host and no affinity", f.fleet.Slug, cold[i].host, cold[i].why)
		}
		if n := cold[i].cached(); n != 0 {
			t.Errorf("first push of a new project: %d steps from the cache, want 0\n%s", n, cold[i].text)
		}
	}
	for i, f := range fleets {
		again := push(t, s, f, dirs[i])
		if again.host != cold[i].host || again.why != warm(f) {
			t.Errorf("re-push of %s: on %s because %q; want on %s because %q\n%s", f.fleet.Slug, again.host, again.why, cold[i].host, warm(f), again.text)
		}
		// COPY nonce, the RUN steps and CMD.
		if n := again.cached(); n < steps+1 {
			t.Errorf("re-push of %s on %s: %d steps from the cache, want at least %d\n%s", f.fleet.Slug, again.host, n, steps+1, again.text)
		}
	}
}

// TestBusyAffineHostSendsTheJobElsewhere occupies the host that built a
// fleet's service with a long build of that service (one slot per host):
// a re-push goes to another host and says why; the next one goes to that
// other host, which built the service last.
func TestBusyAffineHostSendsTheJobElsewhere(t *testing.T) {
	s := poolStack(t, affinity)
	f := newFixture(s, "busy")
	dir := project(t, multiStep(2, ""))
	first := push(t, s, f, dir)
	if first.host == "" {
		t.FailNow()
	}

	// A long build of the same fleet's service goes to first.host (its
	// affinity) and takes its only slot.
	marker := "occupy-" + nonce()[:12]
	long := headless(t, s, f, fmt.Sprintf("FROM busybox\nRUN echo %s && sleep 600\n", marker))
	t.Cleanup(func() {
		for _, d := range s.Pool {
			for _, id := range containers(t, d, marker) {
				_ = d.Engine().JSON(context.Background(), http.MethodPost, "/containers/"+id+"/kill", nil, nil, nil)
			}
		}
		waitRelease(t, s, long)
	})
	on := ""
	for i := 0; on == ""; i++ {
		if i == 1200 {
			t.Fatalf("no pool daemon runs the long build (%s) after 2 minutes\n%s", marker, s.BuilderLogTail(40))
		}
		for j, d := range s.Pool {
			if len(containers(t, d, marker)) > 0 {
				on = harness.PoolHost(j)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if on != first.host {
		t.Fatalf("the long build of %s runs on %s, want %s (which built the service last)", f.fleet.Slug, on, first.host)
	}

	moved := push(t, s, f, dir)
	want := fmt.Sprintf("least loaded of %d free hosts (%s built %s/main last but is busy)", poolSize-1, first.host, f.fleet.Slug)
	if moved.host == first.host || moved.why != want {
		t.Errorf("push while %s is busy: on %s because %q; want another host because %q\n%s", first.host, moved.host, moved.why, want, moved.text)
	}

	// End the long build: every host is free again.
	for _, id := range containers(t, daemon(t, s, first.host), marker) {
		if err := daemon(t, s, first.host).Engine().JSON(context.Background(), http.MethodPost, "/containers/"+id+"/kill", nil, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	if r := waitRelease(t, s, long); r.Status == "success" {
		t.Fatalf("the killed build's release %d is %q", long, r.Status)
	}
	back := push(t, s, f, dir)
	if back.host != moved.host || back.why != warm(f) {
		t.Errorf("push after: on %s because %q; want on %s (built the service last) because %q\n%s", back.host, back.why, moved.host, warm(f), back.text)
	}
}

// TestSpreadRotatesOverThePool pushes one project unchanged to a builder
// with OBB_PLACEMENT=spread: consecutive pushes go to different hosts, over
// the whole pool, and a host that never built the project has no cache of
// it.
func TestSpreadRotatesOverThePool(t *testing.T) {
	s := poolStack(t, spread)
	f := newFixture(s, "spread")
	const steps = 3
	dir := project(t, multiStep(steps, ""))
	seen := map[string]bool{}
	prev := ""
	for i := 0; i < poolSize; i++ {
		p := push(t, s, f, dir)
		if p.why != "spread placement (OBB_PLACEMENT=spread)" {
			t.Errorf("push %d: on %s because %q, want spread placement", i, p.host, p.why)
		}
		if i > 0 && p.host == prev {
			t.Errorf("push %d: on %s again, want another host", i, p.host)
		}
		if !seen[p.host] {
			if n := p.cached(); n != 0 {
				t.Errorf("push %d: first build on %s, yet %d steps from the cache\n%s", i, p.host, n, p.text)
			}
		}
		seen[p.host], prev = true, p.host
	}
	if len(seen) != poolSize {
		t.Errorf("%d pushes went to %d hosts (%v), want %d", poolSize, len(seen), seen, poolSize)
	}
}

// headless starts a headless push of a project with dockerfile and returns
// its release.
func headless(t *testing.T, s *harness.Stack, f fixture, dockerfile string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := harness.PushHeadless(ctx, s.BuilderURL, project(t, dockerfile), harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

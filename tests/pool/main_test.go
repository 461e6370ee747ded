// Package pool pushes projects to a builder with a pool of three amd64
// Docker daemons (issue 8 §5, cache-affine pools): with OBB_PLACEMENT
// affinity (the default) a re-push goes to the host that built the fleet's
// service last and its steps come from the cache; with spread, pushes rotate
// over the pool. Each mode has its own stack, started at first use.
package pool

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/tests/harness"
	"github.com/open-balena-builder/builder/tests/stack"
)

// poolSize is the number of amd64 daemons of each stack.
const poolSize = 3

// Placement modes (OBB_PLACEMENT).
const (
	affinity = "affinity"
	spread   = "spread"
)

var stacks = struct {
	sync.Mutex
	m   map[string]*harness.Stack
	err map[string]error
}{m: map[string]*harness.Stack{}, err: map[string]error{}}

func TestMain(m *testing.M) {
	code := m.Run()
	stacks.Lock()
	defer stacks.Unlock()
	for mode, s := range stacks.m {
		if code != 0 {
			fmt.Fprintf(os.Stderr, "--- obb log, %s placement (tail) ---\n%s\n", mode, s.BuilderLogTail(80))
		}
		s.Stop()
	}
	os.Exit(code)
}

// poolStack returns the stack of a placement mode, starting it at first use:
// three amd64 daemons, one build slot each (max_concurrent: 1), so that one
// long build makes its host busy. Affinity is the builder's default:
// OBB_PLACEMENT is only set for spread.
func poolStack(tb testing.TB, mode string) *harness.Stack {
	tb.Helper()
	stacks.Lock()
	defer stacks.Unlock()
	if s, ok := stacks.m[mode]; ok {
		return s
	}
	if err, ok := stacks.err[mode]; ok {
		tb.Fatalf("the %s stack did not start: %v", mode, err)
	}
	var env []string
	if mode == spread {
		env = append(env, "OBB_PLACEMENT=spread")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, err := harness.Start(ctx, harness.Options{AMD64Pool: poolSize, PoolMaxConcurrent: 1, Env: env,
		Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, "["+mode+"] "+f+"\n", a...) }})
	if err != nil {
		stacks.err[mode] = err
		tb.Fatalf("start the %s stack: %v", mode, err)
	}
	if len(s.Pool) != poolSize || s.Pool[0] != s.AMD64 {
		stacks.m[mode] = s
		tb.Fatalf("the stack has %d pool daemons (first is AMD64: %v), want %d", len(s.Pool), len(s.Pool) > 0 && s.Pool[0] == s.AMD64, poolSize)
	}
	stacks.m[mode] = s
	return s
}

// fixture is a user with an amd64 fleet.
type fixture struct {
	token string
	fleet apistandin.Fleet
}

var fleetSeq struct {
	sync.Mutex
	n int
}

func newFixture(s *harness.Stack, name string) fixture {
	fleetSeq.Lock()
	fleetSeq.n++
	n := fleetSeq.n
	fleetSeq.Unlock()
	user := fmt.Sprintf("pooluser%d", n)
	return fixture{token: s.API.AddUser(user), fleet: s.API.AddFleet(user, fmt.Sprintf("%s%d", name, n), "genericx86-64-ext")}
}

func nonce() string {
	b := make([]byte, 16)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// multiStep is a Dockerfile whose first layer is a nonce (every project is
// new to every host's cache), then steps RUN steps writing files, each
// writing some random data and taking about work (e.g. "sleep 1"; "" for
// none).
func multiStep(steps int, work string) string {
	var sb strings.Builder
	sb.WriteString("FROM busybox\nCOPY nonce /nonce\n")
	for i := 1; i <= steps; i++ {
		fmt.Fprintf(&sb, "RUN dd if=/dev/urandom of=/step%d bs=64k count=16 2>/dev/null && echo step %d > /step%d.txt", i, i, i)
		if work != "" {
			sb.WriteString(" && " + work)
		}
		sb.WriteString("\n")
	}
	sb.WriteString("CMD [\"cat\", \"/step1.txt\"]\n")
	return sb.String()
}

// project writes a project directory: the Dockerfile and a fresh nonce.
func project(tb testing.TB, dockerfile string) string {
	tb.Helper()
	dir := tb.TempDir()
	for name, body := range map[string]string{"Dockerfile": dockerfile, "nonce": nonce()} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

// pushed is one push that succeeded, and where it was built.
type pushed struct {
	host, why string // from the "Building on <host>: <why>" line
	text      string // the whole log
	release   int64
	took      time.Duration
}

// cached counts the steps the log says came from the cache.
func (p pushed) cached() int { return strings.Count(p.text, "Using cache") }

var placedRE = regexp.MustCompile(`(?m)Building on (\S+): (.*)$`)

// push pushes dir to f's fleet, waits for a successful release and finds
// the placement line (exactly one: a single-service project).
func push(tb testing.TB, s *harness.Stack, f fixture, dir string) pushed {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	res, err := harness.Push(ctx, s.BuilderURL, dir, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
	took := time.Since(start)
	if err != nil {
		tb.Fatalf("push to %s: %v", f.fleet.Slug, err)
	}
	text := res.Text()
	if res.Status != http.StatusOK || res.IsError {
		tb.Fatalf("push to %s: %d %q\n%s", f.fleet.Slug, res.Status, res.Body, text)
	}
	if r := waitRelease(tb, s, res.ReleaseID); r.Status != "success" {
		tb.Fatalf("release %d of %s is %q\n%s", res.ReleaseID, f.fleet.Slug, r.Status, text)
	}
	p := pushed{text: text, release: res.ReleaseID, took: took}
	m := placedRE.FindAllStringSubmatch(text, -1)
	if len(m) != 1 {
		tb.Errorf("push to %s: %d \"Building on\" lines, want 1\n%s", f.fleet.Slug, len(m), text)
		return p
	}
	p.host, p.why = m[0][1], strings.TrimSpace(m[0][2])
	tb.Logf("push to %s in %v: on %s because %q; %d steps from the cache", f.fleet.Slug, took.Round(time.Millisecond), p.host, p.why, p.cached())
	return p
}

// waitRelease polls until the release leaves "running".
func waitRelease(tb testing.TB, s *harness.Stack, id int64) apistandin.Release {
	tb.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for {
		r, ok := s.API.Release(id)
		if ok && r.Status != "running" {
			return r
		}
		if time.Now().After(deadline) {
			tb.Fatalf("release %d still %q after 3 minutes", id, r.Status)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// daemon is the pool daemon the builder calls host ("amd64-2").
func daemon(tb testing.TB, s *harness.Stack, host string) *stack.Dockerd {
	tb.Helper()
	for i, d := range s.Pool {
		if harness.PoolHost(i) == host {
			return d
		}
	}
	tb.Fatalf("no pool host %q (the pool is amd64-1 … amd64-%d)", host, len(s.Pool))
	return nil
}

// containers lists the IDs of the running containers of d whose command
// has marker.
func containers(tb testing.TB, d *stack.Dockerd, marker string) []string {
	tb.Helper()
	var list []struct{ ID, Command string }
	if err := d.Engine().JSON(context.Background(), http.MethodGet, "/containers/json", nil, nil, &list); err != nil {
		tb.Fatal(err)
	}
	var ids []string
	for _, c := range list {
		if strings.Contains(c.Command, marker) {
			ids = append(ids, c.ID)
		}
	}
	return ids
}

// Package multi runs several builders (`obb serve all` processes) against
// one PostgreSQL, one Docker host (max_concurrent 2, the default of
// DOCKER_HOST_AMD64), one API and one registry: they share the queue and
// the host's slots, any of them answers for (and cancels) any build, and a
// dead one's builds are settled by the others (lease with heartbeat).
package multi

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

// maxConcurrent is the amd64 host's slots (config's default for
// DOCKER_HOST_AMD64).
const maxConcurrent = 2

var (
	cluster *harness.Cluster
	peerB   *harness.Peer
)

// instance is one builder as a client sees it.
type instance struct {
	name string
	url  string
	log  func(n int) string
}

func instA() instance {
	return instance{"obb-0 (A)", cluster.BuilderURL, cluster.BuilderLogTail}
}

func instB() instance { return peerInstance(peerB) }

func peerInstance(p *harness.Peer) instance {
	return instance{p.ID, p.BuilderURL, p.LogTail}
}

func TestMain(m *testing.M) {
	flag.Parse()
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	env := []string{"OBB_MAX_BUILDS=100", "OBB_MAX_BUILDS_PER_USER=50"}
	c, err := harness.StartCluster(ctx, harness.Options{Env: env, Logf: logf})
	if err != nil {
		cancel()
		fmt.Fprintln(os.Stderr, "multi: cannot start the stack:", err)
		os.Exit(1)
	}
	cluster = c
	peerB, err = c.StartPeer(ctx, append(env, "OBB_INSTANCE_ID=obb-1")...)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "multi: cannot start the second builder:", err)
		fmt.Fprintf(os.Stderr, "--- obb-0 log (tail) ---\n%s\n", c.BuilderLogTail(60))
		c.Stop()
		os.Exit(1)
	}
	code := m.Run()
	if code != 0 {
		keepLogs(c)
	}
	c.Stop()
	os.Exit(code)
}

// keepLogs copies the builders' logs out of the stack (which Stop
// removes) and prints their last warnings and errors.
func keepLogs(c *harness.Cluster) {
	dir, err := os.MkdirTemp("/tmp", "obb-multi-logs-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	logs := map[string]string{"obb-0": c.BuilderLog()}
	for _, p := range c.Peers() {
		logs[p.ID] = p.Log()
	}
	for id, log := range logs {
		_ = os.WriteFile(filepath.Join(dir, id+".log"), []byte(log), 0o644)
		var bad []string
		for _, line := range strings.Split(log, "\n") {
			if strings.Contains(line, `"level":"WARN"`) || strings.Contains(line, `"level":"ERROR"`) || strings.Contains(line, "panic") {
				bad = append(bad, line)
			}
		}
		if len(bad) > 30 {
			bad = bad[len(bad)-30:]
		}
		fmt.Fprintf(os.Stderr, "--- %s: last warnings and errors ---\n%s\n", id, strings.Join(bad, "\n"))
	}
	fmt.Fprintf(os.Stderr, "--- the builders' whole logs are in %s ---\n", dir)
}

func project(t *testing.T, dockerfile string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/Dockerfile", []byte(dockerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

func headless(t *testing.T, in instance, slug, token, dockerfile string) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	id, err := harness.PushHeadless(ctx, in.url, project(t, dockerfile), harness.PushOptions{Slug: slug, Token: token})
	if err != nil {
		t.Fatalf("to %s: %v", in.name, err)
	}
	return id
}

// runningOn counts the amd64 host's running containers whose command has
// marker.
func runningOn(ctx context.Context, marker string) (int, error) {
	var list []struct{ Command string }
	if err := cluster.AMD64.Engine().JSON(ctx, http.MethodGet, "/containers/json", nil, nil, &list); err != nil {
		return 0, err
	}
	n := 0
	for _, c := range list {
		if strings.Contains(c.Command, marker) {
			n++
		}
	}
	return n, nil
}

func running(t *testing.T, marker string) int {
	t.Helper()
	n, err := runningOn(context.Background(), marker)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// waitRunning waits up to a minute for a build container whose command has
// marker.
func waitRunning(t *testing.T, marker string) {
	t.Helper()
	for i := 0; running(t, marker) == 0; i++ {
		if i == 600 {
			t.Fatalf("no build container runs %q", marker)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitGone waits up to d for no container with marker to run.
func waitGone(t *testing.T, marker string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for running(t, marker) > 0 {
		if time.Now().After(deadline) {
			t.Errorf("after %v a build container still runs %q", d, marker)
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRelease polls the API stand-in up to d for release id to leave
// "running"; it returns the last status seen.
func waitRelease(id int64, d time.Duration) string {
	deadline := time.Now().Add(d)
	for {
		r, _ := cluster.API.Release(id)
		if r.Status != "running" || time.Now().After(deadline) {
			return r.Status
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// build is GET /v1/builds/{id}'s answer, in part.
type build struct {
	BuildID   string `json:"buildId"`
	ReleaseID string `json:"releaseId"`
	State     string `json:"state"`
	Error     string `json:"error"`
}

// getBuild asks in for build id with token.
func getBuild(in instance, id int64, token string) (build, int, string, error) {
	resp, err := harness.Call(http.MethodGet, fmt.Sprintf("%s/v1/builds/%d", in.url, id), token, nil)
	if err != nil {
		return build{}, 0, "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var reply struct{ Build build }
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &reply); err != nil {
			return build{}, resp.StatusCode, string(body), err
		}
	}
	return reply.Build, resp.StatusCode, string(body), nil
}

// wantState checks GET /v1/builds/{id} on in, retrying up to d for the
// state to become want.
func wantState(t *testing.T, in instance, id int64, token, want string, d time.Duration) build {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		b, code, body, err := getBuild(in, id, token)
		if err == nil && code == http.StatusOK && b.State == want {
			return b
		}
		if time.Now().After(deadline) {
			t.Errorf("GET /v1/builds/%d on %s: %d %v %.400s; want %s", id, in.name, code, err, body, want)
			return b
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// readLogs reads GET /v1/builds/{id}/logs on in to its end (or ctx's).
func readLogs(ctx context.Context, in instance, id int64, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/builds/%d/logs", in.url, id), nil)
	if err != nil {
		return 0, "", err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// TestFiftyPushesOverTwoInstances: 50 concurrent pushes, half to each
// builder, each a build that runs 1 s on the one amd64 host: all succeed,
// the host never runs more than max_concurrent builds (sampled every
// 50 ms on the daemon), and each build is readable, log included, from
// both builders.
func TestFiftyPushesOverTwoInstances(t *testing.T) {
	const n = 50
	token := cluster.API.AddUser("fifty")
	fleet := cluster.API.AddFleet("fifty", "fifty", "genericx86-64-ext")
	ins := []instance{instA(), instB()}
	dirs := make([]string, n)
	for i := range dirs {
		dirs[i] = project(t, fmt.Sprintf("FROM busybox\nRUN echo multi-fifty-%d && sleep 1\n", i))
	}

	// The sampler.
	var (
		peak, samples, sampleErrs atomic.Int64
		hist                      [8]atomic.Int64
	)
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			k, err := runningOn(ctx, "multi-fifty-")
			cancel()
			if err != nil {
				sampleErrs.Add(1)
				continue
			}
			samples.Add(1)
			hist[min(k, len(hist)-1)].Add(1)
			for {
				p := peak.Load()
				if int64(k) <= p || peak.CompareAndSwap(p, int64(k)) {
					break
				}
			}
		}
	}()

	type outcome struct {
		res *harness.PushResult
		err error
		dur time.Duration
	}
	out := make([]outcome, n)
	start := time.Now()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			t0 := time.Now()
			res, err := harness.Push(ctx, ins[i%2].url, dirs[i], harness.PushOptions{Slug: fleet.Slug, Token: token})
			out[i] = outcome{res, err, time.Since(t0)}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	var h []string
	for k := range hist {
		if v := hist[k].Load(); v > 0 {
			h = append(h, fmt.Sprintf("%d:%d", k, v))
		}
	}
	t.Logf("50 pushes in %s; %d samples (%d errors), peak %d running, histogram running:samples %s",
		elapsed.Round(time.Millisecond), samples.Load(), sampleErrs.Load(), peak.Load(), strings.Join(h, " "))

	ids := make([]int64, n)
	var wrong []string
	for i, o := range out {
		switch {
		case o.err != nil:
			wrong = append(wrong, fmt.Sprintf("push %d to %s: %v", i, ins[i%2].name, o.err))
		case o.res.Status != http.StatusOK:
			wrong = append(wrong, fmt.Sprintf("push %d to %s: %d %.300s", i, ins[i%2].name, o.res.Status, o.res.Body))
		case o.res.IsError || o.res.ReleaseID == 0:
			wrong = append(wrong, fmt.Sprintf("push %d to %s (release %d) failed after %s:\n%.1500s", i, ins[i%2].name, o.res.ReleaseID, o.dur.Round(time.Millisecond), o.res.Text()))
		default:
			ids[i] = o.res.ReleaseID
			if st := waitRelease(o.res.ReleaseID, 10*time.Second); st != "success" {
				wrong = append(wrong, fmt.Sprintf("push %d to %s: release %d is %q", i, ins[i%2].name, o.res.ReleaseID, st))
			}
		}
	}
	if len(wrong) > 0 {
		t.Errorf("%d of %d pushes failed, e.g.:\n%s", len(wrong), n, strings.Join(wrong[:min(len(wrong), 5)], "\n"))
	}
	if p := peak.Load(); p > maxConcurrent {
		t.Errorf("the host ran %d builds at once (sampled), max_concurrent is %d", p, maxConcurrent)
	} else if p < maxConcurrent {
		t.Errorf("the sampler saw at most %d build running at once: it proves nothing about the limit", p)
	}
	if samples.Load() < 20 {
		t.Errorf("only %d samples", samples.Load())
	}

	// Every build, from both builders: succeeded, and its log to the end.
	var (
		mu       sync.Mutex
		problems = map[string][]string{} // instance → what went wrong
	)
	complain := func(in instance, f string, a ...any) {
		mu.Lock()
		defer mu.Unlock()
		problems[in.name] = append(problems[in.name], fmt.Sprintf(f, a...))
	}
	sem := make(chan struct{}, 8)
	asked := 0
	for i, id := range ids {
		if id == 0 {
			continue
		}
		for _, in := range ins {
			asked++
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer func() { <-sem; wg.Done() }()
				b, code, body, err := getBuild(in, id, token)
				if err != nil || code != http.StatusOK || b.State != "BUILD_STATE_SUCCEEDED" {
					complain(in, "GET /v1/builds/%d (pushed to %s): %d %v %.300s; want BUILD_STATE_SUCCEEDED", id, ins[i%2].name, code, err, body)
					return
				}
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				code, logs, err := readLogs(ctx, in, id, token)
				if err != nil || code != http.StatusOK || !strings.Contains(logs, fmt.Sprintf("multi-fifty-%d", i)) || !strings.Contains(logs, "BUILD_STATE_SUCCEEDED") {
					complain(in, "GET /v1/builds/%d/logs (pushed to %s): %d %v; want its steps to the end:\n%.800s", id, ins[i%2].name, code, err, logs)
				}
			}()
		}
	}
	wg.Wait()
	for _, in := range ins {
		if p := problems[in.name]; len(p) > 0 {
			t.Errorf("%s: %d of %d builds unreadable, e.g.:\n  %s", in.name, len(p), asked/2, strings.Join(p[:min(len(p), 4)], "\n  "))
		}
	}
}

// TestOtherInstanceShowsLogsAndCancels: a build taken by A is seen, its log
// followed, and cancelled through B.
func TestOtherInstanceShowsLogsAndCancels(t *testing.T) {
	a, b := instA(), instB()
	token := cluster.API.AddUser("other")
	fleet := cluster.API.AddFleet("other", "other", "genericx86-64-ext")
	// The echo's output ("other-42-instance") is not in the step's line.
	id := headless(t, a, fleet.Slug, token, "FROM busybox\nRUN echo other-$((6*7))-instance && sleep 31\n")
	waitRunning(t, "sleep 31")

	wantState(t, b, id, token, "BUILD_STATE_RUNNING", 5*time.Second)

	// B streams the log while A builds.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		logs strings.Builder
	)
	seen := make(chan struct{})
	ended := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("%s/v1/builds/%d/logs", b.url, id), nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			ended <- err
			return
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			body, _ := io.ReadAll(resp.Body)
			ended <- fmt.Errorf("%s: %.300s", resp.Status, body)
			return
		}
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 4<<20)
		once := false
		for sc.Scan() {
			mu.Lock()
			logs.WriteString(sc.Text() + "\n")
			mu.Unlock()
			if !once && strings.Contains(sc.Text(), "other-42-instance") {
				once = true
				close(seen)
			}
		}
		ended <- sc.Err()
	}()
	snapshot := func() string { mu.Lock(); defer mu.Unlock(); return logs.String() }
	select {
	case <-seen:
	case err := <-ended:
		t.Fatalf("B's log stream of A's build ended (%v) before the RUN step's output:\n%.2000s", err, snapshot())
	case <-time.After(30 * time.Second):
		t.Fatalf("B's log stream of A's build lacks the RUN step's output after 30 s:\n%.2000s", snapshot())
	}

	// Cancel through B.
	resp, err := harness.Call(http.MethodPost, fmt.Sprintf("%s/v1/builds/%d:cancel", b.url, id), token, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("cancel through B: %d %.300s", resp.StatusCode, body)
	}
	cancelled := time.Now()
	if st := waitRelease(id, 30*time.Second); st != "cancelled" {
		t.Errorf("release %d after the cancel through B: %q, want cancelled", id, st)
	}
	t.Logf("release %d settled %s after the cancel through B", id, time.Since(cancelled).Round(time.Millisecond))
	select {
	case err := <-ended:
		if err != nil {
			t.Errorf("B's log stream: %v", err)
		}
		if !strings.Contains(snapshot(), "BUILD_STATE_CANCELLED") {
			t.Errorf("B's log stream ended without BUILD_STATE_CANCELLED:\n%.3000s", snapshot())
		}
	case <-time.After(30 * time.Second):
		t.Errorf("B's log stream did not end 30 s after the cancel:\n%.3000s", snapshot())
	}
	for _, in := range []instance{a, b} {
		wantState(t, in, id, token, "BUILD_STATE_CANCELLED", 10*time.Second)
	}
	waitGone(t, "sleep 31", 30*time.Second)
}

// TestDeadInstanceIsSettledByAnother: two more builders with a 3 s lease;
// C takes a build and is killed (kill -9); the others settle the build
// failed within about the lease, and D answers for it.
func TestDeadInstanceIsSettledByAnother(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	env := []string{"OBB_MAX_BUILDS=100", "OBB_MAX_BUILDS_PER_USER=50", "OBB_INSTANCE_LEASE=3s"}
	pc, err := cluster.StartPeer(ctx, append(env, "OBB_INSTANCE_ID=obb-c")...)
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Stop()
	pd, err := cluster.StartPeer(ctx, append(env, "OBB_INSTANCE_ID=obb-d")...)
	if err != nil {
		t.Fatal(err)
	}
	defer pd.Stop()
	c, d := peerInstance(pc), peerInstance(pd)
	token := cluster.API.AddUser("dead")
	fleet := cluster.API.AddFleet("dead", "dead", "genericx86-64-ext")

	id := headless(t, c, fleet.Slug, token, "FROM busybox\nRUN echo dead-instance && sleep 32\n")
	waitRunning(t, "sleep 32")
	wantState(t, d, id, token, "BUILD_STATE_RUNNING", 5*time.Second)
	if err := pc.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	if r, _ := cluster.API.Release(id); r.Status != "running" {
		t.Logf("right after the kill the release is already %q", r.Status)
	}
	st := waitRelease(id, 20*time.Second)
	if st != "failed" {
		t.Fatalf("20 s after C was killed (lease 3 s) release %d is %q, want failed", id, st)
	}
	t.Logf("settled %s after the kill", time.Since(killed).Round(time.Millisecond))
	found := false
	for _, ri := range cluster.API.ReleaseImages() {
		if ri.Release != id {
			continue
		}
		found = true
		if img, _ := cluster.API.Image(ri.Image); img.Status != "failed" || !strings.Contains(img.ErrorMessage, "the builder running this build stopped") {
			t.Errorf("image %d: %s %q; want failed, \"the builder running this build stopped\"", img.ID, img.Status, img.ErrorMessage)
		}
	}
	if !found {
		t.Errorf("release %d has no image", id)
	}
	b := wantState(t, d, id, token, "BUILD_STATE_FAILED", 10*time.Second)
	t.Logf("D says: %s %q", b.State, b.Error)
	wantState(t, instB(), id, token, "BUILD_STATE_FAILED", 10*time.Second)
	waitGone(t, "sleep 32", 30*time.Second)
}

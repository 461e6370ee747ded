package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/open-balena-builder/builder/tests/stack"
)

// Cluster is a Stack whose builder keeps its builds in a private
// PostgreSQL (OBB_DATABASE_URL), and more `obb serve all` processes, its
// peers, against the same database, Docker hosts, API and registry: several
// builders sharing one queue.
//
// The embedded Stack is the first instance (OBB_INSTANCE_ID obb-0 unless
// Options.Env says otherwise); StopBuilder, RestartBuilder and BuilderLog
// act on it alone. Stop stops the peers, the stack and the database.
type Cluster struct {
	*Stack
	Postgres *stack.Postgres

	mu       sync.Mutex
	peers    []*Peer
	started  int
	path     string   // the obb binary
	args     []string // as the first instance was started, without argv[0]
	env      []string // the first instance's environment
	wantHost int      // hosts the first instance registered at start
}

// StartCluster starts PostgreSQL, then the stack of o with the builder on
// that database. Options.Split is not supported (peers run `serve all`).
// On error everything started is stopped.
func StartCluster(ctx context.Context, o Options) (c *Cluster, err error) {
	if o.Split {
		return nil, errors.New("StartCluster: Split is not supported")
	}
	pg, err := stack.StartPostgres(ctx, o.Logf)
	if err != nil {
		return nil, err
	}
	// The caller's Env comes after, so it wins.
	o.Env = append([]string{"OBB_DATABASE_URL=" + pg.URL(), "OBB_INSTANCE_ID=obb-0"}, o.Env...)
	s, err := Start(ctx, o)
	if err != nil {
		_ = pg.Stop()
		return nil, err
	}
	c = &Cluster{Stack: s, Postgres: pg}
	if len(s.builders) != 1 {
		c.Stop()
		return nil, fmt.Errorf("StartCluster: %d obb processes, want 1", len(s.builders))
	}
	first := s.builders[0]
	c.path = first.Path
	c.args = append([]string(nil), first.Args[1:]...)
	c.env = append([]string(nil), first.Env...)
	c.wantHost = 1
	if n, err := hostCount(s.AdminURL); err == nil && n > 0 {
		c.wantHost = n
	}
	return c, nil
}

// hostCount counts the hosts an admin surface lists (as waitReady does).
func hostCount(adminURL string) (int, error) {
	resp, err := Call(http.MethodGet, adminURL+"/v1/hosts", AdminToken, nil)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("GET /v1/hosts: %s", resp.Status)
	}
	return strings.Count(string(b), `"name"`), nil
}

// Peer is one more builder process of a Cluster.
type Peer struct {
	// ID is its OBB_INSTANCE_ID.
	ID         string
	BuilderURL string
	// AdminURL is its operator surface; AdminAddr the same without scheme.
	AdminURL, AdminAddr                  string
	Ingest, Scheduler, Executor, Release string
	DataDir                              string
	LogPath                              string

	cmd  *exec.Cmd
	gone chan struct{} // closed when the process has exited
	err  error         // its exit, once gone is closed
}

// StartPeer starts another `obb serve all` with the first instance's
// configuration (same database, hosts, API, registry, tokens, config
// file) but its own ports, data dir (under the stack's root), instance id
// (peer-N) and log file; env adds to or overrides its environment
// (e.g. "OBB_INSTANCE_ID=b", "OBB_INSTANCE_LEASE=3s"). It waits until the
// peer serves and has registered the hosts.
func (c *Cluster) StartPeer(ctx context.Context, env ...string) (*Peer, error) {
	c.mu.Lock()
	c.started++
	n := c.started
	c.mu.Unlock()
	addrs := make([]string, 6)
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		addrs[i] = a
	}
	p := &Peer{
		ID:         fmt.Sprintf("peer-%d", n),
		BuilderURL: "http://" + addrs[0],
		Ingest:     addrs[1], Scheduler: addrs[2], Executor: addrs[3], Release: addrs[4],
		AdminAddr: addrs[5], AdminURL: "http://" + addrs[5],
		DataDir: filepath.Join(c.Root, fmt.Sprintf("data-peer-%d", n)),
		LogPath: filepath.Join(c.Root, fmt.Sprintf("obb-peer-%d.log", n)),
		gone:    make(chan struct{}),
	}
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "OBB_INSTANCE_ID="); ok {
			p.ID = v
		}
	}
	e := append([]string(nil), c.env...)
	for _, kv := range []string{
		"OBB_HTTP_ADDR=" + addrs[0],
		"OBB_INGEST_ADDR=" + p.Ingest,
		"OBB_SCHEDULER_ADDR=" + p.Scheduler,
		"OBB_EXECUTOR_ADDR=" + p.Executor,
		"OBB_RELEASE_ADDR=" + p.Release,
		"OBB_ADMIN_ADDR=" + p.AdminAddr,
		"OBB_DATA_DIR=" + p.DataDir,
		"OBB_INSTANCE_ID=" + p.ID,
		"OBB_METRICS_ADDR=", // a fixed metrics port would clash: the admin port serves /metrics
	} {
		e = setEnv(e, kv)
	}
	for _, kv := range env {
		e = setEnv(e, kv)
	}
	lf, err := os.Create(p.LogPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Env = e
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, err
	}
	p.cmd = cmd
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.gone)
	}()
	c.mu.Lock()
	c.peers = append(c.peers, p)
	c.mu.Unlock()
	if err := p.waitReady(ctx, c.wantHost); err != nil {
		p.Kill()
		return nil, err
	}
	c.logf("[obb %s] ready at %s", p.ID, p.BuilderURL)
	return p, nil
}

// setEnv sets key=value in env (replacing every key= entry); a value of ""
// removes the key.
func setEnv(env []string, kv string) []string {
	key, val, _ := strings.Cut(kv, "=")
	out := env[:0:0]
	for _, e := range env {
		if !strings.HasPrefix(e, key+"=") {
			out = append(out, e)
		}
	}
	if val != "" {
		out = append(out, kv)
	}
	return out
}

// Peers are the peers started so far (stopped ones included).
func (c *Cluster) Peers() []*Peer {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Peer(nil), c.peers...)
}

func (p *Peer) waitReady(ctx context.Context, want int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-p.gone:
			return fmt.Errorf("obb %s exited at start (%v):\n%s", p.ID, p.err, p.LogTail(40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if n, err := hostCount(p.AdminURL); err == nil && n >= want {
			return nil
		}
	}
	return fmt.Errorf("obb %s not ready after 30s:\n%s", p.ID, p.LogTail(40))
}

// Pid is the peer's process id.
func (p *Peer) Pid() int { return p.cmd.Process.Pid }

// Exited tells whether the process has exited.
func (p *Peer) Exited() bool {
	select {
	case <-p.gone:
		return true
	default:
		return false
	}
}

// Signal sends sig and waits up to timeout for the process to exit; it
// returns the exit error (nil: exit 0). A peer already gone returns how it
// ended.
func (p *Peer) Signal(sig os.Signal, timeout time.Duration) error {
	if !p.Exited() {
		_ = p.cmd.Process.Signal(sig)
	}
	select {
	case <-p.gone:
		return p.err
	case <-time.After(timeout):
		return fmt.Errorf("obb %s still running %s after %v", p.ID, timeout, sig)
	}
}

// Kill sends SIGKILL (kill -9) and waits for the process to be gone.
func (p *Peer) Kill() error {
	err := p.Signal(syscall.SIGKILL, time.Minute)
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return nil // killed, as asked
	}
	return err
}

// Stop stops the peer as Stack.Stop stops the builder: SIGINT, then
// SIGKILL after 15 s.
func (p *Peer) Stop() error {
	if err := p.Signal(os.Interrupt, 15*time.Second); err == nil || p.Exited() {
		return err
	}
	return p.Kill()
}

// Admin calls the peer's operator REST API with the operator token.
func (p *Peer) Admin(method, path string) (*http.Response, error) {
	return Call(method, p.AdminURL+path, AdminToken, nil)
}

// Log is the peer's whole log.
func (p *Peer) Log() string {
	b, _ := os.ReadFile(p.LogPath)
	return string(b)
}

// LogTail is the last n lines of the peer's log.
func (p *Peer) LogTail(n int) string {
	lines := strings.Split(strings.TrimRight(p.Log(), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Stop stops the peers, the stack and PostgreSQL.
func (c *Cluster) Stop() {
	var wg sync.WaitGroup
	for _, p := range c.Peers() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.Stop(); err != nil {
				c.logf("stop obb %s: %v", p.ID, err)
			}
		}()
	}
	wg.Wait()
	c.Stack.Stop()
	if c.Postgres != nil {
		if err := c.Postgres.Stop(); err != nil {
			c.logf("stop postgres: %v", err)
		}
	}
}

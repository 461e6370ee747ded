package stack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds StartDockerd / StartRegistry when ctx has no deadline.
const DefaultStartTimeout = 60 * time.Second

// Dockerd is a private Docker daemon (/usr/sbin/dockerd) with its own
// containerd, unix socket, data root, exec root and pidfile. It runs with
// --iptables=false --bridge=none, so containers and build steps get no
// bridge network (builds need nothing special passed). Several can run at once.
//
// Layout (dir is owned by the daemon and removed by Stop):
//
//	dir/dockerd.log, dir/containerd.log   stdout+stderr of the two daemons
//	dir/daemon.json                       empty config (host /etc/docker/daemon.json is ignored)
//	dir/data                              --data-root
//	dir/containerd                        containerd root
//	run/docker.sock, run/docker.pid       run = dir/run, or a short /tmp/obb-run-* dir
//	run/exec, run/containerd.sock,        if dir is too long for unix sockets
//	run/containerd-state
//
// dockerd still creates /etc/docker/key.json if missing (20.10 has no flag
// to move it); all daemons share it, which is harmless outside swarm.
type Dockerd struct {
	Name          string
	Dir           string
	StorageDriver string // "overlay2" or "vfs"

	runDir     string
	ownRunDir  bool
	sock       string
	tcpAddr    string
	logf       func(string, ...any)
	dockerd    *proc
	containerd *proc

	stopOnce sync.Once
	stopErr  error
}

// keyMu serialises daemon start-ups while /etc/docker/key.json does not
// exist yet, so two daemons do not race to create it.
var keyMu sync.Mutex

// StartDockerd starts a containerd and a dockerd using dir (created if
// missing; if empty, a new /tmp/obb-* dir) and waits until GET /_ping answers
// OK. name labels logs and the daemon (label obb.name=<name>). logf may be nil.
//
// The storage driver is overlay2 when an overlay mount works under dir, else
// vfs; OBB_DOCKER_STORAGE_DRIVER overrides the choice.
func StartDockerd(ctx context.Context, dir, name string, logf func(string, ...any)) (*Dockerd, error) {
	return StartDockerdTCP(ctx, dir, name, "", logf)
}

// StartDockerdTCP is StartDockerd with the daemon also listening on plain
// tcp://tcpAddr (a loopback "127.0.0.1:PORT"; empty: unix socket only), as
// the original builder's hosts did (DOCKER_HOST_*=tcp://host:2375).
func StartDockerdTCP(ctx context.Context, dir, name, tcpAddr string, logf func(string, ...any)) (*Dockerd, error) {
	if logf == nil {
		logf = nopLogf
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	bins := make(map[string]string)
	for _, bin := range []string{"dockerd", "containerd", "runc", "containerd-shim-runc-v2"} {
		p, err := lookPath(bin)
		if err != nil {
			return nil, fmt.Errorf("%s not found (run scripts/deps.sh): %w", bin, err)
		}
		bins[bin] = p
	}
	start := time.Now()
	if dir == "" {
		var err error
		if dir, err = os.MkdirTemp("/tmp", "obb-"); err != nil {
			return nil, err
		}
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o711); err != nil {
		return nil, err
	}
	d := &Dockerd{Name: name, Dir: dir, logf: logf}
	fail := func(err error) (*Dockerd, error) {
		if serr := d.Stop(); serr != nil {
			logf("[%s] cleanup after failed start: %v", name, serr)
		}
		return nil, err
	}

	// Unix sockets: keep their paths short.
	d.runDir = filepath.Join(dir, "run")
	if len(d.runDir+"/containerd.sock.ttrpc") > maxSockPath {
		if d.runDir, err = os.MkdirTemp("/tmp", "obb-run-"); err != nil {
			return fail(err)
		}
		d.ownRunDir = true
	}
	for _, p := range []string{d.runDir, filepath.Join(dir, "data"), filepath.Join(dir, "containerd")} {
		if err := os.MkdirAll(p, 0o711); err != nil {
			return fail(err)
		}
	}
	d.sock = filepath.Join(d.runDir, "docker.sock")

	d.StorageDriver = os.Getenv("OBB_DOCKER_STORAGE_DRIVER")
	if d.StorageDriver == "" {
		if err := probeOverlay(filepath.Join(dir, "data")); err != nil {
			logf("[%s] overlay mount does not work under %s (%v): using vfs", name, dir, err)
			d.StorageDriver = "vfs"
		} else {
			d.StorageDriver = "overlay2"
		}
	}

	// containerd
	ctdSock := filepath.Join(d.runDir, "containerd.sock")
	ctdConf := filepath.Join(dir, "containerd.toml")
	conf := fmt.Sprintf(`version = 2
root = %s
state = %s
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = %s

[plugins."io.containerd.internal.v1.opt"]
  path = %s
`, strconv.Quote(filepath.Join(dir, "containerd")), strconv.Quote(filepath.Join(d.runDir, "containerd-state")),
		strconv.Quote(ctdSock), strconv.Quote(filepath.Join(dir, "containerd", "opt")))
	if err := os.WriteFile(ctdConf, []byte(conf), 0o644); err != nil {
		return fail(err)
	}
	cmd := exec.Command(bins["containerd"], "--config", ctdConf, "--log-level", "info")
	cmd.Dir = dir
	cmd.Env = childEnv("CONTAINERD_", "DOCKER_")
	if d.containerd, err = startProc(name+" containerd", cmd, filepath.Join(dir, "containerd.log")); err != nil {
		return fail(err)
	}
	if err := waitUnix(ctx, ctdSock, d.containerd); err != nil {
		return fail(fmt.Errorf("[%s] containerd did not start: %w\n--- %s/containerd.log (tail) ---\n%s",
			name, err, dir, tail(filepath.Join(dir, "containerd.log"), 30)))
	}
	ctdReady := time.Since(start)

	// dockerd
	if err := os.WriteFile(filepath.Join(dir, "daemon.json"), []byte("{}\n"), 0o644); err != nil {
		return fail(err)
	}
	args := []string{
		"--host", "unix://" + d.sock,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(d.runDir, "exec"),
		"--pidfile", filepath.Join(d.runDir, "docker.pid"),
		"--config-file", filepath.Join(dir, "daemon.json"),
		"--containerd", ctdSock,
		"--storage-driver", d.StorageDriver,
		"--iptables=false", "--ip6tables=false", "--ip-forward=false", "--ip-masq=false",
		"--bridge=none", "--userland-proxy=false",
		"--shutdown-timeout", "5",
		"--log-level", "info",
		"--label", "obb.name=" + name,
	}
	if tcpAddr != "" {
		args = append(args, "--host", "tcp://"+tcpAddr)
		d.tcpAddr = tcpAddr
	}
	cmd = exec.Command(bins["dockerd"], args...)
	cmd.Dir = dir
	cmd.Env = childEnv("DOCKER_", "CONTAINERD_")

	serial := false
	if _, err := os.Stat("/etc/docker/key.json"); err != nil {
		keyMu.Lock()
		serial = true
	}
	d.dockerd, err = startProc(name+" dockerd", cmd, filepath.Join(dir, "dockerd.log"))
	if err == nil {
		err = d.waitPing(ctx)
	}
	if serial {
		keyMu.Unlock()
	}
	if err != nil {
		return fail(fmt.Errorf("[%s] dockerd did not start: %w\n--- %s/dockerd.log (tail) ---\n%s",
			name, err, dir, d.LogTail(30)))
	}
	logf("[%s] dockerd ready on %s in %s (containerd %s, storage %s)", name, d.Host(),
		time.Since(start).Round(time.Millisecond), ctdReady.Round(time.Millisecond), d.StorageDriver)
	return d, nil
}

func (d *Dockerd) waitPing(ctx context.Context) error {
	e := d.Engine()
	var last error
	for {
		if d.dockerd.exited() {
			return fmt.Errorf("dockerd exited: %v", d.dockerd.err)
		}
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		last = e.Ping(pctx)
		cancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Host is the DOCKER_HOST of the daemon: "unix:///.../docker.sock".
func (d *Dockerd) Host() string { return "unix://" + d.sock }

// TCPHost is "tcp://127.0.0.1:PORT" when the daemon listens on TCP, else "".
func (d *Dockerd) TCPHost() string {
	if d.tcpAddr == "" {
		return ""
	}
	return "tcp://" + d.tcpAddr
}

// Socket is the path of the daemon's unix socket.
func (d *Dockerd) Socket() string { return d.sock }

// Engine returns an API client for the daemon.
func (d *Dockerd) Engine() *Engine {
	e, err := NewEngine(d.Host())
	if err != nil {
		panic(err) // cannot happen: the host is always a unix:// URL
	}
	return e
}

// PIDs returns the pids of dockerd and containerd.
func (d *Dockerd) PIDs() []int {
	var out []int
	for _, p := range []*proc{d.dockerd, d.containerd} {
		if p != nil {
			out = append(out, p.cmd.Process.Pid)
		}
	}
	return out
}

// Dirs returns the directories that Stop removes.
func (d *Dockerd) Dirs() []string {
	if d.ownRunDir {
		return []string{d.Dir, d.runDir}
	}
	return []string{d.Dir}
}

// LogTail returns the last n lines of dockerd.log (until Stop removes it).
func (d *Dockerd) LogTail(n int) string { return tail(filepath.Join(d.Dir, "dockerd.log"), n) }

// Stop kills the running containers (API, SIGKILL), shuts dockerd down
// (SIGTERM; SIGKILL after 30s), then containerd (same), then
// kills whatever is left that refers to the daemon's dirs (containerd shims
// and their containers), unmounts leftovers and removes the dirs.
// It is safe to call more than once.
func (d *Dockerd) Stop() error {
	d.stopOnce.Do(func() {
		start := time.Now()
		var errs []error
		if d.dockerd != nil && !d.dockerd.exited() {
			d.killContainers()
		}
		if err := d.dockerd.stop(30 * time.Second); err != nil {
			errs = append(errs, err)
		}
		if err := d.containerd.stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
		markers := []string{d.Dir + "/"}
		if d.runDir != "" {
			markers = append(markers, d.runDir+"/")
		}
		errs = append(errs, cleanUp(d.Name, d.logf, markers, d.Dirs())...)
		d.stopErr = errors.Join(errs...)
		d.logf("[%s] dockerd stopped in %s", d.Name, time.Since(start).Round(time.Millisecond))
	})
	return d.stopErr
}

// killContainers SIGKILLs the running containers through the API, so that
// the daemon's shutdown does not wait for each one's stop timeout (10s).
func (d *Dockerd) killContainers() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	e := d.Engine()
	var list []struct {
		ID string `json:"Id"`
	}
	if err := e.JSON(ctx, http.MethodGet, "/containers/json", nil, nil, &list); err != nil {
		d.logf("[%s] listing containers before stop: %v", d.Name, err)
		return
	}
	for _, c := range list {
		if err := e.JSON(ctx, http.MethodPost, "/containers/"+c.ID+"/kill", nil, nil, nil); err != nil {
			d.logf("[%s] kill container %.12s: %v", d.Name, c.ID, err)
		}
	}
}

// probeOverlay checks that an overlay filesystem can be mounted under dir.
func probeOverlay(dir string) error {
	p, err := os.MkdirTemp(dir, "overlay-probe-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(p)
	for _, s := range []string{"l", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(p, s), 0o755); err != nil {
			return err
		}
	}
	opts := fmt.Sprintf("lowerdir=%s/l,upperdir=%s/u,workdir=%s/w", p, p, p)
	m := filepath.Join(p, "m")
	if err := syscall.Mount("overlay", m, "overlay", 0, opts); err != nil {
		return err
	}
	return syscall.Unmount(m, syscall.MNT_DETACH)
}

// waitUnix waits until the unix socket accepts connections.
func waitUnix(ctx context.Context, sock string, p *proc) error {
	for {
		if p.exited() {
			return fmt.Errorf("exited: %v", p.err)
		}
		c, err := net.DialTimeout("unix", sock, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(25 * time.Millisecond):
		}
	}
}

// lookPath finds bin in PATH plus the sbin dirs (root's PATH may lack them).
func lookPath(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, bin)
		if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", bin, exec.ErrNotFound)
}

package stack

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// BuildkitdOptions configure StartBuildkitd.
type BuildkitdOptions struct {
	// Binary is the buildkitd to run (scripts/deps.sh builds it into
	// <cache>/buildkitd); empty: buildkitd from PATH.
	Binary string
	// HTTPRegistries are registry hosts ("127.0.0.1:PORT") buildkitd
	// reaches over plain http (the test registries).
	HTTPRegistries []string
	// TCPAddr, if set ("127.0.0.1:PORT"), makes buildkitd also listen on
	// tcp://TCPAddr with mTLS: TLSCA is the CA client certificates are
	// checked against, TLSCert and TLSKey buildkitd's own.
	TCPAddr                string
	TLSCA, TLSCert, TLSKey string
	// Name labels logs.
	Name string
}

// Buildkitd is a standalone BuildKit daemon running as root with the OCI
// worker (runc), host networking for RUN steps, a private root dir and a
// unix socket (and optionally tcp with mTLS). Several can run at once.
//
// Layout (dir is owned by the daemon and removed by Stop):
//
//	dir/root           buildkitd's state (content store, snapshots, cache)
//	dir/buildkitd.toml its config
//	dir/buildkitd.log  its output
//	run/buildkitd.sock the socket (run is dir/run, or a short /tmp dir)
type Buildkitd struct {
	Name string
	Dir  string

	runDir    string
	ownRunDir bool
	sock      string
	tcpAddr   string
	p         *proc
	logf      func(string, ...any)

	stopOnce sync.Once
	stopErr  error
}

// StartBuildkitd starts buildkitd using dir (created if missing; if empty,
// a new /tmp/obb-bk-* dir) and waits until its socket answers. logf may be
// nil.
func StartBuildkitd(ctx context.Context, dir string, o BuildkitdOptions, logf func(string, ...any)) (*Buildkitd, error) {
	if logf == nil {
		logf = nopLogf
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	bin := o.Binary
	if bin == "" {
		p, err := lookPath("buildkitd")
		if err != nil {
			return nil, fmt.Errorf("buildkitd not found (run scripts/deps.sh): %w", err)
		}
		bin = p
	}
	runc, err := lookPath("runc")
	if err != nil {
		return nil, fmt.Errorf("runc not found (run scripts/deps.sh): %w", err)
	}
	name := o.Name
	if name == "" {
		name = "buildkitd"
	}
	start := time.Now()
	if dir == "" {
		if dir, err = os.MkdirTemp("/tmp", "obb-bk-"); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "root"), 0o711); err != nil {
		return nil, err
	}
	b := &Buildkitd{Name: name, Dir: dir, logf: logf, tcpAddr: o.TCPAddr}
	fail := func(err error) (*Buildkitd, error) {
		if serr := b.Stop(); serr != nil {
			logf("[%s] cleanup after failed start: %v", name, serr)
		}
		return nil, err
	}
	b.runDir = filepath.Join(dir, "run")
	if len(b.runDir+"/buildkitd.sock") > maxSockPath {
		if b.runDir, err = os.MkdirTemp("/tmp", "obb-bkrun-"); err != nil {
			return fail(err)
		}
		b.ownRunDir = true
	}
	if err := os.MkdirAll(b.runDir, 0o711); err != nil {
		return fail(err)
	}
	b.sock = filepath.Join(b.runDir, "buildkitd.sock")

	var conf strings.Builder
	fmt.Fprintf(&conf, "root = %s\n\n[grpc]\n  address = [%s", strconv.Quote(filepath.Join(dir, "root")), strconv.Quote("unix://"+b.sock))
	if o.TCPAddr != "" {
		fmt.Fprintf(&conf, ", %s", strconv.Quote("tcp://"+o.TCPAddr))
	}
	conf.WriteString("]\n")
	if o.TCPAddr != "" {
		fmt.Fprintf(&conf, "  [grpc.tls]\n    cert = %s\n    key = %s\n    ca = %s\n",
			strconv.Quote(o.TLSCert), strconv.Quote(o.TLSKey), strconv.Quote(o.TLSCA))
	}
	fmt.Fprintf(&conf, "\n[otel]\n  socketPath = %s\n", strconv.Quote(filepath.Join(b.runDir, "otel.sock")))
	fmt.Fprintf(&conf, "\n[worker.oci]\n  enabled = true\n  binary = %s\n  networkMode = \"host\"\n  gc = true\n", strconv.Quote(runc))
	conf.WriteString("\n[worker.containerd]\n  enabled = false\n")
	for _, r := range o.HTTPRegistries {
		fmt.Fprintf(&conf, "\n[registry.%s]\n  http = true\n", strconv.Quote(r))
	}
	confPath := filepath.Join(dir, "buildkitd.toml")
	if err := os.WriteFile(confPath, []byte(conf.String()), 0o644); err != nil {
		return fail(err)
	}
	cmd := exec.Command(bin, "--config", confPath)
	cmd.Dir = dir
	cmd.Env = childEnv("BUILDKIT_", "DOCKER_", "CONTAINERD_")
	if b.p, err = startProc(name, cmd, filepath.Join(dir, "buildkitd.log")); err != nil {
		return fail(err)
	}
	if err := waitUnix(ctx, b.sock, b.p); err != nil {
		return fail(fmt.Errorf("[%s] buildkitd did not start: %w\n--- %s/buildkitd.log (tail) ---\n%s", name, err, dir, b.LogTail(30)))
	}
	logf("[%s] buildkitd ready on %s in %s", name, b.Host(), time.Since(start).Round(time.Millisecond))
	return b, nil
}

// Host is the buildkitd address for the plugin: "unix:///.../buildkitd.sock".
func (b *Buildkitd) Host() string { return "unix://" + b.sock }

// TCPHost is "tcp://127.0.0.1:PORT" when buildkitd listens on TCP, else "".
func (b *Buildkitd) TCPHost() string {
	if b.tcpAddr == "" {
		return ""
	}
	return "tcp://" + b.tcpAddr
}

// PID is buildkitd's process id.
func (b *Buildkitd) PID() int { return b.p.cmd.Process.Pid }

// LogTail returns the last n lines of buildkitd.log (until Stop removes it).
func (b *Buildkitd) LogTail(n int) string { return tail(filepath.Join(b.Dir, "buildkitd.log"), n) }

// dirs are the daemon's dirs.
func (b *Buildkitd) dirs() []string {
	d := []string{b.Dir}
	if b.ownRunDir {
		d = append(d, b.runDir)
	}
	return d
}

// Stop terminates buildkitd (SIGTERM, SIGKILL after 10s), kills what is
// left of its builds (runc containers under its root), unmounts leftovers
// and removes its dirs. Safe to call more than once.
func (b *Buildkitd) Stop() error {
	b.stopOnce.Do(func() {
		var errs []error
		if b.p != nil {
			if err := b.p.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		markers := []string{b.Dir + "/"}
		if b.ownRunDir {
			markers = append(markers, b.runDir+"/")
		}
		errs = append(errs, cleanUp(b.Name, b.logf, markers, b.dirs())...)
		b.stopErr = errors.Join(errs...)
	})
	return b.stopErr
}

// Package stack starts and stops the real processes that the end-to-end
// tests and the demo run against: private Docker daemons (each with its own
// containerd), Debian's docker-registry with token auth, and a busybox base
// image made offline from a static busybox binary.
//
// It uses the standard library only and talks to the Docker Engine API with
// net/http. Everything needs root, the Debian packages installed by
// scripts/deps.sh, and (for arm64) qemu-aarch64 registered in binfmt_misc.
//
// Directories given to StartDockerd and StartRegistry belong to the process
// started there: Stop removes them.
package stack

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// maxSockPath is the longest unix socket path we create (sun_path is 108
// bytes including the terminating NUL; keep a margin).
const maxSockPath = 100

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// WaitTCP waits until addr accepts TCP connections or ctx is done.
func WaitTCP(ctx context.Context, addr string) error {
	var d net.Dialer
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Proc is a process seen in /proc.
type Proc struct {
	PID     int
	PPID    int
	Cmdline string // arguments joined by spaces
}

// Processes lists the processes whose command line contains substr
// (all processes if substr is empty), excluding the calling process.
func Processes(substr string) ([]Proc, error) {
	all, err := procTable()
	if err != nil {
		return nil, err
	}
	var out []Proc
	for _, p := range all {
		if p.PID == os.Getpid() {
			continue
		}
		if substr == "" || strings.Contains(p.Cmdline, substr) {
			out = append(out, p)
		}
	}
	return out, nil
}

func procTable() (map[int]Proc, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	out := make(map[int]Proc)
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue // gone
		}
		// pid (comm) state ppid ...; comm may contain spaces and parens.
		i := bytes.LastIndexByte(stat, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(stat[i+1:]))
		if len(f) < 2 {
			continue
		}
		if f[0] == "Z" { // zombie: already dead, waiting to be reaped
			continue
		}
		ppid, _ := strconv.Atoi(f[1])
		cl, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		cmd := strings.TrimSpace(strings.ReplaceAll(string(cl), "\x00", " "))
		out[pid] = Proc{PID: pid, PPID: ppid, Cmdline: cmd}
	}
	return out, nil
}

// killTree SIGKILLs every process whose command line contains one of
// markers, together with all their descendants, and waits (up to 10s) for
// them to disappear. It returns the pids it killed.
func killTree(markers ...string) ([]int, error) {
	tab, err := procTable()
	if err != nil {
		return nil, err
	}
	children := make(map[int][]int)
	for _, p := range tab {
		children[p.PPID] = append(children[p.PPID], p.PID)
	}
	victims := make(map[int]bool)
	var add func(int)
	add = func(pid int) {
		if victims[pid] || pid == os.Getpid() || pid <= 1 {
			return
		}
		victims[pid] = true
		for _, c := range children[pid] {
			add(c)
		}
	}
	for _, p := range tab {
		for _, m := range markers {
			if m != "" && strings.Contains(p.Cmdline, m) {
				add(p.PID)
			}
		}
	}
	var pids []int
	for pid := range victims {
		pids = append(pids, pid)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	sort.Ints(pids)
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids {
		for alive(pid) {
			if time.Now().After(deadline) {
				return pids, fmt.Errorf("process %d still alive after SIGKILL", pid)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return pids, nil
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 || i+2 >= len(stat) {
		return true
	}
	return stat[i+2] != 'Z'
}

// unmountUnder lazily unmounts every mount point at or below one of dirs,
// deepest first.
func unmountUnder(dirs ...string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer f.Close()
	var mps []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 5 {
			continue
		}
		mp := unescapeMount(fs[4])
		for _, d := range dirs {
			if d != "" && (mp == d || strings.HasPrefix(mp, d+"/")) {
				mps = append(mps, mp)
				break
			}
		}
	}
	sort.Slice(mps, func(i, j int) bool { return len(mps[i]) > len(mps[j]) })
	var errs []error
	for _, mp := range mps {
		if err := syscall.Unmount(mp, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
			errs = append(errs, fmt.Errorf("unmount %s: %w", mp, err))
		}
	}
	return errors.Join(errs...)
}

// unescapeMount undoes the octal escapes (\040 etc.) of /proc/self/mountinfo.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// proc is a started child process with its exit watched in the background.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  *os.File
	done chan struct{}
	err  error // valid after done is closed
}

func startProc(name string, cmd *exec.Cmd, logPath string) (*proc, error) {
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd.Stdout = lf
	cmd.Stderr = lf
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	// Own process group: ^C in a terminal is handled by us, not by the daemon.
	cmd.SysProcAttr.Setpgid = true
	// If the test binary dies without Stop, do not leave the daemon behind.
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, log: lf, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		lf.Close()
		close(p.done)
	}()
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM, waits up to grace, then SIGKILLs and waits.
func (p *proc) stop(grace time.Duration) error {
	if p == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	_ = p.cmd.Process.Kill()
	select {
	case <-p.done:
		return fmt.Errorf("%s (pid %d) ignored SIGTERM for %s and was killed", p.name, p.cmd.Process.Pid, grace)
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) did not exit after SIGKILL", p.name, p.cmd.Process.Pid)
	}
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// childEnv is the environment for daemons: ours without variables that
// would redirect them, and a PATH that finds runc, containerd and shims.
func childEnv(dropPrefixes ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		drop := false
		for _, p := range dropPrefixes {
			if strings.HasPrefix(kv, p) {
				drop = true
				break
			}
		}
		if strings.HasPrefix(kv, "PATH=") {
			drop = true
		}
		if !drop {
			env = append(env, kv)
		}
	}
	path := os.Getenv("PATH")
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		if !strings.Contains(":"+path+":", ":"+d+":") {
			if path == "" {
				path = d
			} else {
				path += ":" + d
			}
		}
	}
	return append(env, "PATH="+path)
}

func nopLogf(string, ...any) {}

// cleanUp is the end of a daemon's Stop: it kills what is left that refers
// to markers (shims, containers, build processes), unmounts what is still
// mounted under dirs and removes them. logf tells which processes it
// killed.
func cleanUp(name string, logf func(string, ...any), markers, dirs []string) []error {
	var errs []error
	if pids, err := killTree(markers...); err != nil {
		errs = append(errs, err)
	} else if len(pids) > 0 {
		logf("[%s] killed leftover processes %v", name, pids)
	}
	if err := unmountUnder(dirs...); err != nil {
		errs = append(errs, err)
	}
	for _, p := range dirs {
		if err := os.RemoveAll(p); err != nil {
			errs = append(errs, err)
		}
	}
	return errs
}

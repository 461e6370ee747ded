package sshdocker

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/open-balena-builder/builder/tests/stack"
)

// sshdBin is Debian's openssh-server daemon (testdata/sshd-deps.sh
// installs it). It must be run by its absolute path (it re-executes itself).
const sshdBin = "/usr/sbin/sshd"

// testSSHD is a private sshd on 127.0.0.1 that lets root in with one
// generated key only, and runs commands with DOCKER_HOST set.
type testSSHD struct {
	Addr       string // 127.0.0.1:port
	HostKey    ssh.PublicKey
	ClientKey  string // private key file (ssh_key)
	ClientPub  string // its public half (ssh_certificate)
	KnownHosts string // known_hosts with HostKey for Addr (ssh_known_hosts)
	dir        string

	cmd  *exec.Cmd
	log  *lockedBuffer
	done chan struct{}
}

// Endpoint is the plugin's endpoint for the daemon behind the sshd.
func (s *testSSHD) Endpoint() string { return "ssh://root@" + s.Addr }

// installSSHD installs openssh-server when it is missing (idempotent).
func installSSHD(t *testing.T) {
	t.Helper()
	start := time.Now()
	out, err := exec.Command("bash", filepath.Join("testdata", "sshd-deps.sh")).CombinedOutput()
	if err != nil {
		t.Fatalf("testdata/sshd-deps.sh: %v\n%s", err, out)
	}
	t.Logf("sshd-deps.sh (%s) %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// startSSHD starts sshd -D -e with a config of its own in a temp dir
// (generated host and client keys, no passwords, its own pid file) whose
// sessions get DOCKER_HOST=dockerHost. It is stopped, with every process
// it started, when t ends.
func startSSHD(t *testing.T, dockerHost string) *testSSHD {
	t.Helper()
	installSSHD(t)
	// sshd's privilege separation directory; the package's service start
	// would make it, and the tests never start that service.
	if err := os.MkdirAll("/run/sshd", 0o755); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	s := &testSSHD{dir: dir, ClientKey: filepath.Join(dir, "id_ed25519"), ClientPub: filepath.Join(dir, "id_ed25519.pub"),
		KnownHosts: filepath.Join(dir, "known_hosts"), log: &lockedBuffer{}, done: make(chan struct{})}

	hostPub := writeKey(t, filepath.Join(dir, "ssh_host_ed25519_key"))
	clientPub := writeKey(t, s.ClientKey)
	s.HostKey = hostPub
	authorized := ssh.MarshalAuthorizedKey(clientPub)
	if err := os.WriteFile(s.ClientPub, authorized, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "authorized_keys"), authorized, 0o600); err != nil {
		t.Fatal(err)
	}

	port, err := stack.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	line := knownhosts.Line([]string{knownhosts.Normalize(s.Addr)}, hostPub)
	if err := os.WriteFile(s.KnownHosts, []byte(line+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	config := strings.Join([]string{
		"Port " + strconv.Itoa(port),
		"ListenAddress 127.0.0.1",
		"HostKey " + filepath.Join(dir, "ssh_host_ed25519_key"),
		"PidFile " + filepath.Join(dir, "sshd.pid"),
		"AuthorizedKeysFile " + filepath.Join(dir, "authorized_keys"),
		"PermitRootLogin prohibit-password",
		"PubkeyAuthentication yes",
		"PasswordAuthentication no",
		"KbdInteractiveAuthentication no",
		"UsePAM no",
		"StrictModes no", // the files live under /tmp, which is world-writable
		"SetEnv DOCKER_HOST=" + dockerHost,
		"MaxStartups 100",
		"LogLevel VERBOSE",
		"Subsystem sftp internal-sftp",
		"",
	}, "\n")
	cfgFile := filepath.Join(dir, "sshd_config")
	if err := os.WriteFile(cfgFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(sshdBin, "-t", "-f", cfgFile).CombinedOutput(); err != nil {
		t.Fatalf("sshd -t: %v\n%s", err, out)
	}

	s.cmd = exec.Command(sshdBin, "-D", "-e", "-f", cfgFile)
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sshd: %v", err)
	}
	go func() { _ = s.cmd.Wait(); close(s.done) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("sshd log:\n%s", s.log.String())
		}
		if err := s.stop(); err != nil {
			t.Errorf("stop sshd: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	for {
		c, err := (&net.Dialer{}).DialContext(ctx, "tcp", s.Addr)
		if err == nil {
			_ = c.Close()
			break
		}
		select {
		case <-s.done:
			t.Fatalf("sshd exited: %v\n%s", s.cmd.ProcessState, s.log.String())
		case <-ctx.Done():
			t.Fatalf("sshd does not listen on %s: %v\n%s", s.Addr, err, s.log.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Logf("sshd %d on %s", s.cmd.Process.Pid, s.Addr)
	return s
}

// stop ends sshd and every process under it (a connection's sshd, the
// remote docker dial-stdio), and waits until they are gone. (sshd's
// helpers for connections refused before authentication, as in the host
// key tests, exit on their own and are reaped by init, not by us.)
func (s *testSSHD) stop() error {
	pids := append([]int{s.cmd.Process.Pid}, descendants(s.cmd.Process.Pid)...)
	for _, pid := range pids {
		_ = syscall.Kill(pid, syscall.SIGTERM)
	}
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, pid := range pids[1:] {
		for alive(pid) {
			if time.Now().After(deadline) {
				_ = syscall.Kill(pid, syscall.SIGKILL)
				if time.Now().After(deadline.Add(5 * time.Second)) {
					return fmt.Errorf("process %d under sshd does not exit", pid)
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return nil
}

// descendants lists the processes under pid, from /proc.
func descendants(pid int) []int {
	parents := map[int][]int{}
	paths, _ := filepath.Glob("/proc/[0-9]*/stat")
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...; comm may hold spaces and parens.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 2 {
			continue
		}
		child, err1 := strconv.Atoi(filepath.Base(filepath.Dir(p)))
		ppid, err2 := strconv.Atoi(f[1])
		if err1 == nil && err2 == nil {
			parents[ppid] = append(parents[ppid], child)
		}
	}
	var out []int
	queue := []int{pid}
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		for _, c := range parents[p] {
			out = append(out, c)
			queue = append(queue, c)
		}
	}
	return out
}

// alive tells whether pid runs (a zombie counts as gone).
func alive(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && len(b) > i+2 && b[i+2] != 'Z'
}

// writeKey generates an ed25519 key, writes it in OpenSSH format to path
// and returns its public half.
func writeKey(t *testing.T, path string) ssh.PublicKey {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

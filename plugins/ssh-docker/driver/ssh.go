package driver

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/user"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/docker/docker/client"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/open-balena-builder/builder/plugins/sdk"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
)

// RemoteCommand is what each connection runs on the build host: the docker
// CLI relays its stdin and stdout to the daemon's socket (the remote
// user's DOCKER_HOST, else /var/run/docker.sock), as for docker's ssh://.
const RemoteCommand = "docker system dial-stdio"

const (
	// dialTimeout bounds the TCP connect and the SSH handshake.
	dialTimeout = 20 * time.Second
	// stderrTail is how much of the remote command's stderr is kept for
	// error messages.
	stderrTail = 4096
)

// NewClient returns an Engine API client for an ssh:// host. Every
// connection the client opens (API calls, hijacked BuildKit sessions) is a
// fresh SSH connection running RemoteCommand, closed with it: no ssh
// binary, no shared state between clients. Key and known_hosts files are
// read here, so edits apply to the next call without a restart.
func NewClient(host *pluginv1.HostConfig) (*client.Client, error) {
	t, err := newTarget(host)
	if err != nil {
		return nil, err
	}
	hc := &http.Client{
		// No Proxy: the connection is the SSH tunnel whatever the address.
		Transport:     &http.Transport{DialContext: t.dial, MaxIdleConns: 6, IdleConnTimeout: 30 * time.Second},
		CheckRedirect: client.CheckRedirect,
	}
	// WithHost first (it configures the default transport), then our
	// client. The host only names the daemon in requests and messages.
	c, err := client.NewClientWithOpts(client.WithHost("http://"+t.addr), client.WithHTTPClient(hc), client.WithAPIVersionNegotiation())
	if err != nil {
		return nil, fmt.Errorf("host %q: docker client: %w", host.GetName(), err)
	}
	return c, nil
}

// target is one ssh:// host, ready to dial.
type target struct {
	endpoint   string // ssh://user@host:port, for messages
	addr       string // host:port
	user       string
	knownHosts string
	auth       ssh.Signer
	checkKey   ssh.HostKeyCallback
}

// newTarget reads host's endpoint, key and known_hosts (see the package
// comment). Errors wrap sdk.ErrInvalidArgument: they are configuration
// mistakes, not an unreachable host.
func newTarget(host *pluginv1.HostConfig) (*target, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("host %q: %s: %w", host.GetName(), fmt.Sprintf(format, args...), sdk.ErrInvalidArgument)
	}
	endpoint := host.GetEndpoint()
	u, err := url.Parse(endpoint)
	if err != nil || endpoint == "" {
		return nil, bad("bad endpoint %q", endpoint)
	}
	if u.Scheme != "ssh" {
		return nil, bad("endpoint %q: ssh-docker speaks ssh://[user@]host[:port] only (use docker-tcp for tcp:// and unix://)", endpoint)
	}
	if u.Hostname() == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, bad("endpoint %q: want ssh://[user@]host[:port]", endpoint)
	}
	if _, ok := u.User.Password(); ok {
		return nil, bad("endpoint %q: passwords are not supported, use a key (ssh_key)", u.Redacted())
	}
	t := &target{addr: u.Host, user: u.User.Username()}
	if u.Port() == "" {
		t.addr = net.JoinHostPort(u.Hostname(), "22")
	}
	if t.user == "" {
		cur, err := user.Current()
		if err != nil {
			return nil, bad("endpoint %q has no user and the current one is unknown: %v", endpoint, err)
		}
		t.user = cur.Username
	}
	t.endpoint = "ssh://" + t.user + "@" + t.addr

	home, _ := os.UserHomeDir()
	keyFile := firstSet(host.GetSshPrivateKey(), host.GetTlsKey())
	if keyFile == "" {
		for _, name := range []string{"id_ed25519", "id_ecdsa", "id_rsa"} {
			if p := filepath.Join(home, ".ssh", name); home != "" && fileExists(p) {
				keyFile = p
				break
			}
		}
		if keyFile == "" {
			return nil, bad("no SSH private key: set ssh_key to the key file")
		}
	}
	if t.auth, err = loadSigner(keyFile, firstSet(host.GetSshCertificate(), host.GetTlsCert())); err != nil {
		return nil, bad("%v", err)
	}

	t.knownHosts = firstSet(host.GetSshKnownHosts(), host.GetTlsCa())
	if t.knownHosts == "" {
		if home == "" {
			return nil, bad("no known_hosts file: set ssh_known_hosts to it")
		}
		t.knownHosts = filepath.Join(home, ".ssh", "known_hosts")
	}
	if t.checkKey, err = knownhosts.New(t.knownHosts); err != nil {
		return nil, bad("known_hosts %s: %v; host keys are always checked: add the host's key (ssh-keyscan, after checking its fingerprint)", t.knownHosts, err)
	}
	return t, nil
}

// loadSigner reads an unencrypted private key and, when certFile is set,
// either its public half (checked to match) or an OpenSSH certificate for
// it (presented instead of the bare key).
func loadSigner(keyFile, certFile string) (ssh.Signer, error) {
	b, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("SSH private key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(b)
	if err != nil {
		var missing *ssh.PassphraseMissingError
		if errors.As(err, &missing) {
			return nil, fmt.Errorf("SSH private key (tls_key) %s is passphrase-protected; the plugin needs an unencrypted key file", keyFile)
		}
		return nil, fmt.Errorf("SSH private key (tls_key) %s: %w", keyFile, err)
	}
	if certFile == "" {
		return signer, nil
	}
	b, err = os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("SSH public key or certificate (tls_cert): %w", err)
	}
	pub, _, _, _, err := ssh.ParseAuthorizedKey(b)
	if err != nil {
		return nil, fmt.Errorf("SSH public key or certificate (tls_cert) %s: %w", certFile, err)
	}
	if cert, ok := pub.(*ssh.Certificate); ok {
		cs, err := ssh.NewCertSigner(cert, signer)
		if err != nil {
			return nil, fmt.Errorf("SSH certificate (tls_cert) %s is not for the key %s: %w", certFile, keyFile, err)
		}
		return cs, nil
	}
	if !bytes.Equal(pub.Marshal(), signer.PublicKey().Marshal()) {
		return nil, fmt.Errorf("SSH public key (tls_cert) %s is not the public half of %s", certFile, keyFile)
	}
	return signer, nil
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// HostKeyError is returned when the build host's SSH key is not the one in
// known_hosts, or is not there at all. No connection is made.
type HostKeyError struct {
	Addr       string // host:port
	KnownHosts string // the file checked
	Key        ssh.PublicKey
	Err        error // a *knownhosts.KeyError or *knownhosts.RevokedError
}

func (e *HostKeyError) Error() string {
	fp := e.Key.Type() + " " + ssh.FingerprintSHA256(e.Key)
	var ke *knownhosts.KeyError
	var re *knownhosts.RevokedError
	switch {
	case errors.As(e.Err, &re):
		return fmt.Sprintf("ssh %s: host key %s is revoked in %s; refusing to connect", e.Addr, fp, re.Revoked.Filename)
	case errors.As(e.Err, &ke) && len(ke.Want) > 0:
		var known []string
		for _, w := range ke.Want {
			known = append(known, fmt.Sprintf("%s:%d (%s %s)", w.Filename, w.Line, w.Key.Type(), ssh.FingerprintSHA256(w.Key)))
		}
		return fmt.Sprintf("ssh %s: host key mismatch: the host presented %s, known_hosts has %s; the host was reinstalled or someone is in the middle; refusing to connect",
			e.Addr, fp, strings.Join(known, ", "))
	default:
		return fmt.Sprintf("ssh %s: unknown host: its host key %s is not in known_hosts %s (tls_ca); check the fingerprint, add the key (ssh-keyscan -p <port> <host>) and retry; refusing to connect",
			e.Addr, fp, e.KnownHosts)
	}
}

func (e *HostKeyError) Unwrap() error { return e.Err }

// probeKey is a key no known_hosts holds: checking it lists the keys that
// are known for an address.
var probeKey, _ = ssh.NewPublicKey(ed25519.PublicKey(make([]byte, ed25519.PublicKeySize)))

// hostKeyAlgorithms returns the host key algorithms of the keys known_hosts
// has for addr, so that the server presents one of those (a host with
// ecdsa and ed25519 keys, of which only ed25519 is known, must not be
// refused for showing ecdsa). Nil (the defaults) when none is known.
func (t *target) hostKeyAlgorithms(addr string, remote net.Addr) []string {
	var ke *knownhosts.KeyError
	if err := t.checkKey(addr, remote, probeKey); !errors.As(err, &ke) {
		return nil
	}
	var algos []string
	add := func(a ...string) {
		for _, x := range a {
			if !containsString(algos, x) {
				algos = append(algos, x)
			}
		}
	}
	for _, w := range ke.Want {
		switch typ := w.Key.Type(); typ {
		case ssh.KeyAlgoRSA:
			add(ssh.KeyAlgoRSASHA512, ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSA)
		default:
			add(typ)
		}
	}
	return algos
}

func containsString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// dial opens an SSH connection to t, starts RemoteCommand in a session and
// returns the session's stdin and stdout as the connection to the daemon.
// The network and address the HTTP transport passes are ignored.
func (t *target) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, fmt.Errorf("ssh %s: %w", t.endpoint, err)
	}
	// The handshake does not take a context: a deadline bounds it, and
	// cancelling ctx moves the deadline to now.
	deadline, _ := ctx.Deadline()
	_ = raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { _ = raw.SetDeadline(time.Unix(1, 0)) })

	var keyErr error
	cfg := &ssh.ClientConfig{
		User: t.user,
		Auth: []ssh.AuthMethod{ssh.PublicKeys(t.auth)},
		HostKeyCallback: func(hostname string, remote net.Addr, key ssh.PublicKey) error {
			if err := t.checkKey(hostname, remote, key); err != nil {
				keyErr = &HostKeyError{Addr: t.addr, KnownHosts: t.knownHosts, Key: key, Err: err}
				return keyErr
			}
			return nil
		},
		HostKeyAlgorithms: t.hostKeyAlgorithms(t.addr, raw.RemoteAddr()),
	}
	sc, chans, reqs, err := ssh.NewClientConn(raw, t.addr, cfg)
	stop()
	if err == nil && ctx.Err() != nil {
		_ = sc.Close()
		err = ctx.Err()
	}
	if err != nil {
		_ = raw.Close()
		switch {
		case keyErr != nil:
			return nil, keyErr
		case ctx.Err() != nil:
			return nil, fmt.Errorf("ssh %s: handshake: %w", t.endpoint, ctx.Err())
		default:
			return nil, fmt.Errorf("ssh %s: %w", t.endpoint, err)
		}
	}
	_ = raw.SetDeadline(time.Time{})
	sshClient := ssh.NewClient(sc, chans, reqs)
	c, err := startDialStdio(sshClient)
	if err != nil {
		_ = sshClient.Close()
		return nil, fmt.Errorf("ssh %s: %w", t.endpoint, err)
	}
	c.local, c.remote = raw.LocalAddr(), raw.RemoteAddr()
	c.endpoint = t.endpoint
	return c, nil
}

// startDialStdio runs RemoteCommand in a new session of sshClient.
func startDialStdio(sshClient *ssh.Client) (*conn, error) {
	s, err := sshClient.NewSession()
	if err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	stdin, err := s.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := s.StdoutPipe()
	if err != nil {
		return nil, err
	}
	c := &conn{client: sshClient, session: s, stdin: stdin, stdout: stdout}
	s.Stderr = &c.stderr
	if err := s.Start(RemoteCommand); err != nil {
		return nil, fmt.Errorf("start %q: %w", RemoteCommand, err)
	}
	return c, nil
}

// conn is a daemon connection over an SSH session: reads are the remote
// command's stdout, writes its stdin. Closing it ends the session and the
// SSH connection. Deadlines are not supported (as with docker's ssh
// helper); the HTTP transport and the hijacked sessions do not need them.
type conn struct {
	client   *ssh.Client
	session  *ssh.Session
	stdin    io.WriteCloser
	stdout   io.Reader
	stderr   tailWriter
	endpoint string

	local, remote net.Addr
	readAny       bool
	closeOnce     sync.Once
}

func (c *conn) Read(p []byte) (int, error) {
	n, err := c.stdout.Read(p)
	if n > 0 {
		c.readAny = true
	}
	if errors.Is(err, io.EOF) && !c.readAny {
		// The command ended before saying anything: its stderr says why
		// (no docker CLI, daemon not running, ...).
		if msg := c.stderr.String(); msg != "" {
			return n, fmt.Errorf("ssh %s: %q: %s: %w", c.endpoint, RemoteCommand, msg, io.ErrUnexpectedEOF)
		}
	}
	return n, err
}

func (c *conn) Write(p []byte) (int, error) { return c.stdin.Write(p) }

// CloseWrite sends EOF to the remote command (docker's hijacked streams
// half-close this way); dial-stdio half-closes the daemon socket in turn.
func (c *conn) CloseWrite() error { return c.stdin.Close() }

func (c *conn) Close() error {
	var err error
	c.closeOnce.Do(func() {
		_ = c.session.Close()
		err = c.client.Close()
		if errors.Is(err, net.ErrClosed) {
			err = nil
		}
	})
	return err
}

func (c *conn) LocalAddr() net.Addr              { return c.local }
func (c *conn) RemoteAddr() net.Addr             { return c.remote }
func (c *conn) SetDeadline(time.Time) error      { return nil }
func (c *conn) SetReadDeadline(time.Time) error  { return nil }
func (c *conn) SetWriteDeadline(time.Time) error { return nil }

// tailWriter keeps the last stderrTail bytes written to it.
type tailWriter struct {
	mu  sync.Mutex
	buf []byte
}

func (w *tailWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if len(w.buf) > stderrTail {
		w.buf = w.buf[len(w.buf)-stderrTail:]
	}
	return len(p), nil
}

func (w *tailWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.TrimSpace(string(w.buf))
}

// firstSet returns the first non-empty value: the ssh_* field, else the
// tls_* one that older configurations used for SSH material.
func firstSet(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

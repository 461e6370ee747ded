// Package harness starts the whole builder stack on loopback and private
// sockets for end-to-end tests and the demo: an open-balena-api stand-in, a
// token-auth registry, Docker daemons for amd64 and arm64 (qemu binfmt),
// busybox base images, and `obb serve all` built from this checkout.
package harness

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-balena-builder/builder/internal/apistandin"
	"github.com/open-balena-builder/builder/platform/certs"
	"github.com/open-balena-builder/builder/tests/stack"
)

// Issuer and BuilderToken of the stand-in API; AdminToken is the
// builder's operator token (OBB_ADMIN_TOKEN).
const (
	Issuer       = "api.balena.local"
	BuilderToken = "builder-token-0123456789abcdef"
	AdminToken   = "operator-token-0123456789abcdef"
)

// ArmBase is the arm64 busybox image on the amd64 host.
const ArmBase = "arm64v8/busybox"

// Options choose what to start.
type Options struct {
	// ARM64 starts a second daemon as the native arm64 host.
	ARM64 bool
	// Logf receives progress lines (nil: quiet).
	Logf func(string, ...any)
	// Env adds to (or overrides) the builder's environment.
	Env []string
	// BuilderLog, when set, receives the builder's stderr.
	BuilderLog *os.File
	// Split runs each service in its own process (`obb serve release`,
	// `scheduler`, `executor`, `ingest`) instead of `obb serve all`.
	Split bool
	// AMD64Pool, when above 1, starts that many amd64 daemons (Stack.Pool)
	// and gives them to the builder as hosts amd64-1 … amd64-N of the YAML
	// file instead of DOCKER_HOST_AMD64. 0 or 1: the one amd64 daemon.
	AMD64Pool int
	// PoolMaxConcurrent is max_concurrent of each pool host (0: 2, as
	// DOCKER_HOST_AMD64 gets).
	PoolMaxConcurrent int
	// Buildkit starts a standalone buildkitd as the host "buildkit"
	// (plugin: buildkit, native amd64) and a registry without auth holding
	// the base image (BaseImage): buildkitd has no image store.
	Buildkit bool
}

// PoolHost is the builder's name of the i-th (0-based) daemon of an amd64
// pool (Options.AMD64Pool): "amd64-1", "amd64-2", …
func PoolHost(i int) string { return fmt.Sprintf("amd64-%d", i+1) }

// Stack is a running builder with everything it talks to.
type Stack struct {
	Root       string
	API        *apistandin.Server
	APIURL     string
	Registry   *stack.Registry
	AMD64      *stack.Dockerd
	ARM64      *stack.Dockerd
	BuilderURL string
	// Buildkitd is the buildkit host of Options.Buildkit, BaseImage the
	// busybox it builds FROM ("<registry>/library/busybox:latest").
	Buildkitd *stack.Buildkitd
	BaseImage string
	baseReg   *stack.Registry
	// Pool holds the amd64 daemons of Options.AMD64Pool (Pool[0] is AMD64,
	// Pool[i] the builder's host PoolHost(i)); nil without a pool.
	Pool []*stack.Dockerd
	// AdminURL is the operator surface (OBB_ADMIN_ADDR), REST and gRPC;
	// AdminAddr the same without scheme, for gRPC clients.
	AdminURL, AdminAddr string
	// gRPC addresses.
	Ingest, Scheduler, Executor, Release string
	DataDir                              string
	// TLS holds the services' mTLS files when they run split.
	TLS certs.Files

	apiSrv   *http.Server
	builders []*exec.Cmd  // the obb processes; the last one serves HTTP
	start    func() error // starts them
	exited   chan error
	logFile  *os.File
	logf     func(string, ...any)
}

// RepoRoot finds the checkout (the directory holding go.work).
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.work not found above the working directory")
		}
		dir = parent
	}
}

// Build compiles obb and the executor plugins (docker-tcp, ssh-docker) into dir.
func Build(ctx context.Context, dir string) error {
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	for _, b := range []struct{ out, pkg string }{
		{"obb", "./cmd/obb"},
		{"obb-plugin-docker-tcp", "./plugins/docker-tcp"},
		{"obb-plugin-ssh-docker", "./plugins/ssh-docker"},
		{"obb-plugin-buildkit", "./plugins/buildkit"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", filepath.Join(dir, b.out), b.pkg)
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %w\n%s", b.pkg, err, out)
		}
	}
	return nil
}

// Deps runs scripts/deps.sh (apt packages, busybox, binfmt) and returns the
// cache directory holding busybox-amd64 and busybox-arm64.
func Deps(ctx context.Context) (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "deps.sh"))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("scripts/deps.sh: %w\n%s", err, out)
	}
	if c := os.Getenv("OBB_CACHE"); c != "" {
		return c, nil
	}
	return filepath.Join(root, ".cache"), nil
}

func freeAddr() (string, error) {
	p, err := stack.FreePort()
	if err != nil {
		return "", err
	}
	return "127.0.0.1:" + strconv.Itoa(p), nil
}

// Start brings the stack up. On error everything started is stopped.
func Start(ctx context.Context, o Options) (s *Stack, err error) {
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	cache, err := Deps(ctx)
	if err != nil {
		return nil, err
	}
	root, err := os.MkdirTemp("/tmp", "obb-e2e-")
	if err != nil {
		return nil, err
	}
	s = &Stack{Root: root, logf: logf, exited: make(chan error, 4)}
	defer func() {
		if err != nil {
			s.Stop()
			s = nil
		}
	}()
	if err := Build(ctx, filepath.Join(root, "bin")); err != nil {
		return s, err
	}

	// The registry's address must be known to the API (image locations).
	regAddr, err := freeAddr()
	if err != nil {
		return s, err
	}
	api, err := apistandin.New(apistandin.Config{RegistryHost: regAddr, Issuer: Issuer, BuilderToken: BuilderToken})
	if err != nil {
		return s, err
	}
	s.API = api
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return s, err
	}
	s.APIURL = "http://" + lis.Addr().String()
	s.apiSrv = &http.Server{Handler: api, ReadHeaderTimeout: 10 * time.Second}
	go s.apiSrv.Serve(lis)

	s.Registry, err = stack.StartRegistryAt(ctx, filepath.Join(root, "registry"), regAddr, stack.TokenAuth{
		Realm: s.APIURL + "/auth/v1/token", Service: regAddr, Issuer: Issuer, RootCertPEM: api.CertPEM(),
	}, logf)
	if err != nil {
		return s, err
	}
	if s.AMD64, err = stack.StartDockerd(ctx, filepath.Join(root, "amd64"), "amd64", logf); err != nil {
		return s, err
	}
	if err := loadAMD64Bases(ctx, s.AMD64, cache); err != nil {
		return s, err
	}
	if o.AMD64Pool > 1 {
		if err := s.startPool(ctx, o.AMD64Pool, cache); err != nil {
			return s, err
		}
	}
	if o.Buildkit {
		if err := s.startBuildkit(ctx, cache); err != nil {
			return s, err
		}
	}
	if o.ARM64 {
		// The arm64 host is reached over tcp://, the amd64 one over unix://.
		tcp, err := freeAddr()
		if err != nil {
			return s, err
		}
		if s.ARM64, err = stack.StartDockerdTCP(ctx, filepath.Join(root, "arm64"), "arm64", tcp, logf); err != nil {
			return s, err
		}
		if err := stack.LoadBusybox(ctx, s.ARM64.Host(), "arm64", filepath.Join(cache, "busybox-arm64")); err != nil {
			return s, err
		}
	}
	return s, s.startBuilder(ctx, o)
}

// loadAMD64Bases loads busybox into an amd64 daemon, and an arm64 base
// under its own name, for emulated builds on the amd64 host (Docker 20.10
// keeps one platform per tag).
func loadAMD64Bases(ctx context.Context, d *stack.Dockerd, cache string) error {
	if err := stack.LoadBusybox(ctx, d.Host(), "amd64", filepath.Join(cache, "busybox-amd64")); err != nil {
		return err
	}
	return stack.LoadBusybox(ctx, d.Host(), "arm64", filepath.Join(cache, "busybox-arm64"), ArmBase)
}

// startPool starts the amd64 daemons 2…n of a pool, at once, each with the
// bases AMD64 has; s.AMD64 is the first.
func (s *Stack) startPool(ctx context.Context, n int, cache string) error {
	s.Pool = make([]*stack.Dockerd, n)
	s.Pool[0] = s.AMD64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := 1; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d, err := stack.StartDockerd(ctx, filepath.Join(s.Root, PoolHost(i)), PoolHost(i), s.logf)
			if err != nil {
				errs[i] = err
				return
			}
			s.Pool[i] = d
			errs[i] = loadAMD64Bases(ctx, d, cache)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// startBuildkit starts the buildkit host: a registry without auth with
// busybox in it (pushed from the amd64 daemon) and a buildkitd that reaches
// it and the openBalena registry over plain http.
func (s *Stack) startBuildkit(ctx context.Context, cache string) error {
	reg, err := stack.StartRegistry(ctx, filepath.Join(s.Root, "base-registry"), stack.TokenAuth{}, s.logf)
	if err != nil {
		return fmt.Errorf("base image registry: %w", err)
	}
	s.baseReg = reg
	s.BaseImage = reg.Addr() + "/library/busybox:latest"
	e := s.AMD64.Engine()
	if resp, err := e.Do(ctx, http.MethodPost, "/images/busybox/tag?repo="+url.QueryEscape(reg.Addr()+"/library/busybox")+"&tag=latest", nil, nil); err != nil {
		return fmt.Errorf("tag busybox: %w", err)
	} else {
		resp.Body.Close()
	}
	auth := base64.URLEncoding.EncodeToString([]byte(`{}`))
	if _, err := e.Stream(ctx, http.MethodPost, "/images/"+reg.Addr()+"/library/busybox/push?tag=latest", nil,
		http.Header{"X-Registry-Auth": {auth}}, func(stack.JSONMessage) {}); err != nil {
		return fmt.Errorf("push busybox to %s: %w", reg.Addr(), err)
	}
	bk, err := stack.StartBuildkitd(ctx, filepath.Join(s.Root, "buildkitd"), stack.BuildkitdOptions{
		Name: "buildkitd", Binary: filepath.Join(cache, "buildkitd"), HTTPRegistries: []string{s.Registry.Addr(), reg.Addr()},
	}, s.logf)
	if err != nil {
		return fmt.Errorf("buildkitd: %w", err)
	}
	s.Buildkitd = bk
	return nil
}

// poolYAML is the hosts: entries of an amd64 pool.
func (s *Stack) poolYAML(o Options) string {
	maxc := o.PoolMaxConcurrent
	if maxc <= 0 {
		maxc = 2
	}
	network := ""
	for _, e := range o.Env {
		if v, ok := strings.CutPrefix(e, "OBB_BUILD_NETWORK="); ok {
			network = v
		}
	}
	var sb strings.Builder
	for i, d := range s.Pool {
		fmt.Fprintf(&sb, `  - name: %s
    endpoint: %s
    native_archs: [amd64, i386, i386-nlp]
    emulated_archs: [aarch64, armv7hf, rpi]
    max_concurrent: %d
`, PoolHost(i), d.Host(), maxc)
		if network != "" {
			fmt.Fprintf(&sb, "    network_mode: %s\n", network)
		}
	}
	return sb.String()
}

// startBuilder runs `obb serve all` with the seed's environment variables.
func (s *Stack) startBuilder(ctx context.Context, o Options) error {
	addrs := make([]string, 6)
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return err
		}
		addrs[i] = a
	}
	s.BuilderURL = "http://" + addrs[0]
	s.Ingest, s.Scheduler, s.Executor, s.Release = addrs[1], addrs[2], addrs[3], addrs[4]
	s.AdminAddr, s.AdminURL = addrs[5], "http://"+addrs[5]
	s.DataDir = filepath.Join(s.Root, "data")
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"HOME=" + os.Getenv("HOME"),
		"API_HOST=" + s.APIURL,
		"REGISTRY2_HOST=" + s.Registry.Addr(),
		"TOKEN_AUTH_BUILDER_TOKEN=" + BuilderToken,
		"DOCKER_BUILDKIT=0",
		"OBB_HTTP_ADDR=" + addrs[0],
		"OBB_INGEST_ADDR=" + s.Ingest,
		"OBB_SCHEDULER_ADDR=" + s.Scheduler,
		"OBB_EXECUTOR_ADDR=" + s.Executor,
		"OBB_RELEASE_ADDR=" + s.Release,
		"OBB_ADMIN_ADDR=" + s.AdminAddr,
		"OBB_ADMIN_TOKEN=" + AdminToken,
		"OBB_DATA_DIR=" + s.DataDir,
		"OBB_LOG_LEVEL=debug",
		// Stop (SIGINT) waits 15 s: builds still running by then are cancelled.
		"OBB_SHUTDOWN_GRACE=5s",
	}
	if o.Split {
		// Services in separate processes authenticate each other with mTLS.
		f, err := certs.Generate(filepath.Join(s.Root, "certs"), []string{"127.0.0.1", "localhost"}, 24*time.Hour)
		if err != nil {
			return err
		}
		s.TLS = f
		env = append(env, "OBB_TLS_CA="+f.CA, "OBB_TLS_CERT="+f.Cert, "OBB_TLS_KEY="+f.Key)
	}
	if s.Pool == nil {
		env = append(env, "DOCKER_HOST_AMD64="+s.AMD64.Host())
	}
	args := []string{"serve"}
	if s.ARM64 != nil || s.Pool != nil || s.Buildkitd != nil {
		// The amd64 host comes from the seed's variables (classic builder),
		// a pool of them from the YAML file; the arm64 one from the YAML
		// file, with BuildKit, as an operator with several kinds of hosts
		// would write it.
		conf := filepath.Join(s.Root, "obb.yaml")
		yaml := "hosts:\n" + s.poolYAML(o)
		if s.ARM64 != nil {
			yaml += fmt.Sprintf(`  - name: arm64
    endpoint: %s
    native_archs: [aarch64, armv7hf, rpi]
    emulated_archs: [amd64, i386]
    max_concurrent: 2
    buildkit: true
    network_mode: none
    allow_plaintext: true
`, s.ARM64.TCPHost())
		}
		if s.Buildkitd != nil {
			yaml += fmt.Sprintf(`  - name: buildkit
    plugin: buildkit
    endpoint: %s
    native_archs: [amd64, i386, i386-nlp]
    max_concurrent: 2
`, s.Buildkitd.Host())
		}
		if err := os.WriteFile(conf, []byte(yaml), 0o644); err != nil {
			return err
		}
		args = append(args, "--config", conf)
	}
	env = append(env, o.Env...)
	logPath := filepath.Join(s.Root, "obb.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return err
	}
	s.logFile = lf
	services := []string{"all"}
	if o.Split {
		services = []string{"release", "scheduler", "executor", "ingest"}
	}
	s.start = func() error {
		for _, svc := range services {
			cmd := exec.Command(filepath.Join(s.Root, "bin", "obb"), append(args, svc)...)
			cmd.Env = env
			cmd.Stderr, cmd.Stdout = lf, lf
			if o.BuilderLog != nil {
				cmd.Stderr = o.BuilderLog
			}
			if err := cmd.Start(); err != nil {
				return err
			}
			s.builders = append(s.builders, cmd)
			go func() { s.exited <- cmd.Wait() }()
		}
		return nil
	}
	if err := s.start(); err != nil {
		return err
	}
	return s.waitReady(ctx)
}

// RestartBuilder starts the obb processes again, as they were started,
// after StopBuilder, and waits until they serve.
func (s *Stack) RestartBuilder(ctx context.Context) error {
	if len(s.builders) > 0 {
		return errors.New("the builder still runs: StopBuilder first")
	}
	if err := s.start(); err != nil {
		return err
	}
	return s.waitReady(ctx)
}

// waitReady waits until the HTTP face answers and the hosts are registered.
func (s *Stack) waitReady(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	want := max(1, len(s.Pool))
	if s.ARM64 != nil {
		want++
	}
	if s.Buildkitd != nil {
		want++
	}
	for time.Now().Before(deadline) {
		select {
		case err := <-s.exited:
			s.exited <- err
			return fmt.Errorf("obb exited at start (%v):\n%s", err, s.BuilderLogTail(40))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		resp, err := s.Admin(http.MethodGet, "/v1/hosts", nil)
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK && strings.Count(string(b), `"name"`) >= want {
			s.logf("[obb] ready at %s", s.BuilderURL)
			return nil
		}
	}
	return fmt.Errorf("obb not ready after 30s:\n%s", s.BuilderLogTail(40))
}

// StopBuilder sends sig to the obb processes and waits up to timeout for
// them to exit; it returns the first exit error (nil: they all exited 0).
// Stop then has no builder to stop.
func (s *Stack) StopBuilder(sig os.Signal, timeout time.Duration) error {
	for _, b := range s.builders {
		_ = b.Process.Signal(sig)
	}
	var first error
	deadline := time.After(timeout)
	for range s.builders {
		select {
		case err := <-s.exited:
			if first == nil {
				first = err
			}
		case <-deadline:
			return fmt.Errorf("obb still running %s after %v", timeout, sig)
		}
	}
	s.builders = nil
	return first
}

// Admin calls the operator surface's REST API with the operator token.
func (s *Stack) Admin(method, path string, body io.Reader) (*http.Response, error) {
	return Call(method, s.AdminURL+path, AdminToken, body)
}

// Call sends an HTTP request with "Authorization: Bearer <token>" (none
// when token is "").
func Call(method, url, token string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		return nil, err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return http.DefaultClient.Do(req)
}

// BuilderPeakRSS is the builder process's peak resident memory (VmHWM), in
// bytes; the executor plugins are separate processes, not counted.
func (s *Stack) BuilderPeakRSS() (int64, error) {
	return PeakRSS(s.builders[len(s.builders)-1].Process.Pid)
}

// PeakRSS reads VmHWM of a process from /proc.
func PeakRSS(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}

// BuilderLogTail returns the last n lines of the builder's log.
func (s *Stack) BuilderLogTail(n int) string {
	b, _ := os.ReadFile(filepath.Join(s.Root, "obb.log"))
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BuilderLog returns the builder's whole log.
func (s *Stack) BuilderLog() string {
	b, _ := os.ReadFile(filepath.Join(s.Root, "obb.log"))
	return string(b)
}

// Stop stops everything and removes the stack's files.
func (s *Stack) Stop() {
	for _, b := range s.builders {
		_ = b.Process.Signal(os.Interrupt)
	}
	deadline := time.After(15 * time.Second)
	for range s.builders {
		select {
		case <-s.exited:
		case <-deadline:
			for _, b := range s.builders {
				_ = b.Process.Kill()
			}
			<-s.exited
		}
	}
	if s.logFile != nil {
		s.logFile.Close()
	}
	if s.apiSrv != nil {
		_ = s.apiSrv.Close()
	}
	daemons := []*stack.Dockerd{s.AMD64, s.ARM64}
	if len(s.Pool) > 1 {
		daemons = append(daemons, s.Pool[1:]...)
	}
	for _, d := range daemons {
		if d != nil {
			if err := d.Stop(); err != nil {
				s.logf("stop %s: %v", d.Name, err)
			}
		}
	}
	if s.Buildkitd != nil {
		if err := s.Buildkitd.Stop(); err != nil {
			s.logf("stop buildkitd: %v", err)
		}
	}
	if s.baseReg != nil {
		_ = s.baseReg.Stop()
	}
	if s.Registry != nil {
		_ = s.Registry.Stop()
	}
	if s.Root != "" {
		_ = os.RemoveAll(s.Root)
	}
}

// RegistryToken gets a registry token for repo ("v2/<hash>") with actions
// ("pull" or "pull,push") from the API's token endpoint, with the builder
// token, as the builder and the delta server do.
func (s *Stack) RegistryToken(repo, actions string) (string, error) {
	return (&TokenSource{APIURL: s.APIURL, Registry: s.Registry.Addr(), BuilderToken: BuilderToken}).Token(repo, actions)
}

// TokenSource asks an API's token endpoint for registry tokens with the
// builder token (Basic builder:<TOKEN_AUTH_BUILDER_TOKEN>).
type TokenSource struct {
	APIURL, Registry, BuilderToken string
}

// Token returns a token for repo with actions.
func (ts *TokenSource) Token(repo, actions string) (string, error) {
	q := url.Values{"service": {ts.Registry}, "scope": {"repository:" + repo + ":" + actions}}
	req, err := http.NewRequest(http.MethodGet, ts.APIURL+"/auth/v1/token?"+q.Encode(), nil)
	if err != nil {
		return "", err
	}
	req.SetBasicAuth("builder", ts.BuilderToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var tok struct{ Token string }
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || resp.StatusCode != http.StatusOK || tok.Token == "" {
		return "", fmt.Errorf("token endpoint answered %s (%v)", resp.Status, err)
	}
	return tok.Token, nil
}

// PullFromRegistry pulls ref (an image of the stack's registry) into the
// amd64 daemon with a registry token.
func (s *Stack) PullFromRegistry(ctx context.Context, ref, token string) error {
	auth := base64.URLEncoding.EncodeToString([]byte(`{"registrytoken":"` + token + `"}`))
	_, err := s.AMD64.Engine().Stream(ctx, http.MethodPost, "/images/create?fromImage="+url.QueryEscape(ref), nil,
		http.Header{"X-Registry-Auth": {auth}}, func(stack.JSONMessage) {})
	return err
}

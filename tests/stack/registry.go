package stack

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// TokenAuth configures the registry's auth.token section (the openBalena
// setup: realm https://api.<tld>/auth/v1/token, service = registry host,
// issuer = api.<tld>, rootcertbundle = the token signing certificate).
// Registry 2.8 needs no jwks. A zero TokenAuth starts the registry without auth.
type TokenAuth struct {
	Realm       string
	Service     string
	Issuer      string
	RootCertPEM []byte
}

// Registry is Debian's docker-registry (distribution 2.8.2) on
// 127.0.0.1:<free port> with filesystem storage (delete enabled).
//
// Layout (dir is owned by the registry and removed by Stop):
//
//	dir/config.yml, dir/rootcert.pem, dir/registry.log, dir/data (storage root)
//
// Docker daemons treat 127.0.0.0/8 registries as insecure, so they push to
// it over plain http without extra configuration.
type Registry struct {
	Dir  string
	addr string
	logf func(string, ...any)
	p    *proc

	stopOnce sync.Once
	stopErr  error
}

// StartRegistry writes the config and starts the registry, waiting until
// GET /v2/ answers (401 with token auth, 200 without).
func StartRegistry(ctx context.Context, dir string, auth TokenAuth, logf func(string, ...any)) (*Registry, error) {
	return StartRegistryAt(ctx, dir, "", auth, logf)
}

// StartRegistryAt is StartRegistry on a given "127.0.0.1:PORT" (when the
// address must be known before the registry starts, e.g. because image
// locations name it); an empty addr picks a free port.
func StartRegistryAt(ctx context.Context, dir, addr string, auth TokenAuth, logf func(string, ...any)) (*Registry, error) {
	if logf == nil {
		logf = nopLogf
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultStartTimeout)
		defer cancel()
	}
	bin, err := lookPath("docker-registry")
	if err != nil {
		return nil, fmt.Errorf("docker-registry not found (run scripts/deps.sh): %w", err)
	}
	useAuth := auth.Realm != "" || auth.Service != "" || auth.Issuer != "" || len(auth.RootCertPEM) > 0
	if useAuth && (auth.Realm == "" || auth.Service == "" || auth.Issuer == "" || len(auth.RootCertPEM) == 0) {
		return nil, errors.New("registry token auth needs Realm, Service, Issuer and RootCertPEM")
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("/tmp", "obb-registry-"); err != nil {
			return nil, err
		}
	}
	if dir, err = filepath.Abs(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, err
	}
	r := &Registry{Dir: dir, logf: logf}
	if useAuth {
		if err := os.WriteFile(filepath.Join(dir, "rootcert.pem"), auth.RootCertPEM, 0o644); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	var lastErr error
	// The port is picked before the registry binds it: retry if someone
	// else took it in between.
	for attempt := 0; attempt < 3; attempt++ {
		if addr != "" {
			r.addr = addr
		} else {
			port, err := FreePort()
			if err != nil {
				return nil, err
			}
			r.addr = "127.0.0.1:" + strconv.Itoa(port)
		}
		conf := registryConfig(dir, r.addr, auth, useAuth)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(conf), 0o644); err != nil {
			return nil, err
		}
		cmd := exec.Command(bin, "serve", cfgPath)
		cmd.Dir = dir
		cmd.Env = childEnv("REGISTRY_", "OTEL_")
		if r.p, err = startProc("docker-registry", cmd, filepath.Join(dir, "registry.log")); err != nil {
			return nil, err
		}
		lastErr = r.waitReady(ctx, useAuth)
		if lastErr == nil {
			logf("[registry] ready on %s in %s", r.addr, time.Since(start).Round(time.Millisecond))
			return r, nil
		}
		_ = r.p.stop(5 * time.Second)
		if addr != "" || !strings.Contains(tail(filepath.Join(dir, "registry.log"), 20), "address already in use") || ctx.Err() != nil {
			break
		}
	}
	err = fmt.Errorf("registry did not start: %w\n--- %s/registry.log (tail) ---\n%s",
		lastErr, dir, tail(filepath.Join(dir, "registry.log"), 30))
	if serr := r.Stop(); serr != nil {
		logf("[registry] cleanup after failed start: %v", serr)
	}
	return nil, err
}

func registryConfig(dir, addr string, auth TokenAuth, useAuth bool) string {
	q := strconv.Quote // JSON-style double-quoted strings are valid YAML
	secret := make([]byte, 16)
	_, _ = rand.Read(secret)
	var b strings.Builder
	fmt.Fprintf(&b, `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: %s
  headers:
    X-Content-Type-Options: [nosniff]
`, q(filepath.Join(dir, "data")), q(addr), q(hex.EncodeToString(secret)))
	if useAuth {
		fmt.Fprintf(&b, `auth:
  token:
    realm: %s
    service: %s
    issuer: %s
    rootcertbundle: %s
`, q(auth.Realm), q(auth.Service), q(auth.Issuer), q(filepath.Join(dir, "rootcert.pem")))
	}
	return b.String()
}

func (r *Registry) waitReady(ctx context.Context, useAuth bool) error {
	want := http.StatusOK
	if useAuth {
		want = http.StatusUnauthorized
	}
	c := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		if r.p.exited() {
			return fmt.Errorf("docker-registry exited: %v", r.p.err)
		}
		var d net.Dialer
		if conn, err := d.DialContext(ctx, "tcp", r.addr); err != nil {
			last = err
		} else {
			conn.Close()
			resp, err := c.Get(r.URL() + "/v2/")
			if err != nil {
				last = err
			} else {
				resp.Body.Close()
				if resp.StatusCode == want {
					return nil
				}
				last = fmt.Errorf("GET /v2/: %s, want %d", resp.Status, want)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Addr is "127.0.0.1:PORT" (also the registry host in image names).
func (r *Registry) Addr() string { return r.addr }

// URL is "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.addr }

// PID is the registry's process id.
func (r *Registry) PID() int { return r.p.cmd.Process.Pid }

// LogTail returns the last n lines of registry.log (until Stop removes it).
func (r *Registry) LogTail(n int) string { return tail(filepath.Join(r.Dir, "registry.log"), n) }

// Stop terminates the registry and removes its dir. Safe to call twice.
func (r *Registry) Stop() error {
	r.stopOnce.Do(func() {
		var errs []error
		if r.p != nil {
			if err := r.p.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if err := os.RemoveAll(r.Dir); err != nil {
			errs = append(errs, err)
		}
		r.stopErr = errors.Join(errs...)
	})
	return r.stopErr
}

package stack

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// cacheDir is where scripts/deps.sh puts the busybox binaries.
func cacheDir(t *testing.T) string {
	if c := os.Getenv("OBB_CACHE"); c != "" {
		return c
	}
	repo, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(repo, ".cache")
}

func runDeps(t *testing.T) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("bash", "../../scripts/deps.sh")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scripts/deps.sh: %v\n%s", err, out)
	}
	t.Logf("deps.sh (%s): %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(string(out)))
}

// selfSignedCert returns a PEM certificate like open-balena's token-auth cert.
func selfSignedCert(t *testing.T, cn string) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func buildContext(t *testing.T, dockerfile string) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "Dockerfile", Mode: 0o644, Size: int64(len(dockerfile)), ModTime: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write([]byte(dockerfile)); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestStack(t *testing.T) {
	runDeps(t)
	cache := cacheDir(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	root, err := os.MkdirTemp("/tmp", "obb-t-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(root) })

	// Two daemons at once, started concurrently.
	arches := []string{"amd64", "arm64"}
	daemons := make(map[string]*Dockerd)
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(arches))
	for _, arch := range arches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			d, err := StartDockerd(ctx, filepath.Join(root, arch), arch, t.Logf)
			if err != nil {
				errs <- err
				return
			}
			t.Logf("[%s] StartDockerd took %s", arch, time.Since(start).Round(time.Millisecond))
			mu.Lock()
			daemons[arch] = d
			mu.Unlock()
			t.Cleanup(func() { d.Stop() })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}

	reg, err := StartRegistry(ctx, filepath.Join(root, "registry"), TokenAuth{
		Realm:       "https://api.example.test/auth/v1/token",
		Service:     "registry2.example.test",
		Issuer:      "api.example.test",
		RootCertPEM: selfSignedCert(t, "api.example.test"),
	}, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { reg.Stop() })

	// Busybox for each arch, then a build that runs a command.
	want := map[string]string{"amd64": "x86_64", "arm64": "aarch64"}
	for _, arch := range arches {
		d := daemons[arch]
		start := time.Now()
		if err := LoadBusybox(ctx, d.Host(), arch, filepath.Join(cache, "busybox-"+arch), "busybox", "localhost/busybox-"+arch); err != nil {
			t.Fatalf("[%s] %v", arch, err)
		}
		t.Logf("[%s] LoadBusybox took %s", arch, time.Since(start).Round(time.Millisecond))

		q := url.Values{"t": {"obb-stack-test:" + arch}, "rm": {"1"}, "forcerm": {"1"}}
		if arch == "arm64" {
			q.Set("platform", "linux/arm64")
		}
		start = time.Now()
		out, err := d.Engine().Stream(ctx, http.MethodPost, "/build?"+q.Encode(),
			bytes.NewReader(buildContext(t, "FROM busybox\nRUN uname -m > /arch\nRUN cat /arch\n")),
			http.Header{"Content-Type": {"application/x-tar"}}, nil)
		if err != nil {
			t.Fatalf("[%s] build: %v\n%s\n--- dockerd.log ---\n%s", arch, err, out, d.LogTail(20))
		}
		t.Logf("[%s] build took %s:\n%s", arch, time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
		found := false
		for _, line := range strings.Split(out, "\n") {
			if strings.TrimSpace(line) == want[arch] {
				found = true
			}
		}
		if !found {
			t.Errorf("[%s] build output has no line %q", arch, want[arch])
		}
		var img struct{ Architecture, Os string }
		if err := d.Engine().JSON(ctx, http.MethodGet, "/images/obb-stack-test:"+arch+"/json", nil, nil, &img); err != nil {
			t.Fatal(err)
		}
		if img.Architecture != arch || img.Os != "linux" {
			t.Errorf("[%s] built image is %s/%s", arch, img.Os, img.Architecture)
		}
	}

	// Registry: token auth challenge without a token.
	resp, err := http.Get(reg.URL() + "/v2/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	wwwAuth := resp.Header.Get("WWW-Authenticate")
	t.Logf("registry GET /v2/: %s, WWW-Authenticate: %s", resp.Status, wwwAuth)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("registry GET /v2/ without token: %s, want 401", resp.Status)
	}
	if !strings.HasPrefix(wwwAuth, "Bearer ") ||
		!strings.Contains(wwwAuth, `realm="https://api.example.test/auth/v1/token"`) ||
		!strings.Contains(wwwAuth, `service="registry2.example.test"`) {
		t.Errorf("WWW-Authenticate = %q", wwwAuth)
	}

	// Leave a container running on each daemon (with its containerd shim)
	// so that Stop has to deal with it.
	for _, arch := range arches {
		e := daemons[arch].Engine()
		var created struct{ ID string }
		body := `{"Image":"obb-stack-test:` + arch + `","Cmd":["sleep","300"]}`
		if err := e.JSON(ctx, http.MethodPost, "/containers/create", strings.NewReader(body),
			http.Header{"Content-Type": {"application/json"}}, &created); err != nil {
			t.Fatalf("[%s] %v", arch, err)
		}
		if err := e.JSON(ctx, http.MethodPost, "/containers/"+created.ID+"/start", nil, nil, nil); err != nil {
			t.Fatalf("[%s] %v", arch, err)
		}
		var shims []Proc
		for i := 0; i < 100 && len(shims) == 0; i++ {
			if shims, err = Processes(root + "/" + arch + "/run/containerd.sock"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if len(shims) == 0 {
			t.Fatalf("[%s] no containerd shim for the running container", arch)
		}
		t.Logf("[%s] running container %.12s, shim pid %d", arch, created.ID, shims[0].PID)
	}

	// Stop everything and check nothing is left.
	var pids []int
	var dirs []string
	for _, arch := range arches {
		d := daemons[arch]
		pids = append(pids, d.PIDs()...)
		dirs = append(dirs, d.Dirs()...)
		start := time.Now()
		if err := d.Stop(); err != nil {
			t.Errorf("[%s] Stop: %v", arch, err)
		}
		t.Logf("[%s] Stop took %s", arch, time.Since(start).Round(time.Millisecond))
	}
	pids = append(pids, reg.PID())
	dirs = append(dirs, reg.Dir)
	if err := reg.Stop(); err != nil {
		t.Errorf("registry Stop: %v", err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d still alive after Stop", pid)
		}
	}
	left, err := Processes(root + "/")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range left {
		t.Errorf("leftover process %d: %s", p.PID, p.Cmdline)
	}
	for _, d := range dirs {
		if _, err := os.Stat(d); !os.IsNotExist(err) {
			t.Errorf("dir %s still exists (stat: %v)", d, err)
		}
	}
	mounts, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(mounts), root+"/") {
		t.Errorf("mounts under %s remain:\n%s", root, grepLines(string(mounts), root+"/"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

// TestBusyboxImageTar checks the archive layout without a daemon.
func TestBusyboxImageTar(t *testing.T) {
	runDeps(t)
	b, err := BusyboxImageTar("arm64", filepath.Join(cacheDir(t), "busybox-arm64"), "busybox", "x/y", "127.0.0.1:5000/v2/abc")
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(bytes.NewReader(b))
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if err != nil {
			break
		}
		names[h.Name] = true
		if h.Name == "manifest.json" {
			var buf bytes.Buffer
			buf.ReadFrom(tr)
			for _, w := range []string{`"busybox:latest"`, `"x/y:latest"`, `"127.0.0.1:5000/v2/abc:latest"`} {
				if !strings.Contains(buf.String(), w) {
					t.Errorf("manifest.json %s lacks %s", buf.String(), w)
				}
			}
		}
	}
	if !names["manifest.json"] || len(names) != 5 {
		t.Errorf("archive entries: %v", names)
	}
	if _, err := BusyboxImageTar("amd64", filepath.Join(cacheDir(t), "busybox-arm64")); err == nil {
		t.Error("an arm64 binary was accepted as amd64")
	}
}

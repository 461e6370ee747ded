package buildkit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/plugins/buildkit/driver"
	"github.com/open-balena-builder/builder/plugins/sdk/sdktest"
	pluginv1 "github.com/open-balena-builder/builder/proto/builder/plugin/v1"
	"github.com/open-balena-builder/builder/tests/pluginstack"
	"github.com/open-balena-builder/builder/tests/stack"
)

// cacheDockerfile is a multi-step project: each RUN takes a while (a
// shell loop) and leaves a few MB, as compiling dependencies would.
func cacheDockerfile(base string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "FROM %s\nCOPY app.txt /app/\n", base)
	for i := 1; i <= 4; i++ {
		fmt.Fprintf(&b, "RUN i=0; while [ $i -lt 60000 ]; do i=$((i+1)); done; dd if=/dev/urandom of=/app/step%d bs=1M count=4 2>/dev/null; s=step; echo \"$s-%d-ran\"\n", i, i)
	}
	return b.String()
}

// cacheBuild builds the cache project on bk, with the fleet's registry
// cache when cacheRepo is set, and returns the logs and the time it took.
func (s *bkStack) cacheBuild(t testing.TB, bk *stack.Buildkitd, cacheRepo string) (*sdktest.LogRecorder, time.Duration) {
	t.Helper()
	repo := "v2/" + pluginstack.RandomHex(t, 16)
	spec := &pluginv1.BuildSpec{
		JobId:      fmt.Sprintf("cache-%d", time.Now().UnixNano()),
		Host:       &pluginv1.HostConfig{Name: "bk", Endpoint: bk.Host(), Buildkit: true},
		Platform:   "linux/amd64",
		Dockerfile: "Dockerfile",
		ImageRef:   s.RegistryAddr + "/" + repo,
	}
	repos := []string{repo}
	if cacheRepo != "" {
		spec.CacheRef = s.RegistryAddr + "/" + cacheRepo + ":cache"
		repos = append(repos, cacheRepo)
	}
	spec.RegistryToken = s.Token(t, repos...)
	files := map[string]string{"Dockerfile": cacheDockerfile(s.Base), "app.txt": "the app\n"}
	rec := &sdktest.LogRecorder{}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	t0 := time.Now()
	res, err := driver.New(nil).Build(ctx, spec, bytes.NewReader(sdktest.ContextTar(t, files)), rec.Sink())
	took := time.Since(t0)
	if err != nil {
		t.Fatalf("build: %v\nlogs:\n%s", err, rec)
	}
	if res.GetDigest() == "" {
		t.Fatalf("no digest")
	}
	return rec, took
}

// fleetCache is a fresh fleet's service's cache repository.
func fleetCache(t testing.TB) string {
	sum := sha256.Sum256([]byte("obb-cache/admin/fleet-" + pluginstack.RandomHex(t, 4) + "/main"))
	return "v2/" + hex.EncodeToString(sum[:])
}

// TestRegistryCache builds a project on one buildkitd with the fleet's
// registry cache, then on a second that never built it: there every step
// comes from the cache; without it, on a third, every step runs again.
func TestRegistryCache(t *testing.T) {
	s := startStack(t)
	cache := fleetCache(t)
	if rec, _ := s.cacheBuild(t, s.Buildkitd, cache); !strings.Contains(rec.String(), "step-4-ran") {
		t.Fatalf("the first build ran no step; logs:\n%s", rec)
	}
	rec, _ := s.cacheBuild(t, s.startBuildkitd(t, "buildkitd-2"), cache)
	if strings.Contains(rec.String(), "step-1-ran") || strings.Contains(rec.String(), "step-4-ran") || !strings.Contains(rec.String(), "CACHED") {
		t.Errorf("the fresh buildkitd ran steps although the fleet's cache has them; logs:\n%s", rec)
	}
	rec, _ = s.cacheBuild(t, s.startBuildkitd(t, "buildkitd-3"), "")
	if !strings.Contains(rec.String(), "step-4-ran") {
		t.Errorf("without the cache a fresh buildkitd ran no step; logs:\n%s", rec)
	}
}

// BenchmarkRegistryCache re-pushes an unchanged multi-step project on a
// fresh buildkitd (one that never built it), with and without the fleet's
// registry cache (imported from the registry), side by side.
func BenchmarkRegistryCache(b *testing.B) {
	s := startStack(b)
	cache := fleetCache(b)
	s.cacheBuild(b, s.Buildkitd, cache) // fills the cache
	var with, without time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		fresh1 := s.startBuildkitd(b, fmt.Sprintf("bench-with-%d", i))
		fresh2 := s.startBuildkitd(b, fmt.Sprintf("bench-without-%d", i))
		b.StartTimer()
		_, d1 := s.cacheBuild(b, fresh1, cache)
		_, d2 := s.cacheBuild(b, fresh2, "")
		with += d1
		without += d2
		b.StopTimer()
		_ = fresh1.Stop()
		_ = fresh2.Stop()
		b.StartTimer()
	}
	n := float64(b.N)
	b.ReportMetric(float64(with.Milliseconds())/n, "ms/push-with-cache")
	b.ReportMetric(float64(without.Milliseconds())/n, "ms/push-without-cache")
	b.ReportMetric(float64(without)/float64(with), "speedup")
	b.ReportMetric(0, "ns/op")
}

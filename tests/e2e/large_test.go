package e2e

import (
	"compress/gzip"
	"context"
	"crypto/rand"
	"io"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/open-balena-builder/builder/tests/harness"
)

const (
	largeFiles    = 4
	largeFileSize = 50 << 20 // 200 MiB in all, incompressible
	rssLimit      = 100 << 20
)

// largeProject writes 200 MiB of random files and a Dockerfile that does
// not copy them (the context still carries them to the host).
func largeProject(t testing.TB) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte("FROM busybox\nRUN echo big-context\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < largeFiles; i++ {
		f, err := os.Create(filepath.Join(dir, "blob"+itoa(int64(i))+".bin"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.CopyN(f, rand.Reader, largeFileSize); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return dir
}

func TestCLILargeUploadKeepsTheBuilderSmall(t *testing.T) {
	f := newFixture(t, "genericx86-64-ext")
	dir := largeProject(t)
	start := time.Now()
	res := balenaPush(t, cli(t, f), f, dir)
	took := time.Since(start)
	if out := plain(res.Stdout); res.Code != 0 || !strings.Contains(out, "big-context") {
		t.Fatalf("exit %d\n%s\n%s", res.Code, out, res.Stderr)
	}
	peak, err := env.BuilderPeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("200 MiB push through balena-cli took %s; builder peak RSS %.1f MiB", took.Round(time.Millisecond), float64(peak)/(1<<20))
	if peak >= rssLimit {
		t.Errorf("builder peak RSS %.1f MiB, want under %d MiB: the upload is held in memory somewhere", float64(peak)/(1<<20), rssLimit>>20)
	}
}

// BenchmarkUpload sends a 200 MiB incompressible project (gzipped once,
// beforehand, so the client's gzip is not measured) and reports the upload
// throughput up to the first response byte (the builder has then stored
// the upload and created the release) and the builder's peak RSS.
func BenchmarkUpload(b *testing.B) {
	f := newFixture(b, "genericx86-64-ext")
	gz := filepath.Join(b.TempDir(), "upload.tar.gz")
	out, err := os.Create(gz)
	if err != nil {
		b.Fatal(err)
	}
	zw, _ := gzip.NewWriterLevel(out, gzip.BestSpeed)
	zr, _ := gzip.NewReader(harness.TarGz(largeProject(b)))
	if _, err := io.Copy(zw, zr); err != nil {
		b.Fatal(err)
	}
	zw.Close()
	out.Close()
	info, _ := os.Stat(gz)
	b.SetBytes(info.Size())
	b.ResetTimer()
	var total time.Duration
	for i := 0; i < b.N; i++ {
		body, err := os.Open(gz)
		if err != nil {
			b.Fatal(err)
		}
		var wrote, first time.Time
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			WroteHeaders:         func() { wrote = time.Now() },
			GotFirstResponseByte: func() { first = time.Now() },
		})
		res, err := harness.PushBody(ctx, env.BuilderURL, body, harness.PushOptions{Slug: f.fleet.Slug, Token: f.token})
		body.Close()
		if err != nil || res.IsError {
			b.Fatalf("push: %v", err)
		}
		total += first.Sub(wrote)
	}
	b.StopTimer()
	peak, _ := env.BuilderPeakRSS()
	b.ReportMetric(float64(info.Size()*int64(b.N))/(1<<20)/total.Seconds(), "upload-MiB/s")
	b.ReportMetric(float64(peak)/(1<<20), "peak-rss-MiB")
}

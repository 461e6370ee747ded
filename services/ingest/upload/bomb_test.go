package upload

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"strings"
	"testing"
)

// zerosFile writes one file of size bytes of zeros: about size/1000
// bytes once gzipped.
func zerosFile(size int64) func(tw *tar.Writer, _ io.Writer) error {
	return func(tw *tar.Writer, _ io.Writer) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: size, ModTime: mtime}); err != nil {
			return err
		}
		_, err := io.CopyN(tw, zeros{}, size)
		return err
	}
}

// zerosFiles writes files of 1 MiB of zeros, size bytes in all: no header
// claims more than the size limit, so only the expansion ratio stops it.
func zerosFiles(size int64) func(tw *tar.Writer, _ io.Writer) error {
	return func(tw *tar.Writer, _ io.Writer) error {
		for i := range size >> 20 {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("zeros/%05d", i), Mode: 0o644, Size: 1 << 20, ModTime: mtime}); err != nil {
				return err
			}
			if _, err := io.CopyN(tw, zeros{}, 1<<20); err != nil {
				return err
			}
		}
		return nil
	}
}

func TestExpansionRatio(t *testing.T) {
	noisy := func(n int) string { // text that compresses about 4 times
		r := rand.New(rand.NewPCG(1, 2))
		var sb strings.Builder
		for sb.Len() < n {
			sb.WriteString("func handler" + string(rune('a'+r.IntN(26))) + "() { return " + string(rune('0'+r.IntN(10))) + " }\n")
		}
		return sb.String()
	}
	tests := []struct {
		name    string
		upload  func() io.Reader
		lim     Limits
		wantErr string
	}{
		{"a 4 GiB bomb of zeros stops at the grace bytes", func() io.Reader { r, _ := bomb(zerosFiles(4 << 30)); return r }, Limits{}, "expands more than 200 times"},
		{"a 3 GiB file of zeros stops at the grace bytes", func() io.Reader { r, _ := bomb(zerosFile(3 << 30)); return r }, Limits{}, "expands more than 200 times"},
		{"a lower ratio, a smaller grace", func() io.Reader { r, _ := bomb(zerosFile(64 << 20)); return r }, Limits{MaxExpansionRatio: 10, RatioGraceBytes: 1 << 20}, "expands more than 10 times"},
		{"source code passes", func() io.Reader { return strings.NewReader(string(tgz(t, file("main.go", noisy(20<<20))))) }, Limits{}, ""},
		{"a plain tar of zeros passes (ratio 1)", func() io.Reader {
			return strings.NewReader(string(tarball(t, file("zeros", strings.Repeat("\x00", 20<<20)))))
		}, Limits{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, dir := target(t)
			src := tt.upload()
			if c, ok := src.(*io.PipeReader); ok {
				defer c.Close()
			}
			st, err := Extract(context.Background(), src, dir, tt.lim)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkContained(t, base, dir)
				return
			}
			var ue *Error
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, tt.wantErr) || !strings.Contains(ue.Msg, "OBB_MAX_EXPANSION_RATIO") {
				t.Fatalf("err = %v, want an *Error saying %q", err, tt.wantErr)
			}
			grace := tt.lim.withDefaults().RatioGraceBytes
			if st.UncompressedBytes > grace+(1<<20) {
				t.Errorf("read %d bytes of tar before refusing, want at most the grace %d and a chunk", st.UncompressedBytes, grace)
			}
			checkEmptyDir(t, dir)
		})
	}
}

// BenchmarkBomb (go test -run '^$' -bench Bomb ./services/ingest/upload) reports what a 4 GiB bomb of zeros costs before it is
// refused: tar bytes unpacked (and written), compressed bytes read, and the
// heap in use at the end.
func BenchmarkBomb(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		r, stop := bomb(zerosFiles(4 << 30))
		src := &countingReader{r: r}
		runtime.GC()
		var before runtime.MemStats
		runtime.ReadMemStats(&before)
		b.StartTimer()
		st, err := Extract(context.Background(), src, dir, Limits{})
		b.StopTimer()
		var after runtime.MemStats
		runtime.ReadMemStats(&after)
		if err == nil {
			b.Fatal("the bomb was accepted")
		}
		stop()
		b.ReportMetric(float64(st.UncompressedBytes)/(1<<20), "MiB-unpacked")
		b.ReportMetric(float64(src.n)/(1<<10), "KiB-read")
		b.ReportMetric(float64(after.HeapInuse)/(1<<20), "MiB-heap")
		b.StartTimer()
	}
}

// countingReader counts what was read from the wire.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

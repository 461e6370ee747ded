package upload

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"regexp"
	"runtime"
	"runtime/metrics"
	"strings"
	"sync/atomic"
	"testing"
	"time"
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

// sourceLike is n bytes of code-like text drawn from a vocabulary of 64
// identifiers: gzip -6 compresses it about 5 times, as real source code.
func sourceLike(n int) string {
	r := rand.New(rand.NewPCG(1, 2))
	vocab := make([]string, 64)
	for i := range vocab {
		b := make([]byte, 3+r.IntN(8))
		for j := range b {
			b[j] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_"[r.IntN(53)]
		}
		vocab[i] = string(b)
	}
	id := func() string { return vocab[r.IntN(len(vocab))] }
	var sb strings.Builder
	for sb.Len() < n {
		switch r.IntN(4) {
		case 0:
			sb.WriteString("\tif " + id() + " := " + id() + "(" + id() + "); " + id() + " != nil {\n")
		case 1:
			sb.WriteString("\t" + id() + "." + id() + " = " + string(rune('0'+r.IntN(10))) + id() + "\n")
		case 2:
			sb.WriteString("func " + id() + "(" + id() + " int) error { return " + id() + " }\n")
		default:
			sb.WriteString("\t// " + id() + " " + id() + " the " + id() + " of " + id() + "\n")
		}
	}
	return sb.String()[:n]
}

func TestExpansionRatio(t *testing.T) {
	source := tgz(t, file("main.go", sourceLike(40<<20)))
	if ratio := float64(40<<20) / float64(len(source)); ratio < 4 || ratio > 7 {
		t.Fatalf("the source-like project compresses %.1f times, not about 5", ratio)
	}
	// What may reach the disk before a refusal: the grace, and what one
	// read of the copy buffer brought on top of it.
	const slack = bufSize
	tests := []struct {
		name    string
		upload  func(t *testing.T) io.Reader
		lim     Limits
		wantErr string
	}{
		{"a 4 GiB bomb of zeros stops after the grace", func(*testing.T) io.Reader { return bombReader(zerosFiles(4 << 30)) }, Limits{}, "expands more than 200 times"},
		{"a 3 GiB file of zeros stops after the grace", func(*testing.T) io.Reader { return bombReader(zerosFile(3 << 30)) }, Limits{}, "expands more than 200 times"},
		{"a lower ratio, a smaller grace", func(*testing.T) io.Reader { return bombReader(zerosFile(64 << 20)) }, Limits{MaxExpansionRatio: 10, RatioGraceBytes: 1 << 20}, "expands more than 10 times"},
		{"source code (ratio about 5) passes", func(*testing.T) io.Reader { return bytes.NewReader(source) }, Limits{}, ""},
		{"source code passes a ratio of 10", func(*testing.T) io.Reader { return bytes.NewReader(source) }, Limits{MaxExpansionRatio: 10, RatioGraceBytes: 1 << 20}, ""},
		{"a plain tar of zeros passes (ratio 1)", func(t *testing.T) io.Reader {
			return bytes.NewReader(tarball(t, file("zeros", strings.Repeat("\x00", 40<<20))))
		}, Limits{MaxExpansionRatio: 1, RatioGraceBytes: 1}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			base, dir := target(t)
			src := &countingReader{r: tt.upload(t)}
			if c, ok := src.r.(io.Closer); ok {
				defer c.Close()
			}
			st, err := Extract(context.Background(), src, dir, tt.lim)
			t.Logf("read %d bytes from the wire, %d bytes of tar; wrote %d bytes to disk before the answer", src.n, st.UncompressedBytes, st.WrittenBytes)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				checkContained(t, base, dir)
				return
			}
			var ue *Error
			if !errors.As(err, &ue) || !strings.Contains(ue.Msg, tt.wantErr) || !strings.Contains(ue.Msg, "OBB_MAX_EXPANSION_RATIO") || !strings.Contains(ue.Msg, "decompression bomb") {
				t.Fatalf("err = %v, want an *Error saying %q", err, tt.wantErr)
			}
			grace := tt.lim.withDefaults().RatioGraceBytes
			if st.WrittenBytes > grace+slack || st.UncompressedBytes > grace+slack+blockSize*4 {
				t.Errorf("wrote %d bytes (read %d of tar) before refusing, want at most the grace %d and one buffer %d", st.WrittenBytes, st.UncompressedBytes, grace, slack)
			}
			if st.WrittenBytes == 0 {
				t.Errorf("nothing written before the refusal: the test no longer measures the grace")
			}
			checkEmptyDir(t, dir)
		})
	}
}

func TestExpansionRatioMessage(t *testing.T) {
	_, dir := target(t)
	src := bombReader(zerosFile(64 << 20))
	defer src.Close()
	_, err := Extract(context.Background(), src, dir, Limits{RatioGraceBytes: 1 << 20})
	var ue *Error
	if !errors.As(err, &ue) {
		t.Fatalf("err = %v, want an *Error", err)
	}
	re := regexp.MustCompile(`^upload rejected: the project expands more than 200 times \([0-9.]+ MiB compressed to [0-9.]+ KiB so far\); ` +
		`a real project does not compress this well — is it a decompression bomb\? \(limit: OBB_MAX_EXPANSION_RATIO\)$`)
	if !re.MatchString(ue.Msg) {
		t.Errorf("message:\n %s\nwant it to match:\n %s", ue.Msg, re)
	}
}

// bombReader is bomb's reader, to be closed when done.
func bombReader(write func(tw *tar.Writer, raw io.Writer) error) io.ReadCloser {
	r, _ := bomb(write)
	return r.(*io.PipeReader)
}

// BenchmarkBomb (go test -run '^$' -bench Bomb -benchtime 3x ./upload)
// reports what a 4 GiB bomb of zeros (gzip -9: 4 MiB, generated as it is
// read) costs before it is refused: tar bytes unpacked, bytes written to
// disk, compressed bytes read, and the peak of the heap above where it
// started (the generator's gzip writer included).
func BenchmarkBomb(b *testing.B) {
	for b.Loop() {
		b.StopTimer()
		dir := b.TempDir()
		r, stop := bomb(zerosFiles(4 << 30))
		src := &countingReader{r: r}
		peak := watchHeap()
		b.StartTimer()
		st, err := Extract(context.Background(), src, dir, Limits{})
		b.StopTimer()
		heap := peak()
		var ue *Error
		if !errors.As(err, &ue) || !strings.Contains(ue.Msg, "OBB_MAX_EXPANSION_RATIO") {
			b.Fatalf("the bomb was not refused for its ratio: %v", err)
		}
		stop()
		b.ReportMetric(float64(st.UncompressedBytes)/(1<<20), "MiB-unpacked")
		b.ReportMetric(float64(st.WrittenBytes)/(1<<20), "MiB-written")
		b.ReportMetric(float64(src.n)/(1<<10), "KiB-read")
		b.ReportMetric(float64(heap)/(1<<20), "MiB-peak-heap")
		b.StartTimer()
	}
}

// watchHeap samples the heap's live objects every millisecond until the
// returned function is called, which returns the peak above the start.
func watchHeap() func() uint64 {
	runtime.GC()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	read := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	base := read()
	var peak atomic.Uint64
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			if v := read(); v > base && v-base > peak.Load() {
				peak.Store(v - base)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	return func() uint64 {
		close(stop)
		<-done
		return peak.Load()
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

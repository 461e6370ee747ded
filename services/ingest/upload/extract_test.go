package upload

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// cancelAfter cancels a context once n bytes have been read through it.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.n -= n; c.n <= 0 {
		c.cancel()
	}
	return n, err
}

func TestExtractCanceled(t *testing.T) {
	big := make([]byte, 4<<20) // does not compress
	rand.Read(big)
	upload := tgz(t, file("a", "1"), file("big", string(big)), file("c", "3"))
	t.Run("before", func(t *testing.T) {
		_, dir := target(t)
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := Extract(ctx, bytes.NewReader(upload), dir, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Extract = %v, want context.Canceled", err)
		}
		checkEmptyDir(t, dir)
	})
	t.Run("during a copy", func(t *testing.T) {
		_, dir := target(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		r := &cancelAfter{r: bytes.NewReader(upload), n: 256 << 10, cancel: cancel}
		st, err := Extract(ctx, r, dir, Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Extract = %v, want context.Canceled", err)
		}
		var ue *Error
		if errors.As(err, &ue) {
			t.Errorf("a canceled context is not a bad upload: %v", err)
		}
		if st.UncompressedBytes < 4096 || st.UncompressedBytes >= int64(len(big)) {
			t.Errorf("read %d bytes of tar: not canceled in the middle of the big entry", st.UncompressedBytes)
		}
		checkEmptyDir(t, dir)
	})
}

type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func TestExtractOurTrouble(t *testing.T) {
	upload := tgz(t, file("a", "1"), file("b", strings.Repeat("b", 100000)))
	t.Run("reading the body fails", func(t *testing.T) {
		_, dir := target(t)
		broken := errors.New("connection reset by peer")
		_, err := Extract(context.Background(), &failingReader{bytes.NewReader(upload[:len(upload)/2]), broken}, dir, Limits{})
		var ue *Error
		if !errors.Is(err, broken) || errors.As(err, &ue) {
			t.Fatalf("Extract = %v, want a plain error wrapping %v", err, broken)
		}
		checkEmptyDir(t, dir)
	})
	t.Run("body ends early", func(t *testing.T) {
		_, dir := target(t)
		_, err := Extract(context.Background(), &failingReader{bytes.NewReader(upload[:len(upload)/2]), io.ErrUnexpectedEOF}, dir, Limits{})
		var ue *Error
		if !errors.As(err, &ue) || !strings.HasPrefix(ue.Msg, "upload is truncated or corrupt: ") {
			t.Fatalf("Extract = %v, want the truncated *Error", err)
		}
		checkEmptyDir(t, dir)
	})
	t.Run("dir is not empty", func(t *testing.T) {
		_, dir := target(t)
		keep := filepath.Join(dir, "keep")
		os.WriteFile(keep, []byte("mine"), 0o644)
		_, err := Extract(context.Background(), bytes.NewReader(upload), dir, Limits{})
		var ue *Error
		if err == nil || errors.As(err, &ue) {
			t.Fatalf("Extract = %v, want a plain error", err)
		}
		if b, _ := os.ReadFile(keep); string(b) != "mine" {
			t.Errorf("Extract touched a file it did not write")
		}
	})
	t.Run("dir does not exist", func(t *testing.T) {
		_, err := Extract(context.Background(), bytes.NewReader(upload), filepath.Join(t.TempDir(), "nothing"), Limits{})
		var ue *Error
		if !errors.Is(err, os.ErrNotExist) || errors.As(err, &ue) {
			t.Fatalf("Extract = %v, want a plain not-exist error", err)
		}
	})
}

func TestExtractLenient(t *testing.T) {
	want := []string{"a file 0644 1", "b file 0644 2"}
	tests := []struct {
		name   string
		upload []byte
	}{
		// tar -r appends; cat a.tgz b.tgz concatenates gzip members.
		{"two gzip members", append(gz(t, tarball(t, file("a", "1"))[:1024]), gz(t, tarball(t, file("b", "2")))...)},
		{"trailing garbage after the gzip stream", append(tgz(t, file("a", "1"), file("b", "2")), "garbage that is not gzip"...)},
		{"ustar without the end-of-archive blocks", gz(t, tarball(t, file("a", "1"), file("b", "2"))[:2048])},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, dir := target(t)
			if _, err := Extract(context.Background(), bytes.NewReader(tt.upload), dir, Limits{}); err != nil {
				t.Fatal(err)
			}
			if got := listing(t, dir); !slices.Equal(got, want) {
				t.Errorf("extracted %q, want %q", got, want)
			}
		})
	}
}

// With GODEBUG=tarinsecurepath=0, archive/tar reports ErrInsecurePath
// alongside the header; Extract must apply its own rules just the same.
func TestExtractTarInsecurePath(t *testing.T) {
	t.Setenv("GODEBUG", "tarinsecurepath=0")
	_, dir := target(t)
	_, err := Extract(context.Background(), bytes.NewReader(tgz(t, file("a/../b", "1"))), dir, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	_, dir = target(t)
	_, err = Extract(context.Background(), bytes.NewReader(tgz(t, file("../b", "1"))), dir, Limits{})
	if ue := (*Error)(nil); !errors.As(err, &ue) || ue.Msg != `upload rejected: entry "../b" leaves the project directory` {
		t.Fatalf("Extract = %v", err)
	}
}

func TestMessages(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1024: "1 KiB", 1536: "1.5 KiB", 8 << 30: "8 GiB", 2 << 30: "2 GiB", 5000: "4.9 KiB"} {
		if got := size(n); got != want {
			t.Errorf("size(%d) = %q, want %q", n, got, want)
		}
	}
	if got := quote(strings.Repeat("é", 150)); !strings.HasSuffix(got, "\"…") || !strings.HasPrefix(got, "\"é") {
		t.Errorf("quote cut badly: %s", got)
	}
}

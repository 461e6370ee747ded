package upload

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
)

func TestExtract(t *testing.T) {
	long := strings.Repeat("very-long-directory-name/", 8) + "and-a-file-name-past-the-ustar-limit.txt"
	good := []ent{ // as balena-cli sends it: files only, in walk order
		file("Dockerfile", "FROM busybox\nCOPY . /app\n"),
		fileMode("scripts/start.sh", "#!/bin/sh\necho hi\n", 0o755),
		file("src/app/main.go", "package main\n"),
		file(long, "deep"),
		file(".balena/balena.yml", "build-variables: {}\n"),
	}
	goodListing := []string{
		".balena dir 0755",
		".balena/balena.yml file 0644 build-variables: {}\n",
		"Dockerfile file 0644 FROM busybox\nCOPY . /app\n",
		"scripts dir 0755",
		"scripts/start.sh file 0755 #!/bin/sh\necho hi\n",
		"src dir 0755",
		"src/app dir 0755",
		"src/app/main.go file 0644 package main\n",
	}
	{
		p := ""
		for _, elem := range strings.Split(filepath.Dir(long), "/") {
			p = filepath.Join(p, elem)
			goodListing = append(goodListing, p+" dir 0755")
		}
		goodListing = append(goodListing, long+" file 0644 deep")
		slices.Sort(goodListing)
	}
	random := make([]byte, 1<<20)
	rand.Read(random)

	tests := []struct {
		name    string
		upload  []byte
		lim     Limits
		wantErr string // the *Error message, or a prefix of it ending in "..."
		want    []string
		check   func(t *testing.T, dir string, st Stats)
	}{
		{
			name:   "good project with nested dirs and PAX long names",
			upload: tgz(t, good...),
			want:   goodListing,
			check: func(t *testing.T, dir string, st Stats) {
				if st.Files != 5 {
					t.Errorf("Files = %d, want 5", st.Files)
				}
				if st.CompressedBytes == 0 || st.UncompressedBytes <= st.CompressedBytes {
					t.Errorf("stats = %+v", st)
				}
				fi, err := os.Stat(filepath.Join(dir, "Dockerfile"))
				if err != nil || !fi.ModTime().Equal(mtime) {
					t.Errorf("Dockerfile mtime = %v, %v; want %v", fi.ModTime(), err, mtime)
				}
			},
		},
		{
			name:   "plain uncompressed tar",
			upload: tarball(t, good...),
			want:   goodListing,
			check: func(t *testing.T, dir string, st Stats) {
				if st.CompressedBytes != st.UncompressedBytes {
					t.Errorf("stats = %+v, want equal byte counts", st)
				}
			},
		},
		{
			name: "explicit directories keep their mode and mtime",
			upload: tgz(t,
				ent{h: tar.Header{Typeflag: tar.TypeDir, Name: "./ro/", Mode: 0o555, ModTime: mtime}},
				fileMode("./ro/secret", "x", 0o000),
				fileMode("ro/suid", "x", 0o4755),
				dir("./"),
			),
			want: []string{"ro dir 0755", "ro/secret file 0400 x", "ro/suid file 0755 x"},
			check: func(t *testing.T, dir string, st Stats) {
				fi, err := os.Stat(filepath.Join(dir, "ro"))
				if err != nil || !fi.ModTime().Equal(mtime) {
					t.Errorf("ro mtime = %v, %v; want %v", fi.ModTime(), err, mtime)
				}
			},
		},
		{
			name:   "PAX global header ignored",
			upload: tgz(t, ent{h: tar.Header{Typeflag: tar.TypeXGlobalHeader, Name: "pax_global_header", PAXRecords: map[string]string{"comment": "abc"}}}, file("a", "1")),
			want:   []string{"a file 0644 1"},
		},
		{
			name:   "a/../b stays inside",
			upload: tgz(t, file("a/../b", "1")),
			want:   []string{"b file 0644 1"},
		},
		{
			name:   "names that start with two dots",
			upload: tgz(t, file("..ve", "1"), file("a/..b/...", "2"), symlink("..l", "..ve")),
			want:   []string{"..l link ..ve", "..ve file 0644 1", "a dir 0755", "a/..b dir 0755", "a/..b/... file 0644 2"},
		},
		{
			name:   "duplicate entries: the last wins",
			upload: tgz(t, file("a", "1"), file("a", "2"), symlink("b", "a"), file("b", "3"), file("c", "4"), symlink("c", "a"), dir("d"), file("d", "5")),
			want:   []string{"a file 0644 2", "b file 0644 3", "c link a", "d file 0644 5"},
		},
		{
			name:   "symlinks inside are kept",
			upload: tgz(t, file("src/lib.txt", "lib"), symlink("app/lib", "../src/lib.txt"), symlink("app/self", "."), symlink("top", "app/../src"), symlink("dangling", "nothing/here")),
			want:   []string{"app dir 0755", "app/lib link ../src/lib.txt", "app/self link .", "dangling link nothing/here", "src dir 0755", "src/lib.txt file 0644 lib", "top link app/../src"},
		},
		{
			name:   "hardlink to an earlier entry",
			upload: tgz(t, file("a/orig", "data"), hardlink("b/copy", "a/orig"), hardlink("a/orig", "a/orig")),
			want:   []string{"a dir 0755", "a/orig file 0644 data", "b dir 0755", "b/copy file 0644 data"},
			check: func(t *testing.T, dir string, st Stats) {
				a, _ := os.Stat(filepath.Join(dir, "a/orig"))
				b, _ := os.Stat(filepath.Join(dir, "b/copy"))
				if a == nil || b == nil || !os.SameFile(a, b) {
					t.Errorf("b/copy is not a hardlink of a/orig")
				}
			},
		},
		{
			name:   "a hardlink keeps the contents it had when its target is replaced",
			upload: tgz(t, file("a", "old"), hardlink("b", "a"), file("a", "new")),
			want:   []string{"a file 0644 new", "b file 0644 old"},
		},

		// Not a tar archive.
		{name: "empty body", upload: nil, wantErr: "upload is empty: no project files"},
		{name: "empty tar", upload: tgz(t), wantErr: "upload is empty: no project files"},
		{name: "only directories", upload: tgz(t, dir("a"), dir("a/b")), wantErr: "upload is empty: no project files"},
		{name: "not gzip, not tar", upload: []byte("hello"), wantErr: "upload is not a gzip-compressed tar archive"},
		{name: "gzip but not tar", upload: gz(t, []byte("hello")), wantErr: "upload is not a gzip-compressed tar archive"},
		{name: "gzip of random bytes", upload: gz(t, random[:4096]), wantErr: "upload is not a gzip-compressed tar archive"},
		{name: "JSON", upload: []byte(`{"hello": "world"}` + strings.Repeat(" ", 600)), wantErr: "upload is not a gzip-compressed tar archive"},
		{name: "bad gzip header", upload: []byte{0x1f, 0x8b, 0, 0, 0, 0, 0, 0, 0, 0}, wantErr: "upload is truncated or corrupt: invalid gzip header"},

		// Truncated or corrupt.
		{
			name:    "truncated gzip",
			upload:  func() []byte { b := tgz(t, file("a", string(random[:100000]))); return b[:len(b)/2] }(),
			wantErr: `upload is truncated or corrupt: the data ends in the middle of entry "a"`,
		},
		{
			name:    "truncated plain tar",
			upload:  tarball(t, file("Dockerfile", "FROM x\n"), file("a", string(random[:10000])))[:3000],
			wantErr: `upload is truncated or corrupt: the data ends in the middle of entry "a"`,
		},
		{
			name:    "gzip without its trailer",
			upload:  func() []byte { b := tgz(t, file("a", "1")); return b[:len(b)-8] }(),
			wantErr: "upload is truncated or corrupt: the data ends early...",
		},
		{
			name: "gzip checksum mismatch",
			upload: func() []byte {
				b := tgz(t, file("a", "1"))
				b[len(b)-8] ^= 0xff
				return b
			}(),
			wantErr: "upload is truncated or corrupt: the gzip checksum does not match...",
		},
		{
			name:    "garbage header after a good entry",
			upload:  append(tarball(t, file("a", "1"))[:1024], bytes.Repeat([]byte("x"), 1024)...),
			wantErr: `upload is truncated or corrupt: invalid tar header after entry "a"`,
		},

		// Paths.
		{name: "absolute path", upload: tgz(t, file("Dockerfile", "x"), file("/etc/passwd", "x")), wantErr: `upload rejected: entry "/etc/passwd" is an absolute path`},
		{name: "../ escape", upload: tgz(t, file("../etc/passwd", "x")), wantErr: `upload rejected: entry "../etc/passwd" leaves the project directory`},
		{name: "nested ../ escape", upload: tgz(t, file("a/b/../../../x", "x")), wantErr: `upload rejected: entry "a/b/../../../x" leaves the project directory`},
		{name: "bare ..", upload: tgz(t, dir("..")), wantErr: `upload rejected: entry ".." leaves the project directory`},
		{name: "NUL in a PAX path", upload: tgz(t, file("a", "1"), raw(paxHeader("path=a\x00b")), file("placeholder", "x")), wantErr: `upload is truncated or corrupt: invalid tar header after entry "a"`},
		{
			name:    "path too long",
			upload:  tgz(t, file(strings.Repeat("a/", 40)+"f", "x")),
			lim:     Limits{MaxPathLength: 64},
			wantErr: `upload rejected: entry "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/f" has a path longer than 64 bytes`,
		},
		{name: "path element too long", upload: tgz(t, file(strings.Repeat("x", 256), "x")), wantErr: "upload rejected: entry \"" + strings.Repeat("x", 200) + "\"… has a path element longer than 255 bytes"},
		{name: "parent is a file", upload: tgz(t, file("a", "1"), file("a/b", "2")), wantErr: `upload rejected: entry "a/b" is inside "a", which is a file`},
		{name: "non-empty directory replaced by a file", upload: tgz(t, file("a/b", "1"), file("a", "2")), wantErr: `upload rejected: entry "a" would replace the directory "a", which already holds entries`},

		// Symlinks.
		{name: "symlink with an absolute target", upload: tgz(t, file("a", "1"), symlink("etc", "/etc")), wantErr: `upload rejected: symlink "etc" points to the absolute path "/etc": only relative links inside the project are allowed`},
		{name: "symlink with a ../../ target", upload: tgz(t, file("a", "1"), symlink("sub/up", "../../etc")), wantErr: `upload rejected: symlink "sub/up" -> "../../etc" leads outside the project directory`},
		{name: "symlink to the parent", upload: tgz(t, file("a", "1"), symlink("up", "..")), wantErr: `upload rejected: symlink "up" -> ".." leads outside the project directory`},
		{
			name: "symlinks escaping through other symlinks",
			// Each target stays inside on paper; "here/.." is the parent of dir.
			upload:  tgz(t, file("a", "1"), symlink("here", "."), symlink("up", "here/.."), symlink("passwd", "up/etc/passwd")),
			wantErr: `upload rejected: symlink "up" -> "here/.." leads outside the project directory (through other symlinks)`,
		},
		{
			name: "symlink escaping through a symlink made later",
			// "x/.." is dir while x is a directory; x then becomes a symlink.
			upload:  tgz(t, file("a", "1"), dir("x"), symlink("up", "x/.."), symlink("y", "."), dir("y2"), symlink("x", "y2/../y")),
			wantErr: `upload rejected: symlink "up" -> "x/.." leads outside the project directory (through other symlinks)`,
		},
		{
			name:    "symlink retargeted later to escape",
			upload:  tgz(t, file("a", "1"), symlink("up", "l/.."), symlink("l", "d"), symlink("l", ".")),
			wantErr: `upload rejected: symlink "up" -> "l/.." leads outside the project directory (through other symlinks)`,
		},
		{name: "symlink loop", upload: tgz(t, file("a", "1"), symlink("l1", "l2/.."), symlink("l2", "l1/x")), wantErr: `upload rejected: symlink "l1" -> "l2/.." goes through too many levels of symlinks`},
		{name: "file written through a symlink inside", upload: tgz(t, dir("real"), symlink("l", "real"), file("l/x", "1")), wantErr: `upload rejected: entry "l/x" is inside "l", which is a symlink: entries may not be written through symlinks`},
		{name: "file written through a symlink to outside", upload: tgz(t, symlink("l", "./../.."), file("l/x", "1")), wantErr: `upload rejected: symlink "l" -> "./../.." leads outside the project directory`},
		{name: "directory written through a symlink", upload: tgz(t, dir("real"), symlink("l", "real"), dir("l/sub")), wantErr: `upload rejected: entry "l/sub" is inside "l", which is a symlink: entries may not be written through symlinks`},
		{name: "hardlink written through a symlink", upload: tgz(t, file("a", "1"), dir("real"), symlink("l", "real"), hardlink("l/x", "a")), wantErr: `upload rejected: entry "l/x" is inside "l", which is a symlink: entries may not be written through symlinks`},

		// Hardlinks.
		{name: "hardlink to a missing file", upload: tgz(t, file("a", "1"), hardlink("b", "nothing")), wantErr: `upload rejected: hardlink "b" points to "nothing", which is not a file earlier in the upload`},
		{name: "hardlink to a later file", upload: tgz(t, hardlink("b", "a"), file("a", "1")), wantErr: `upload rejected: hardlink "b" points to "a", which is not a file earlier in the upload`},
		{name: "hardlink outside", upload: tgz(t, file("a", "1"), hardlink("b", "../../etc/passwd")), wantErr: `upload rejected: hardlink "b" points to "../../etc/passwd", which leaves the project directory`},
		{name: "hardlink to an absolute path", upload: tgz(t, file("a", "1"), hardlink("b", "/etc/passwd")), wantErr: `upload rejected: hardlink "b" points to "/etc/passwd", which is an absolute path`},
		{name: "hardlink to a directory", upload: tgz(t, file("d/a", "1"), hardlink("b", "d")), wantErr: `upload rejected: hardlink "b" points to "d", which is not a file earlier in the upload`},
		{name: "hardlink through a symlink", upload: tgz(t, file("d/a", "1"), symlink("l", "d"), hardlink("b", "l/a")), wantErr: `upload rejected: hardlink "b" points to "l/a", which is not a file earlier in the upload`},

		// Special files.
		{name: "character device", upload: tgz(t, file("a", "1"), special("dev/null", tar.TypeChar)), wantErr: `upload rejected: entry "dev/null" is a character device: only files, directories and links are allowed`},
		{name: "block device", upload: tgz(t, special("sda", tar.TypeBlock)), wantErr: `upload rejected: entry "sda" is a block device: only files, directories and links are allowed`},
		{name: "fifo", upload: tgz(t, special("pipe", tar.TypeFifo)), wantErr: `upload rejected: entry "pipe" is a named pipe (FIFO): only files, directories and links are allowed`},
		{name: "unknown type", upload: tgz(t, special("vol", 'V')), wantErr: `upload rejected: entry "vol" has the unsupported tar type 'V': only files, directories and links are allowed`},

		// Limits.
		{
			name:    "entry count",
			upload:  tgz(t, file("a", "1"), file("b", "2"), file("c", "3"), file("d", "4")),
			lim:     Limits{MaxEntries: 3},
			wantErr: "upload rejected: the project has more than 3 files, directories and links (the limit)",
		},
		{
			name:    "uncompressed size",
			upload:  tgz(t, file("a", strings.Repeat("a", 3000)), file("b", strings.Repeat("b", 3000))),
			lim:     Limits{MaxUncompressedBytes: 5000},
			wantErr: "upload rejected: the project is larger than the 4.9 KiB limit",
		},
		{
			name:   "sparse file",
			upload: tgz(t, raw(sparse("holes", 4096))),
			want:   []string{"holes file 0644 " + strings.Repeat("s", 64) + "..."},
		},
		{
			name:    "sparse file larger than the limit",
			upload:  tgz(t, file("a", "1"), raw(sparse("huge", 1<<40))),
			wantErr: "upload rejected: the project is larger than the 4 GiB limit",
		},
		{
			name:    "sparse files together larger than the limit",
			upload:  tgz(t, raw(sparse("one", 600<<10)), raw(sparse("two", 600<<10))),
			lim:     Limits{MaxUncompressedBytes: 1 << 20},
			wantErr: "upload rejected: the project is larger than the 1 MiB limit",
		},
		{
			name:    "compressed size",
			upload:  tgz(t, file("random", string(random))),
			lim:     Limits{MaxCompressedBytes: 256 << 10},
			wantErr: "upload rejected: the compressed upload is larger than the 256 KiB limit",
			check: func(t *testing.T, dir string, st Stats) {
				if st.CompressedBytes > 256<<10+1 {
					t.Errorf("read %d compressed bytes, more than the limit", st.CompressedBytes)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, dir := target(t)
			st, err := Extract(context.Background(), bytes.NewReader(tt.upload), dir, tt.lim)
			checkContained(t, parent, dir)
			if tt.check != nil {
				defer tt.check(t, dir, st)
			}
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Extract: %v", err)
				}
				if got := listing(t, dir); !slices.Equal(got, tt.want) {
					t.Errorf("extracted:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
				}
				return
			}
			var ue *Error
			if !errors.As(err, &ue) {
				t.Fatalf("Extract = %v (%T), want *Error %q", err, err, tt.wantErr)
			}
			if prefix, ok := strings.CutSuffix(tt.wantErr, "..."); ok && !strings.HasPrefix(ue.Msg, prefix) || !ok && ue.Msg != tt.wantErr {
				t.Errorf("Extract error:\n %s\nwant:\n %s", ue.Msg, tt.wantErr)
			}
			checkEmptyDir(t, dir)
		})
	}
}

// bomb streams a gzip-compressed tar made by write through a pipe, so the
// test holds none of it in memory; write may also write to raw, the stream
// under the tar writer. It returns the reader and a function that stops the
// writer and tells how many bytes of tar it had produced.
func bomb(write func(tw *tar.Writer, raw io.Writer) error) (io.Reader, func() int64) {
	pr, pw := io.Pipe()
	cw := &countingWriter{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		zw, _ := gzip.NewWriterLevel(pw, gzip.BestCompression) // the worst case: zeros 1030:1
		cw.w = zw
		tw := tar.NewWriter(cw)
		err := write(tw, cw)
		if err == nil {
			if err = tw.Close(); errors.Is(err, tar.ErrWriteAfterClose) {
				err = nil
			}
		}
		if err == nil {
			err = zw.Close()
		}
		pw.CloseWithError(err)
	}()
	return pr, func() int64 {
		pr.CloseWithError(errors.New("test is over"))
		<-done
		return cw.n
	}
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestGzipBomb(t *testing.T) {
	const total = 1 << 30 // of zeros: about 1 MiB compressed
	const limit = 16 << 20
	tests := []struct {
		name  string
		write func(tw *tar.Writer, raw io.Writer) error
	}{
		{"one huge file", func(tw *tar.Writer, _ io.Writer) error {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "zeros", Mode: 0o644, Size: total}); err != nil {
				return err
			}
			_, err := io.CopyN(tw, zeros{}, total)
			return err
		}},
		{"many files of honest size", func(tw *tar.Writer, _ io.Writer) error {
			for i := range total >> 20 {
				if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: fmt.Sprintf("zeros/%04d", i), Mode: 0o644, Size: 1 << 20}); err != nil {
					return err
				}
				if _, err := io.CopyN(tw, zeros{}, 1<<20); err != nil {
					return err
				}
			}
			return nil
		}},
		{"zeros after the end of the archive", func(tw *tar.Writer, raw io.Writer) error {
			if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "Dockerfile", Mode: 0o644, Size: 2}); err != nil {
				return err
			}
			if _, err := io.WriteString(tw, "x\n"); err != nil {
				return err
			}
			if err := tw.Close(); err != nil {
				return err
			}
			_, err := io.CopyN(raw, zeros{}, total)
			return err
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			parent, dir := target(t)
			r, stop := bomb(tt.write)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			// The size limit alone (the expansion ratio has its own test).
			st, err := Extract(context.Background(), r, dir, Limits{MaxUncompressedBytes: limit, MaxExpansionRatio: 1 << 30})
			runtime.ReadMemStats(&after)
			produced := stop()
			var ue *Error
			if !errors.As(err, &ue) || ue.Msg != "upload rejected: the project is larger than the 16 MiB limit" {
				t.Fatalf("Extract = %v, want the size limit *Error", err)
			}
			if st.UncompressedBytes > limit+1 {
				t.Errorf("read %d bytes of tar, past the %d limit", st.UncompressedBytes, limit)
			}
			if produced > total/16 {
				t.Errorf("the bomb produced %d of its %d bytes before Extract gave up", produced, total)
			}
			// The writer side allocates too; what matters is that nothing
			// grows with the stream.
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8<<20 {
				t.Errorf("%d bytes allocated while extracting", alloc)
			}
			t.Logf("read %d compressed and %d uncompressed bytes; the bomb produced %d of %d", st.CompressedBytes, st.UncompressedBytes, produced, total)
			checkContained(t, parent, dir)
			checkEmptyDir(t, dir)
		})
	}
}

package upload

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// ent is one part of a test archive: a header and its body, or raw bytes
// written as they are (to build what archive/tar refuses to write).
type ent struct {
	h    tar.Header
	body string
	raw  []byte
}

var mtime = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// file, dir, symlink and hardlink make entries the way balena-cli does:
// ustar (PAX for long names), uid/gid 0, mode and mtime.
func file(name, body string) ent { return fileMode(name, body, 0o644) }

func fileMode(name, body string, mode int64) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body)), ModTime: mtime}, body: body}
}

func dir(name string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeDir, Name: name, Mode: 0o755, ModTime: mtime}}
}

func symlink(name, target string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeSymlink, Name: name, Linkname: target, Mode: 0o777, ModTime: mtime}}
}

func hardlink(name, target string) ent {
	return ent{h: tar.Header{Typeflag: tar.TypeLink, Name: name, Linkname: target, Mode: 0o644, ModTime: mtime}}
}

func special(name string, typ byte) ent {
	return ent{h: tar.Header{Typeflag: typ, Name: name, Mode: 0o600, Devmajor: 8, ModTime: mtime}}
}

func raw(b []byte) ent { return ent{raw: b} }

// tarball builds an uncompressed tar.
func tarball(tb testing.TB, ents ...ent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range ents {
		if e.raw != nil {
			if err := tw.Flush(); err != nil {
				tb.Fatal(err)
			}
			buf.Write(e.raw)
			continue
		}
		h := e.h
		if err := tw.WriteHeader(&h); err != nil {
			tb.Fatalf("%s: %v", h.Name, err)
		}
		if _, err := io.WriteString(tw, e.body); err != nil {
			tb.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

// gz compresses like balena-cli: gzip level 6.
func gz(tb testing.TB, b []byte) []byte {
	tb.Helper()
	var buf bytes.Buffer
	zw, err := gzip.NewWriterLevel(&buf, 6)
	if err != nil {
		tb.Fatal(err)
	}
	zw.Write(b)
	if err := zw.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}

func tgz(tb testing.TB, ents ...ent) []byte { return gz(tb, tarball(tb, ents...)) }

// paxHeader is a raw PAX extended header block holding the given records
// ("key=value"), for values archive/tar refuses to write.
func paxHeader(records ...string) []byte {
	var body strings.Builder
	for _, r := range records {
		n := len(r) + 3 // " ", "\n" and at least one digit
		for len(fmt.Sprint(n))+len(r)+2 != n {
			n++
		}
		fmt.Fprintf(&body, "%d %s\n", n, r)
	}
	return append(rawHeader("PaxHeaders/x", tar.TypeXHeader, int64(body.Len()), ""), pad([]byte(body.String()))...)
}

// sparse is a raw PAX (GNU 1.0) sparse file of realSize bytes, of which only
// the first 512 are stored: a way to claim more than the stream holds.
func sparse(name string, realSize int64) []byte {
	b := paxHeader("GNU.sparse.major=1", "GNU.sparse.minor=0", "GNU.sparse.name="+name, fmt.Sprintf("GNU.sparse.realsize=%d", realSize))
	b = append(b, rawHeader("GNUSparseFile.0/"+name, tar.TypeReg, 1024, "")...)
	b = append(b, pad([]byte("1\n0\n512\n"))...)
	return append(b, bytes.Repeat([]byte("s"), 512)...)
}

// rawHeader is a ustar header block with a valid checksum.
func rawHeader(name string, typ byte, size int64, link string) []byte {
	b := make([]byte, 512)
	copy(b[0:100], name)
	octal := func(field []byte, v int64) {
		s := fmt.Sprintf("%0*o", len(field)-1, v)
		copy(field, s)
	}
	octal(b[100:108], 0o644)
	octal(b[108:116], 0)
	octal(b[116:124], 0)
	octal(b[124:136], size)
	octal(b[136:148], mtime.Unix())
	b[156] = typ
	copy(b[157:257], link)
	copy(b[257:263], "ustar\x00")
	copy(b[263:265], "00")
	copy(b[148:156], "        ")
	var sum int64
	for _, c := range b {
		sum += int64(c)
	}
	copy(b[148:156], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

func pad(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// listing describes the tree under dir, one line per path:
// "path dir 0755", "path file 0644 <contents>", "path link <target>".
func listing(tb testing.TB, dir string) []string {
	tb.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == dir {
			return nil
		}
		rel, _ := filepath.Rel(dir, p)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			t, err := os.Readlink(p)
			if err != nil {
				return err
			}
			out = append(out, fmt.Sprintf("%s link %s", rel, t))
		case fi.IsDir():
			out = append(out, fmt.Sprintf("%s dir %04o", rel, fi.Mode().Perm()))
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			if len(b) > 64 {
				b = append(b[:64:64], "..."...)
			}
			out = append(out, fmt.Sprintf("%s file %04o %s", rel, fi.Mode().Perm(), b))
		default:
			out = append(out, fmt.Sprintf("%s other %v", rel, fi.Mode()))
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
	sort.Strings(out)
	return out
}

// target makes an empty directory to extract into, two levels down a fresh
// temporary directory, so that a write outside it shows up.
func target(tb testing.TB) (base, dir string) {
	tb.Helper()
	base = tb.TempDir()
	dir = filepath.Join(base, "outer", "project")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatal(err)
	}
	return base, dir
}

// checkContained fails unless base holds nothing but dir, its ancestors and
// what is inside dir, and every symlink under dir resolves inside it.
func checkContained(tb testing.TB, base, dir string) {
	tb.Helper()
	err := filepath.WalkDir(base, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		switch {
		case rel != ".." && !strings.HasPrefix(rel, "../"): // dir or inside
		case d.IsDir() && strings.HasPrefix(dir, p+string(filepath.Separator)): // an ancestor
			return nil
		default:
			tb.Errorf("%s was written outside %s", p, dir)
			return nil
		}
		if d.Type()&fs.ModeSymlink == 0 {
			return nil
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return nil // dangling or a loop: leads nowhere
		}
		if rel, err := filepath.Rel(dir, real); err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			tb.Errorf("symlink %s resolves to %s, outside %s", p, real, dir)
		}
		return nil
	})
	if err != nil {
		tb.Fatal(err)
	}
}

func checkEmptyDir(tb testing.TB, dir string) {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	if len(entries) != 0 {
		tb.Fatalf("%s is not empty after a failure: %v", dir, listing(tb, dir))
	}
}

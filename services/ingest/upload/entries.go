package upload

import (
	"archive/tar"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"
	"syscall"
)

const maxNameElem = 255 // NAME_MAX

// entry writes one archive entry.
func (x *extractor) entry(h *tar.Header) error {
	if h.Typeflag == tar.TypeXGlobalHeader {
		return nil
	}
	name, problem := x.cleanPath(h.Name)
	if problem != "" {
		return rejectf("entry %s %s", quote(h.Name), problem)
	}
	if name == "." {
		if h.Typeflag == tar.TypeDir {
			return nil // the project directory itself
		}
		return rejectf("entry %s is not a valid file name", quote(h.Name))
	}
	switch h.Typeflag {
	case tar.TypeReg, tar.TypeCont, tar.TypeGNUSparse:
		return x.file(name, h)
	case tar.TypeDir:
		return x.dir(name, h)
	case tar.TypeSymlink:
		return x.symlink(name, h)
	case tar.TypeLink:
		return x.hardlink(name, h)
	case tar.TypeChar:
		return rejectf("entry %s is a character device: only files, directories and links are allowed", quote(h.Name))
	case tar.TypeBlock:
		return rejectf("entry %s is a block device: only files, directories and links are allowed", quote(h.Name))
	case tar.TypeFifo:
		return rejectf("entry %s is a named pipe (FIFO): only files, directories and links are allowed", quote(h.Name))
	default:
		return rejectf("entry %s has the unsupported tar type %q: only files, directories and links are allowed", quote(h.Name), h.Typeflag)
	}
}

// cleanPath checks a path from the archive and returns it clean, relative to
// dir; or says what is wrong with it.
func (x *extractor) cleanPath(p string) (string, string) {
	switch {
	case p == "":
		return "", "has an empty name"
	case strings.IndexByte(p, 0) >= 0:
		return "", "has a NUL byte in its name"
	case len(p) > x.lim.MaxPathLength:
		return "", fmt.Sprintf("has a path longer than %d bytes", x.lim.MaxPathLength)
	case p[0] == '/':
		return "", "is an absolute path"
	}
	c := path.Clean(p)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", "leaves the project directory"
	}
	for rest := c; rest != ""; {
		elem, after, _ := strings.Cut(rest, "/")
		if len(elem) > maxNameElem {
			return "", fmt.Sprintf("has a path element longer than %d bytes", maxNameElem)
		}
		rest = after
	}
	return c, ""
}

func filePerm(h *tar.Header) fs.FileMode { return fs.FileMode(h.Mode)&0o777 | 0o400 }

func (x *extractor) file(name string, h *tar.Header) error {
	// Refuse a file that would cross the limit before reading any of it.
	if h.Size > x.lim.MaxUncompressedBytes-x.raw.n || h.Size > x.lim.MaxUncompressedBytes-x.logical {
		return x.tooBig()
	}
	x.logical += h.Size
	d, elem, err := x.parentOf(name)
	if err != nil {
		return err
	}
	if err := x.clear(d, elem, name); err != nil {
		return err
	}
	dr, err := x.dirRoot(d)
	if err != nil {
		return err
	}
	perm := filePerm(h)
	f, err := dr.OpenFile(elem, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	x.add(d, elem, kindFile)
	err = x.copyTo(f, name)
	if err == nil {
		err = f.Chmod(perm) // whatever the umask
	}
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("upload: %w", cerr)
	}
	if err != nil {
		return err
	}
	return x.chtimes(dr, elem, h)
}

func (x *extractor) chtimes(dr *os.Root, elem string, h *tar.Header) error {
	atime := h.AccessTime
	if atime.IsZero() {
		atime = h.ModTime
	}
	if err := dr.Chtimes(elem, atime, h.ModTime); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	return nil
}

func (x *extractor) dir(name string, h *tar.Header) error {
	d, elem, err := x.parentOf(name)
	if err != nil {
		return err
	}
	perm := fs.FileMode(h.Mode)&0o777 | 0o700
	n := d.children[elem]
	if n != nil && n.kind == kindDir {
		dr, err := x.dirRoot(d)
		if err != nil {
			return err
		}
		if err := dr.Chmod(elem, perm); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
	} else {
		if err := x.clear(d, elem, name); err != nil {
			return err
		}
		if n, err = x.mkdir(d, elem, perm); err != nil {
			return err
		}
	}
	// Times are set at the end: creating entries inside changes them.
	x.dirTimes = append(x.dirTimes, dirTime{n: n, name: name, atime: h.AccessTime, mtime: h.ModTime})
	if x.dirTimes[len(x.dirTimes)-1].atime.IsZero() {
		x.dirTimes[len(x.dirTimes)-1].atime = h.ModTime
	}
	return nil
}

func (x *extractor) symlink(name string, h *tar.Header) error {
	target := h.Linkname
	switch {
	case target == "":
		return rejectf("symlink %s has an empty target", quote(h.Name))
	case strings.IndexByte(target, 0) >= 0:
		return rejectf("symlink %s has a NUL byte in its target", quote(h.Name))
	case len(target) > x.lim.MaxPathLength:
		return rejectf("symlink %s has a target longer than %d bytes", quote(h.Name), x.lim.MaxPathLength)
	case target[0] == '/':
		return rejectf("symlink %s points to the absolute path %s: only relative links inside the project are allowed", quote(h.Name), quote(target))
	}
	if to := path.Join(path.Dir(name), target); to == ".." || strings.HasPrefix(to, "../") {
		return rejectf("symlink %s -> %s leads outside the project directory", quote(h.Name), quote(target))
	}
	d, elem, err := x.parentOf(name)
	if err != nil {
		return err
	}
	if err := x.clear(d, elem, name); err != nil {
		return err
	}
	dr, err := x.dirRoot(d)
	if err != nil {
		return err
	}
	if err := dr.Symlink(target, elem); err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	n := x.add(d, elem, kindSymlink)
	n.target = target
	// A target without ".." only descends, so it stays inside whenever the
	// symlinks it goes through do; the others are resolved at the end, when
	// every symlink they may go through is known.
	if target == ".." || strings.HasPrefix(target, "../") || strings.HasSuffix(target, "/..") || strings.Contains(target, "/../") {
		x.links = append(x.links, n)
	}
	return nil
}

func (x *extractor) checkLinks() error {
	for _, l := range x.links {
		if l.kind != kindSymlink { // replaced since
			continue
		}
		switch x.resolve(l) {
		case resolvedOutside:
			return rejectf("symlink %s -> %s leads outside the project directory (through other symlinks)", quote(l.name), quote(l.target))
		case resolvedTooDeep:
			return rejectf("symlink %s -> %s goes through too many levels of symlinks", quote(l.name), quote(l.target))
		}
	}
	return nil
}

func (x *extractor) hardlink(name string, h *tar.Header) error {
	target, problem := x.cleanPath(h.Linkname)
	if problem != "" {
		return rejectf("hardlink %s points to %s, which %s", quote(h.Name), quote(h.Linkname), problem)
	}
	t := x.lookup(target)
	if t == nil || t.kind != kindFile {
		return rejectf("hardlink %s points to %s, which is not a file earlier in the upload", quote(h.Name), quote(h.Linkname))
	}
	if target == name {
		return nil // a link to itself: the file is already there
	}
	d, elem, err := x.parentOf(name)
	if err != nil {
		return err
	}
	if err := x.clear(d, elem, name); err != nil {
		return err
	}
	err = x.root.Link(target, name)
	if errors.Is(err, syscall.EXDEV) || errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EMLINK) || errors.Is(err, syscall.ENOTSUP) {
		err = x.copyFile(target, name)
	}
	if ue := (*Error)(nil); errors.As(err, &ue) {
		return ue
	}
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	x.add(d, elem, kindFile)
	return nil
}

// copyFile copies from to to, for file systems without hardlinks.
func (x *extractor) copyFile(from, to string) error {
	src, err := x.root.OpenFile(from, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return err
	}
	defer src.Close()
	fi, err := src.Stat()
	if err != nil {
		return err
	}
	if fi.Size() > x.lim.MaxUncompressedBytes-x.logical {
		return x.tooBig()
	}
	x.logical += fi.Size()
	dst, err := x.root.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, fi.Mode().Perm())
	if err != nil {
		return err
	}
	n, err := dst.ReadFrom(src)
	x.written += n
	if err == nil {
		err = dst.Chmod(fi.Mode().Perm())
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = x.root.Chtimes(to, fi.ModTime(), fi.ModTime())
	}
	return err
}

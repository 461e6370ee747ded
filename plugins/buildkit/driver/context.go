package driver

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// extractTar unpacks the build context tar into dir (which buildkitd then
// reads through the session's file sync). Every operation goes through an
// os.Root, so no entry, link or path can reach outside dir; device files
// and the like are skipped (ingest refuses them already).
func extractTar(r io.Reader, dir string) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(r)
	type times struct {
		name string
		hdr  *tar.Header
	}
	var dirs []times
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		name := path.Clean(strings.TrimPrefix(hdr.Name, "./"))
		if name == "." || name == "/" {
			continue
		}
		if path.IsAbs(name) || name == ".." || strings.HasPrefix(name, "../") {
			return fmt.Errorf("entry %q leaves the context: %w", hdr.Name, sdk.ErrInvalidArgument)
		}
		if d := path.Dir(name); d != "." {
			if err := root.MkdirAll(d, 0o755); err != nil {
				return err
			}
		}
		mode := fs.FileMode(hdr.Mode).Perm() | fs.FileMode(hdr.Mode)&(fs.ModeSetuid|fs.ModeSetgid|fs.ModeSticky)
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o755); err != nil {
				return err
			}
			dirs = append(dirs, times{name, hdr})
			continue
		case tar.TypeReg:
			f, err := root.OpenFile(name, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
			if err != nil {
				return err
			}
			if _, err := io.Copy(f, tr); err != nil {
				_ = f.Close()
				return err
			}
			if err := f.Close(); err != nil {
				return err
			}
		case tar.TypeSymlink:
			_ = root.Remove(name)
			if err := root.Symlink(hdr.Linkname, name); err != nil {
				return err
			}
			_ = root.Lchown(name, hdr.Uid, hdr.Gid)
			continue
		case tar.TypeLink:
			target := path.Clean(strings.TrimPrefix(hdr.Linkname, "./"))
			_ = root.Remove(name)
			if err := root.Link(target, name); err != nil {
				return fmt.Errorf("hard link %q → %q: %w", hdr.Name, hdr.Linkname, err)
			}
			continue
		default:
			continue
		}
		if err := root.Chmod(name, mode); err != nil {
			return err
		}
		_ = root.Lchown(name, hdr.Uid, hdr.Gid)
		_ = root.Chtimes(name, hdr.ModTime, hdr.ModTime)
	}
	for i := len(dirs) - 1; i >= 0; i-- {
		d := dirs[i]
		_ = root.Chmod(d.name, fs.FileMode(d.hdr.Mode).Perm())
		_ = root.Lchown(d.name, d.hdr.Uid, d.hdr.Gid)
		_ = root.Chtimes(d.name, d.hdr.ModTime, d.hdr.ModTime)
	}
	return nil
}

// readContextFile reads the Dockerfile name from the unpacked context.
func readContextFile(dir, name string) ([]byte, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	f, err := root.Open(path.Clean(strings.TrimPrefix(name, "/")))
	if err != nil {
		return nil, fmt.Errorf("the Dockerfile %q is not in the build context: %w", name, sdk.ErrInvalidArgument)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxDockerfileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxDockerfileSize {
		return nil, fmt.Errorf("the Dockerfile %q is more than %d bytes: %w", name, maxDockerfileSize, sdk.ErrInvalidArgument)
	}
	return b, nil
}

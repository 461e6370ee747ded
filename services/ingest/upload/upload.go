// Package upload unpacks the build context a client uploads: the gzip-compressed
// tar balena-cli sends to /v3/build (reference/balena-cli-protocol.md §2).
//
// The archive comes from the network and is untrusted. [Extract] streams it to
// disk with flat memory, enforces [Limits] as the bytes arrive (a gzip bomb is
// refused once it expands more than MaxExpansionRatio times, after writing
// little more than RatioGraceBytes), and refuses anything that
// could write or point outside the target directory: absolute paths, ".."
// escapes, symlinks whose target leaves the directory, hardlinks to files not
// in the upload, device files, and entries written through a symlink.
package upload

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
)

// Defaults for the zero fields of [Limits]; they match platform/config.
const (
	DefaultMaxCompressedBytes   = 2 << 30
	DefaultMaxUncompressedBytes = 4 << 30
	DefaultMaxExpansionRatio    = 200
	DefaultRatioGraceBytes      = 16 << 20
	DefaultMaxEntries           = 200_000
	DefaultMaxPathLength        = 4096
)

// Limits bound one upload. A field that is zero or negative takes its default.
type Limits struct {
	MaxCompressedBytes   int64 // bytes read from the wire (gzip)
	MaxUncompressedBytes int64 // sum of file sizes + headers
	// MaxExpansionRatio bounds the tar bytes per compressed byte consumed
	// (OBB_MAX_EXPANSION_RATIO, default 200), checked continuously once
	// RatioGraceBytes (default 16 MiB) of tar came out: source code
	// compresses 3–10 times, a gzip of zeros 1000 times, so a bomb stops
	// after about RatioGraceBytes written. A plain tar (ratio 1) is never
	// affected.
	MaxExpansionRatio int
	RatioGraceBytes   int64
	MaxEntries        int
	MaxPathLength     int // default 4096
}

func (l Limits) withDefaults() Limits {
	if l.MaxCompressedBytes <= 0 {
		l.MaxCompressedBytes = DefaultMaxCompressedBytes
	}
	if l.MaxUncompressedBytes <= 0 {
		l.MaxUncompressedBytes = DefaultMaxUncompressedBytes
	}
	if l.MaxExpansionRatio <= 0 {
		l.MaxExpansionRatio = DefaultMaxExpansionRatio
	}
	if l.RatioGraceBytes <= 0 {
		l.RatioGraceBytes = DefaultRatioGraceBytes
	}
	if l.MaxEntries <= 0 {
		l.MaxEntries = DefaultMaxEntries
	}
	if l.MaxPathLength <= 0 {
		l.MaxPathLength = DefaultMaxPathLength
	}
	return l
}

// Stats describes what Extract read and wrote.
type Stats struct {
	// CompressedBytes were read from r (the wire).
	CompressedBytes int64
	// UncompressedBytes is the length of the tar stream read (headers,
	// contents and padding): the same as CompressedBytes for a plain tar.
	UncompressedBytes int64
	// WrittenBytes is the file contents written to disk (hardlinks that
	// had to be copied included), counted as they were written: after a
	// failure, what was on disk before Extract removed it.
	WrittenBytes int64
	// Files counts the files, symlinks and hardlinks under dir at the end.
	Files int
}

// Extract reads a gzip-compressed tar (or an uncompressed one: the gzip magic
// 1f 8b is sniffed) from r and writes it under dir, which must exist and be
// empty. Memory stays flat whatever the size of the upload.
//
// Regular files keep their permission bits (at least owner-readable) and
// mtime; directories keep theirs (at least owner-rwx); relative symlinks
// staying inside dir and hardlinks to files earlier in the upload are
// created; a duplicate entry replaces the earlier one. Everything else, and
// anything crossing lim, is refused with an *Error.
//
// On failure Extract removes everything it wrote under dir (dir itself stays)
// and returns an *Error for a bad upload, the context's error once ctx is
// done (checked between entries and during copies; a Read blocked in r is for
// the caller to end, by closing r), or a wrapped error for I/O trouble on our
// side, reading r included. Stats are returned in both cases.
func Extract(ctx context.Context, r io.Reader, dir string, lim Limits) (Stats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return Stats{}, fmt.Errorf("upload: %w", err)
	}
	defer root.Close()
	if err := checkEmpty(root, dir); err != nil {
		return Stats{}, err
	}
	x := newExtractor(ctx, root, lim.withDefaults())
	err = x.run(r)
	x.closeDirRoot()
	st := x.stats()
	if err != nil {
		if cerr := removeAll(root); cerr != nil {
			err = fmt.Errorf("%w (and removing the partial upload from %s failed: %v)", err, dir, cerr)
		}
		return st, err
	}
	return st, nil
}

func checkEmpty(root *os.Root, dir string) error {
	f, err := root.Open(".")
	if err != nil {
		return fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("upload: %w", err)
	}
	if len(names) > 0 {
		return fmt.Errorf("upload: target directory %s is not empty", dir)
	}
	return nil
}

// removeAll empties the directory of root.
func removeAll(root *os.Root) error {
	f, err := root.Open(".")
	if err != nil {
		return err
	}
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	var errs []error
	for _, name := range names {
		if err := root.RemoveAll(name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

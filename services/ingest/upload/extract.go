package upload

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/klauspost/compress/gzip"
)

const (
	blockSize = 512       // a tar header
	bufSize   = 256 << 10 // copy buffer: one per Extract call
)

type extractor struct {
	ctx  context.Context
	done <-chan struct{}
	lim  Limits
	root *os.Root

	wire       *limitReader // r, compressed
	compressed func() int64 // bytes of r gzip consumed (nil: a plain tar)
	raw        *limitReader // the tar stream
	tr         *tar.Reader
	buf        []byte

	entries int
	logical int64  // sum of entry sizes and headers, as written
	written int64  // file contents written to disk
	last    string // name of the last entry read, for messages

	tree
	links    []*node   // symlinks to check once the tree is complete
	dirTimes []dirTime // explicit directory entries
}

type dirTime struct {
	n            *node
	name         string
	atime, mtime time.Time
}

func newExtractor(ctx context.Context, root *os.Root, lim Limits) *extractor {
	x := &extractor{ctx: ctx, done: ctx.Done(), lim: lim, root: root}
	x.tree.init(root)
	return x
}

func (x *extractor) stats() Stats {
	var st Stats
	if x.wire != nil {
		st.CompressedBytes = x.wire.n
	}
	if x.raw != nil {
		st.UncompressedBytes = x.raw.n
	}
	st.Files = x.files
	st.WrittenBytes = x.written
	return st
}

func (x *extractor) canceled() error {
	select {
	case <-x.done:
		return fmt.Errorf("upload: %w", context.Cause(x.ctx))
	default:
		return nil
	}
}

func (x *extractor) run(r io.Reader) error {
	if err := x.canceled(); err != nil {
		return err
	}
	x.wire = &limitReader{r: r, max: x.lim.MaxCompressedBytes, errLimit: errTooBigC}
	br := bufio.NewReaderSize(x.wire, 64<<10)
	var src io.Reader = br
	magic, err := br.Peek(2)
	switch {
	case len(magic) == 0 && errors.Is(err, io.EOF):
		return errEmpty()
	case err != nil && !errors.Is(err, io.EOF):
		return x.readErr(err, false)
	case len(magic) == 2 && magic[0] == 0x1f && magic[1] == 0x8b:
		zr, err := gzip.NewReader(br)
		if err != nil {
			return x.readErr(err, false)
		}
		// What gzip consumed, not what was read ahead into br.
		x.compressed = func() int64 { return x.wire.n - int64(br.Buffered()) }
		src = &ratioReader{r: zr, compressed: x.compressed, grace: x.lim.RatioGraceBytes, ratio: int64(x.lim.MaxExpansionRatio)}
	}
	x.raw = &limitReader{r: src, max: x.lim.MaxUncompressedBytes, errLimit: errTooBigU}
	x.tr = tar.NewReader(x.raw)
	x.buf = make([]byte, bufSize)

	for {
		if err := x.canceled(); err != nil {
			return err
		}
		h, err := x.tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil && !errors.Is(err, tar.ErrInsecurePath) { // our own checks are stricter
			return x.readErr(err, false)
		}
		x.entries++
		if x.entries > x.lim.MaxEntries {
			return rejectf("the project has more than %d files, directories and links (the limit)", x.lim.MaxEntries)
		}
		x.last = h.Name
		x.logical += blockSize
		if err := x.entry(h); err != nil {
			return err
		}
	}
	// Read on to the end of the stream, so that gzip verifies its checksum.
	if err := x.drain(); err != nil {
		return err
	}
	if x.files == 0 {
		return errEmpty()
	}
	if err := x.checkLinks(); err != nil {
		return err
	}
	for _, d := range x.dirTimes {
		if d.n.kind != kindDir { // replaced since
			continue
		}
		if err := x.root.Chtimes(d.name, d.atime, d.mtime); err != nil {
			return fmt.Errorf("upload: %w", err)
		}
	}
	return nil
}

func (x *extractor) drain() error {
	for {
		if err := x.canceled(); err != nil {
			return err
		}
		_, err := x.raw.Read(x.buf)
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return nil
		case errors.Is(err, gzip.ErrHeader):
			return nil // trailing bytes that are not another gzip member
		default:
			return x.readErr(err, false)
		}
	}
}

// readErr turns an error met while reading the stream into the error Extract
// returns; inEntry tells whether it came while reading the contents of x.last.
func (x *extractor) readErr(err error, inEntry bool) error {
	switch {
	case errors.Is(err, errTooBigC):
		return rejectf("the compressed upload is larger than the %s limit", size(x.lim.MaxCompressedBytes))
	case errors.Is(err, errTooBigU):
		return x.tooBig()
	case errors.Is(err, errTooExpanded):
		return rejectf("the project expands more than %d times (%s compressed to %s so far); a real project does not compress this well — is it a decompression bomb? (limit: OBB_MAX_EXPANSION_RATIO)",
			x.lim.MaxExpansionRatio, size(x.raw.n), size(x.compressed()))
	}
	if e := x.wire.err; e != nil && !errors.Is(e, io.EOF) && !errors.Is(e, io.ErrUnexpectedEOF) {
		return fmt.Errorf("upload: reading the upload: %w", e)
	}
	if err := x.canceled(); err != nil {
		return err
	}
	if x.entries == 0 && !inEntry {
		// Nothing recognisable: not a tar at all, rather than a damaged one.
		if errors.Is(err, tar.ErrHeader) ||
			errors.Is(err, io.ErrUnexpectedEOF) && x.raw != nil && errors.Is(x.raw.err, io.EOF) {
			return errNotTar()
		}
	}
	return corrupt(err, x.last, inEntry)
}

func (x *extractor) tooBig() *Error {
	return rejectf("the project is larger than the %s limit", size(x.lim.MaxUncompressedBytes))
}

// copyTo writes the contents of the current entry to f.
func (x *extractor) copyTo(f *os.File, name string) error {
	for {
		if err := x.canceled(); err != nil {
			return err
		}
		// Fill the buffer before writing: the decompressor hands out at
		// most 32 KiB at a time, and fewer larger writes are cheaper.
		n := 0
		var rerr error
		for n < len(x.buf) && rerr == nil {
			var m int
			m, rerr = x.tr.Read(x.buf[n:])
			n += m
		}
		if n > 0 {
			m, err := f.Write(x.buf[:n])
			x.written += int64(m)
			if err != nil {
				return fmt.Errorf("upload: writing %s: %w", name, err)
			}
		}
		switch {
		case rerr == nil:
		case errors.Is(rerr, io.EOF):
			return nil
		default:
			return x.readErr(rerr, true)
		}
	}
}

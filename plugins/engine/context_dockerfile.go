package engine

import (
	"archive/tar"
	"bufio"
	"errors"
	"fmt"
	"io"
	"path"
	"sync"

	"github.com/open-balena-builder/builder/plugins/sdk"
)

// maxDockerfileSize bounds the Dockerfile read into memory for a rewrite.
const maxDockerfileSize = 16 << 20

// errContextClosed ends the rewriting once the build no longer reads.
var errContextClosed = errors.New("build context closed")

// dockerfileRewriter streams a build context tar through, with the
// Dockerfile entries (names) rewritten by fn on the way. Every other entry
// is copied as it is. Read it as the build's context; Close it once the
// build is over.
type dockerfileRewriter struct {
	pr *io.PipeReader

	mu  sync.Mutex
	err error // why the rewriting failed, if it did
}

// rewriteDockerfile starts streaming src through fn. names are the paths
// in the context the Dockerfile may have (cleaned, relative).
func rewriteDockerfile(src io.Reader, names []string, fn func([]byte) []byte) *dockerfileRewriter {
	pr, pw := io.Pipe()
	rw := &dockerfileRewriter{pr: pr}
	go func() {
		err := copyRewriting(pw, src, names, fn)
		if err != nil && !errors.Is(err, errContextClosed) {
			rw.mu.Lock()
			rw.err = err
			rw.mu.Unlock()
		}
		pw.CloseWithError(err) // nil: EOF
	}()
	return rw
}

func (rw *dockerfileRewriter) Read(p []byte) (int, error) { return rw.pr.Read(p) }

// Close stops the rewriting; the goroutine ends once src's current Read
// returns.
func (rw *dockerfileRewriter) Close() error {
	rw.pr.CloseWithError(errContextClosed)
	return nil
}

// Err returns why rewriting the context failed, or nil.
func (rw *dockerfileRewriter) Err() error {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.err
}

// copyRewriting copies the tar src to dst, rewriting the entries named
// names with fn.
func copyRewriting(dst io.Writer, src io.Reader, names []string, fn func([]byte) []byte) error {
	bw := bufio.NewWriterSize(dst, 64<<10)
	tr := tar.NewReader(src)
	tw := tar.NewWriter(bw)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read build context: %w", err)
		}
		if isDockerfileEntry(hdr.Name, names) {
			if err := rewriteEntry(tw, tr, hdr, fn); err != nil {
				return err
			}
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("build context entry %q: %w", hdr.Name, err)
		}
		if _, err := io.Copy(tw, tr); err != nil {
			return fmt.Errorf("build context entry %q: %w", hdr.Name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	// Whatever follows the end of the archive is not read by the daemon
	// either; read it so that the sender is not left waiting.
	_, err := io.Copy(io.Discard, src)
	return err
}

func rewriteEntry(tw *tar.Writer, tr *tar.Reader, hdr *tar.Header, fn func([]byte) []byte) error {
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeRegA: //nolint:staticcheck // old tars
	default:
		return fmt.Errorf("the Dockerfile %q is not a regular file in the build context (type %q); build secrets need to add mounts to it: %w",
			hdr.Name, string(hdr.Typeflag), sdk.ErrInvalidArgument)
	}
	if hdr.Size > maxDockerfileSize {
		return fmt.Errorf("the Dockerfile %q is %d bytes, more than %d: %w", hdr.Name, hdr.Size, maxDockerfileSize, sdk.ErrInvalidArgument)
	}
	body, err := io.ReadAll(tr)
	if err != nil {
		return fmt.Errorf("read the Dockerfile %q: %w", hdr.Name, err)
	}
	body = fn(body)
	h := *hdr
	h.Typeflag = tar.TypeReg
	h.Size = int64(len(body))
	if err := tw.WriteHeader(&h); err != nil {
		return fmt.Errorf("build context entry %q: %w", hdr.Name, err)
	}
	_, err = tw.Write(body)
	return err
}

// contextPath cleans a path in the build context: relative, no "./".
func contextPath(name string) string {
	p := path.Clean("/" + name)
	return p[1:]
}

func isDockerfileEntry(name string, names []string) bool {
	p := contextPath(name)
	for _, n := range names {
		if p == n {
			return true
		}
	}
	return false
}

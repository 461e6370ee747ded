package upload

import (
	"io"
)

// limitReader counts the bytes read through it and fails with errLimit as
// soon as more than max have been read: it never hands out a byte beyond
// max, and asks the source for at most one byte more than that.
type limitReader struct {
	r        io.Reader
	n, max   int64
	errLimit error
	// err is the last error the source returned, io.EOF included, so that
	// the caller can tell a clean end of the source from a truncation met in
	// a layer above.
	err error
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n > l.max {
		return 0, l.errLimit
	}
	if room := l.max - l.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := l.r.Read(p)
	if err != nil {
		l.err = err
	}
	l.n += int64(n)
	if l.n > l.max {
		n -= int(l.n - l.max)
		return n, l.errLimit
	}
	return n, err
}

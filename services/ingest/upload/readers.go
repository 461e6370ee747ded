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

// ratioReader fails with errTooExpanded once more than grace bytes came out
// of it and they are more than ratio times the bytes read from the wire
// (the compressed stream): a gzip bomb stops after about grace bytes.
type ratioReader struct {
	r     io.Reader
	wire  *limitReader
	n     int64
	grace int64
	ratio int64
}

func (q *ratioReader) Read(p []byte) (int, error) {
	n, err := q.r.Read(p)
	q.n += int64(n)
	if q.n > q.grace && q.n > q.ratio*q.wire.n {
		return n, errTooExpanded
	}
	return n, err
}

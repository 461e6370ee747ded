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
// of it and they are more than ratio times the compressed bytes consumed so
// far (compressed()), and from then on: a gzip bomb stops after about grace
// bytes, and what reached the disk is at most grace and one read buffer.
type ratioReader struct {
	r          io.Reader
	compressed func() int64
	n          int64
	grace      int64
	ratio      int64
}

func (q *ratioReader) Read(p []byte) (int, error) {
	if q.over() {
		return 0, errTooExpanded
	}
	n, err := q.r.Read(p)
	q.n += int64(n)
	if q.over() {
		return n, errTooExpanded
	}
	return n, err
}

// over tells whether n > ratio × compressed past the grace (divided, not
// multiplied: a huge ratio must not overflow).
func (q *ratioReader) over() bool {
	return q.n > q.grace && (q.n-1)/q.ratio >= q.compressed()
}

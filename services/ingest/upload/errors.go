package upload

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/klauspost/compress/flate"
	"github.com/klauspost/compress/gzip"

	"github.com/open-balena-builder/builder/platform/usererr"
)

// Error is a bad upload: the user's fault, answered with HTTP 400 or
// codes.InvalidArgument. Msg says what is wrong, and with which entry, in
// words a user can act on.
type Error = usererr.Error

func rejectf(format string, args ...any) *Error {
	return &Error{Msg: "upload rejected: " + fmt.Sprintf(format, args...)}
}

func errNotTar() *Error { return &Error{Msg: "upload is not a gzip-compressed tar archive"} }

func errEmpty() *Error { return &Error{Msg: "upload is empty: no project files"} }

// Returned by the limitReaders, and turned into an *Error by readErr.
var (
	errTooBigC     = errors.New("compressed limit crossed")
	errTooBigU     = errors.New("uncompressed limit crossed")
	errTooExpanded = errors.New("expansion ratio crossed")
)

// corrupt describes a format error met while reading the stream; after names
// the last entry read, if any.
func corrupt(err error, after string, inEntry bool) *Error {
	var detail string
	var flateErr flate.CorruptInputError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF) && inEntry:
		detail = "the data ends in the middle of entry " + quote(after)
	case errors.Is(err, io.ErrUnexpectedEOF):
		detail = "the data ends early"
	case errors.Is(err, gzip.ErrChecksum):
		detail = "the gzip checksum does not match"
	case errors.Is(err, gzip.ErrHeader):
		detail = "invalid gzip header"
	case errors.As(err, &flateErr):
		detail = "invalid gzip data"
	case errors.Is(err, tar.ErrHeader):
		detail = "invalid tar header"
	default:
		detail = strings.TrimPrefix(err.Error(), "archive/tar: ")
	}
	if after != "" && !inEntry {
		detail += " after entry " + quote(after)
	}
	return &Error{Msg: "upload is truncated or corrupt: " + detail}
}

// quote quotes a user-supplied name for a message, shortening very long ones.
func quote(name string) string {
	const max = 200
	if len(name) > max {
		cut := max
		for cut > 0 && name[cut]&0xC0 == 0x80 { // don't split a UTF-8 sequence
			cut--
		}
		return strconv.Quote(name[:cut]) + "…"
	}
	return strconv.Quote(name)
}

// size formats a byte count for a message: "8 GiB", "1.5 MiB", "512 bytes".
func size(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	f, u := float64(n)/1024, 0
	for f >= 1024 && u < len(units)-1 {
		f /= 1024
		u++
	}
	return strings.TrimSuffix(strconv.FormatFloat(f, 'f', 1, 64), ".0") + " " + units[u]
}

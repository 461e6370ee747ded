package engine

import (
	"fmt"
	"strings"
	"unicode/utf8"
)

// maxLineBytes bounds one line of build output: a step that prints without
// newlines must not grow a buffer without bound in the plugin process,
// which every job on the executor shares.
const maxLineBytes = 64 << 10

// lineBuffer splits streamed text into lines. It holds at most
// maxLineBytes of a line whose newline has not come yet: a longer line is
// given out cut, with a marker, and the rest of it, up to its newline, is
// dropped.
type lineBuffer struct {
	partial  string
	skipping bool // dropping the rest of a line that was cut
}

// add returns the lines s completes (and a line cut short).
func (b *lineBuffer) add(s string) []string {
	var out []string
	for {
		i := strings.IndexByte(s, '\n')
		if i < 0 {
			break
		}
		seg := s[:i]
		s = s[i+1:]
		if b.skipping {
			b.skipping = false
			continue
		}
		out = append(out, cutLine(b.join(seg)))
		b.partial = ""
	}
	if b.skipping {
		return out
	}
	b.partial = b.join(s)
	if len(b.partial) > maxLineBytes {
		out = append(out, cutLine(b.partial))
		b.partial, b.skipping = "", true
	}
	return out
}

// join returns the held part of the line followed by s, but never more
// than the line's cut needs (a character past the limit): a huge chunk of
// output is not copied whole.
func (b *lineBuffer) join(s string) string {
	if room := maxLineBytes + utf8.UTFMax - len(b.partial); len(s) > room {
		s = s[:room]
	}
	return b.partial + s
}

// rest returns what is held back of an unfinished line, and forgets it.
func (b *lineBuffer) rest() string {
	r := b.partial
	b.partial, b.skipping = "", false
	return r
}

// pending tells whether part of a line is held back.
func (b *lineBuffer) pending() bool { return b.partial != "" }

// cutLine shortens a line longer than maxLineBytes, at a character
// boundary, with a marker.
func cutLine(line string) string {
	if len(line) <= maxLineBytes {
		return line
	}
	end := maxLineBytes
	for end > 0 && !utf8.RuneStart(line[end]) {
		end--
	}
	return fmt.Sprintf("%s … [line cut: longer than %d KiB]", line[:end], maxLineBytes>>10)
}

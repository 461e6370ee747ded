package release

import (
	"encoding/json"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/open-balena-builder/builder/services/release/openbalena"
)

const (
	// maxPatchBody keeps an image PATCH well under the API's 512 kB body
	// limit (a larger body is answered 413 and the image stays running).
	maxPatchBody = openbalena.MaxBodyBytes - 32<<10
	// maxErrorMessage is image.error_message's limit in the API's model.
	maxErrorMessage = 300_000
	truncatedMark   = "[truncated]\n"
	truncatedSuffix = "\n[truncated]"
)

// fitImagePatch bounds p's texts: error_message to maxErrorMessage bytes,
// build_log to its tail of at most maxLog bytes of JSON, and then the whole
// JSON body to maxPatchBody. When the texts together are too big they share
// the room fairly: a text under the fair share stays whole, the bigger ones
// are cut to it (the log keeps its tail, the others their head).
func fitImagePatch(p openbalena.ImagePatch, maxLog int) openbalena.ImagePatch {
	p.ErrorMessage = truncateHead(p.ErrorMessage, maxErrorMessage)
	p.BuildLog = tailLines(p.BuildLog, maxLog)
	texts := []struct {
		field *string
		cut   func(string, int) string
	}{
		{&p.BuildLog, tailLines},
		{&p.ErrorMessage, headJSON},
		{&p.Dockerfile, headJSON},
	}
	sizes := make([]int, len(texts))
	bare := p
	bare.BuildLog, bare.ErrorMessage, bare.Dockerfile = "", "", ""
	room := maxPatchBody - bare.EncodedSize() - textKeysSlack
	for i, t := range texts {
		sizes[i] = encodedLen(*t.field)
	}
	share, ok := fairShare(sizes, room)
	if ok {
		return p
	}
	for i, t := range texts {
		if sizes[i] > share {
			*t.field = t.cut(*t.field, share)
		}
	}
	return p
}

// textKeysSlack covers the keys, quotes and commas of the texts.
const textKeysSlack = 64

// fairShare returns the largest cap c such that sum(min(size, c)) <= room,
// and ok true when every size fits whole (no cap needed).
func fairShare(sizes []int, room int) (share int, ok bool) {
	sorted := slices.Sorted(slices.Values(sizes))
	left := max(room, 0)
	for i, n := range sorted {
		rest := len(sorted) - i
		if n*rest > left {
			return left / rest, false
		}
		left -= n
	}
	return 0, true
}

// tailLines keeps the end of s in at most budget bytes of JSON string
// content, starting at a line, after a "[truncated]\n" mark.
func tailLines(s string, budget int) string {
	if jsonLen(s) <= budget {
		return s
	}
	budget -= jsonLen(truncatedMark)
	if budget <= 0 {
		return ""
	}
	i, used := len(s), 0
	for i > 0 {
		r, size := utf8.DecodeLastRuneInString(s[:i])
		c := jsonRuneLen(r, size)
		if used+c > budget {
			break
		}
		used += c
		i -= size
	}
	kept := s[i:]
	if s[i-1] != '\n' {
		// Drop the partial first line, unless it is the only line.
		if j := strings.IndexByte(kept, '\n'); j >= 0 && j+1 < len(kept) {
			kept = kept[j+1:]
		}
	}
	return truncatedMark + kept
}

// headJSON keeps the start of s in at most budget bytes of JSON string
// content, followed by a "\n[truncated]" mark.
func headJSON(s string, budget int) string {
	if jsonLen(s) <= budget {
		return s
	}
	budget -= jsonLen(truncatedSuffix)
	if budget <= 0 {
		return ""
	}
	return cutHead(s, budget, jsonRuneLen) + truncatedSuffix
}

// truncateHead keeps at most n bytes of s, on a rune boundary (bytes bound
// the API's length in characters too).
func truncateHead(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return cutHead(s, n, func(_ rune, size int) int { return size })
}

func cutHead(s string, budget int, cost func(r rune, size int) int) string {
	i, used := 0, 0
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		c := cost(r, size)
		if used+c > budget {
			break
		}
		used += c
		i += size
	}
	return s[:i]
}

// jsonLen bounds from above the bytes s takes inside a JSON string.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		n += jsonRuneLen(r, size)
		i += size
	}
	return n
}

// jsonRuneLen bounds from above what encoding/json writes for one rune.
func jsonRuneLen(r rune, size int) int {
	switch {
	case r == utf8.RuneError && size == 1:
		return 6 // \ufffd
	case r == '"' || r == '\\' || r == '\n' || r == '\r' || r == '\t':
		return 2
	case r < 0x20, r == '<', r == '>', r == '&', r == '\u2028', r == '\u2029':
		return 6 // \u00XX
	}
	return size
}

// encodedLen is the exact size of s as encoding/json writes it, quotes
// excluded.
func encodedLen(s string) int {
	raw, _ := json.Marshal(s)
	return len(raw) - 2
}

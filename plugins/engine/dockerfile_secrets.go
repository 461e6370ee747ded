package engine

import (
	"encoding/csv"
	"encoding/json"
	"path"
	"regexp"
	"strings"
	"unicode"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"
)

// This file rewrites a Dockerfile so that every RUN instruction mounts the
// build's secrets (balena build secrets: present at /run/secrets/<dest>
// during RUN, in no layer) without the user's Dockerfile declaring them:
//
//	RUN make  →  RUN --mount=type=secret,id=<dest>,target=/run/secrets/<dest> make
//
// It follows BuildKit's Dockerfile parser (frontend/dockerfile/parser) where
// that matters for finding instructions: parser directives at the top
// (# escape=` changes the line-continuation character), comments, line
// continuations (also across comment and blank lines), any-case keywords,
// leading whitespace, and heredoc bodies (RUN/COPY/ADD <<EOF, also under
// ONBUILD), whose lines are no instructions; heredoc markers are found with
// BuildKit's own shell lexer and ParseHeredoc. The flags go right after the
// RUN keyword: before existing --mount/--network flags, an exec-form JSON
// array or a heredoc marker. Everything else stays byte for byte, line
// endings included. ONBUILD RUN is left alone: it runs in some later build.
// The tests parse both Dockerfiles with BuildKit's parser and compare
// (table cases and FuzzAddSecretMounts).

// SecretsDir is where build secrets are mounted.
const SecretsDir = "/run/secrets/"

var (
	// directiveRE is a parser directive line (# escape=`), after leading
	// whitespace.
	directiveRE = regexp.MustCompile(`^#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$`)
	// knownDirectives are the directives BuildKit knows; any other line ends
	// the directives.
	knownDirectives = map[string]bool{"syntax": true, "escape": true, "check": true}
	// continuationRE matches a line ending in the escape character (and
	// blanks), for each escape character BuildKit allows. As in BuildKit, a
	// doubled escape character at the end is no continuation.
	continuationRE = map[byte]*regexp.Regexp{
		'\\': regexp.MustCompile(`([^\\])\\[ \t]*$|^\\[ \t]*$`),
		'`':  regexp.MustCompile("([^`])`[ \\t]*$|^`[ \\t]*$"),
	}
	// instrWhitespace separates an instruction's keyword from its arguments.
	instrWhitespace = regexp.MustCompile(`[\t\v\f\r ]+`)
)

// secretMountFlag is the RUN flag that mounts the secret dest.
func secretMountFlag(dest string) string {
	return "--mount=type=secret,id=" + dest + ",target=" + SecretsDir + dest
}

// dfSegment is the part of one physical line that belongs to a logical
// instruction: content starts at byte off of line.
type dfSegment struct {
	line    int
	off     int
	content string
}

// dfEdit inserts text at byte col of line.
type dfEdit struct {
	line, col int
	text      string
}

// AddSecretMounts returns dockerfile with the mount flag of every secret
// (dests: paths under /run/secrets) added to each RUN instruction. A RUN
// that already mounts a secret at one of those targets keeps its own mount
// there. A Dockerfile the parser would reject is rewritten as far as it
// goes; the build then reports the error.
func AddSecretMounts(dockerfile []byte, dests []string) []byte {
	if len(dests) == 0 {
		return dockerfile
	}
	lines := splitLinesKeepEnds(string(dockerfile))

	// text returns line i without its line ending and, for the first line,
	// without a byte-order mark; base is where text starts in the line.
	text := func(i int) (t string, base int) {
		t = strings.TrimRight(lines[i], "\r\n")
		if i == 0 && strings.HasPrefix(t, "\uFEFF") {
			return t[len("\uFEFF"):], len("\uFEFF")
		}
		return t, 0
	}

	// Parser directives: only at the very top, up to the first line that is
	// no known directive.
	escape := byte('\\')
	i := 0
	for ; i < len(lines); i++ {
		t, _ := text(i)
		m := directiveRE.FindStringSubmatch(trimLeftSpace(t))
		if m == nil || !knownDirectives[strings.ToLower(m[1])] {
			break
		}
		if strings.EqualFold(m[1], "escape") && (m[2] == "`" || m[2] == `\`) {
			escape = m[2][0]
		}
	}
	cont := continuationRE[escape]
	// trimCont removes a trailing continuation; more tells there was one.
	trimCont := func(s string) (content string, more bool) {
		loc := cont.FindStringSubmatchIndex(s)
		switch {
		case loc == nil:
			return s, false
		case loc[2] >= 0: // "x\": keep the x
			return s[:loc[3]], true
		default:
			return s[:loc[0]], true
		}
	}

	var edits []dfEdit
	for i < len(lines) {
		// The first line of an instruction. Comment and blank lines between
		// instructions are skipped.
		t, base := text(i)
		first := trimLeftSpace(t)
		i++
		if first == "" || first[0] == '#' {
			continue
		}
		content, more := trimCont(first)
		segs := []dfSegment{{line: i - 1, off: base + len(t) - len(first), content: content}}
		// Continuation lines; comment and blank lines among them are dropped.
		for more && i < len(lines) {
			t, base := text(i)
			i++
			if l := trimLeftSpace(t); l == "" || l[0] == '#' {
				continue
			}
			content, more = trimCont(t)
			segs = append(segs, dfSegment{line: i - 1, off: base, content: content})
		}
		var b strings.Builder
		for _, s := range segs {
			b.WriteString(s.content)
		}
		line := b.String()

		cmd, cmdEnd, args := splitInstruction(line)
		kw := strings.ToLower(cmd)
		if kw == "run" {
			if flags := missingSecretFlags(args, dests, escape); len(flags) > 0 {
				l, c := segmentPos(segs, cmdEnd)
				edits = append(edits, dfEdit{line: l, col: c, text: strings.Join(flags, " ")})
			}
		}
		if kw == "onbuild" {
			cmd, _, args = splitInstruction(args)
			kw = strings.ToLower(cmd)
		}
		// The bodies of the instruction's heredocs follow it: skip them.
		if (kw == "run" || kw == "copy" || kw == "add") && strings.Contains(line, "<<") && !isJSONForm(args, escape) {
			for _, h := range heredocs(line) {
				for i < len(lines) {
					t, _ := text(i)
					i++
					if h.Chomp {
						t = strings.TrimLeft(t, "\t")
					}
					if t == h.Name {
						break
					}
				}
			}
		}
	}
	if len(edits) == 0 {
		return dockerfile
	}

	var out strings.Builder
	out.Grow(len(dockerfile) + len(edits)*(len(edits[0].text)+2))
	next := 0
	for li, l := range lines {
		// A physical line holds at most one instruction keyword's end.
		if next < len(edits) && edits[next].line == li {
			e := edits[next]
			next++
			ins := " " + e.text
			if e.col < len(l) && !strings.ContainsRune(" \t\r\n", rune(l[e.col])) {
				ins += " "
			}
			out.WriteString(l[:e.col] + ins + l[e.col:])
			continue
		}
		out.WriteString(l)
	}
	return []byte(out.String())
}

// splitLinesKeepEnds splits s after each "\n"; the last line may lack one.
func splitLinesKeepEnds(s string) []string {
	var lines []string
	for s != "" {
		n := strings.IndexByte(s, '\n') + 1
		if n == 0 {
			n = len(s)
		}
		lines = append(lines, s[:n])
		s = s[n:]
	}
	return lines
}

func trimLeftSpace(s string) string { return strings.TrimLeftFunc(s, unicode.IsSpace) }

// splitInstruction splits a logical line into its keyword (ending at byte
// cmdEnd of line) and its arguments, as BuildKit's splitCommand does.
func splitInstruction(line string) (cmd string, cmdEnd int, args string) {
	start := len(line) - len(strings.TrimLeftFunc(line, unicode.IsSpace))
	rest := strings.TrimRightFunc(line[start:], unicode.IsSpace)
	parts := instrWhitespace.Split(rest, 2)
	cmd = parts[0]
	if len(parts) == 2 {
		args = parts[1]
	}
	return cmd, start + len(cmd), args
}

// segmentPos maps byte n of the joined logical line to a physical line and
// a byte offset in it. An offset at the end of a segment stays on that
// segment's line (before its continuation character).
func segmentPos(segs []dfSegment, n int) (line, col int) {
	for _, s := range segs {
		if n <= len(s.content) {
			return s.line, s.off + n
		}
		n -= len(s.content)
	}
	last := segs[len(segs)-1]
	return last.line, last.off + len(last.content)
}

// missingSecretFlags returns the mount flags of the dests that the RUN's
// own flags (in args) do not already mount at their targets.
func missingSecretFlags(args string, dests []string, escape byte) []string {
	have := map[string]bool{}
	flags, _ := extractFlags(args, escape)
	for _, f := range flags {
		if v, ok := strings.CutPrefix(f, "--mount="); ok {
			if target := secretMountTarget(v); target != "" {
				have[target] = true
			}
		}
	}
	var out []string
	for _, d := range dests {
		if !have[path.Clean(SecretsDir+d)] {
			out = append(out, secretMountFlag(d))
		}
	}
	if len(out) > 0 {
		// A tmpfs under the secrets keeps their names out of the layer: the
		// mount points BuildKit creates for them stay in the image otherwise.
		out = append([]string{secretsTmpfsFlag}, out...)
	}
	return out
}

// secretsTmpfsFlag mounts an empty tmpfs at /run/secrets for the RUN step.
const secretsTmpfsFlag = "--mount=type=tmpfs,target=/run/secrets"

// secretMountTarget returns the target of a --mount value of type secret
// ("" for other mounts), defaulted as BuildKit does: /run/secrets/<id>.
func secretMountTarget(v string) string {
	fields, err := csv.NewReader(strings.NewReader(v)).Read()
	if err != nil {
		return ""
	}
	var typ, id, target string
	for _, f := range fields {
		k, val, _ := strings.Cut(f, "=")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "type":
			typ = strings.ToLower(val)
		case "id":
			id = val
		case "target", "dst", "destination":
			target = val
		}
	}
	if typ != "secret" {
		return ""
	}
	if target == "" && id != "" {
		target = SecretsDir + id
	}
	if target == "" {
		return ""
	}
	return path.Clean(target)
}

// extractFlags splits the leading --flags off an instruction's arguments,
// as BuildKit's extractBuilderFlags does (quotes and the escape character
// inside a flag; "--" ends the flags).
func extractFlags(line string, escape byte) (flags []string, rest string) {
	var word strings.Builder
	inWord, blankOK := false, false
	var quote byte
	for pos := 0; pos <= len(line); pos++ {
		if !inWord {
			if pos == len(line) {
				break
			}
			if ch := line[pos]; ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f' {
				continue
			}
			if !strings.HasPrefix(line[pos:], "--") {
				return flags, line[pos:]
			}
			inWord = true
		}
		if pos == len(line) {
			if w := word.String(); w != "--" && (blankOK || w != "") {
				flags = append(flags, w)
			}
			break
		}
		ch := line[pos]
		switch {
		case quote != 0 && ch == quote:
			quote = 0
		case quote == 0 && (ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f'):
			w := word.String()
			if w == "--" {
				return flags, line[pos:]
			}
			if blankOK || w != "" {
				flags = append(flags, w)
			}
			word.Reset()
			inWord, blankOK = false, false
		case quote == 0 && (ch == '\'' || ch == '"'):
			quote, blankOK = ch, true
		case ch == escape:
			if pos+1 < len(line) {
				pos++
				word.WriteByte(line[pos])
			}
		default:
			word.WriteByte(ch)
		}
	}
	return flags, ""
}

// isJSONForm tells whether an instruction's arguments (after its flags)
// are the exec form, a JSON array of strings; such an instruction has no
// heredocs.
func isJSONForm(args string, escape byte) bool {
	_, rest := extractFlags(args, escape)
	rest = strings.TrimSpace(rest)
	if !strings.HasPrefix(rest, "[") {
		return false
	}
	var arr []string
	return json.Unmarshal([]byte(rest), &arr) == nil
}

// heredocs returns the heredocs a logical line opens, in order, found as
// BuildKit's parser finds them: the line split into words by its shell
// lexer (quotes and escapes kept, no variables), each word of the form
// [n]<<[-]NAME parsed by parser.ParseHeredoc. A line the lexer cannot
// split opens none.
func heredocs(line string) []*parser.Heredoc {
	lex := shell.NewLex('\\')
	lex.RawQuotes, lex.RawEscapes, lex.SkipUnsetEnv = true, true, true
	words, _ := lex.ProcessWords(line, noEnv{})
	var out []*parser.Heredoc
	for _, w := range words {
		h, err := parser.ParseHeredoc(w)
		if err != nil {
			return out // BuildKit rejects the Dockerfile here
		}
		if h != nil {
			out = append(out, h)
		}
	}
	return out
}

// noEnv is an empty environment for the shell lexer.
type noEnv struct{}

func (noEnv) Get(string) (string, bool) { return "", false }
func (noEnv) Keys() []string            { return nil }

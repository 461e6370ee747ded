package engine

import (
	"slices"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

const (
	mTok = "--mount=type=secret,id=app/token,target=/run/secrets/app/token"
	mKey = "--mount=type=secret,id=key,target=/run/secrets/key"
	mTmp = secretsTmpfsFlag
)

type secretMountsCase struct {
	name  string
	dests []string
	in    string
	want  string
}

func TestAddSecretMounts(t *testing.T) {
	for _, tc := range secretMountsCases {
		t.Run(tc.name, func(t *testing.T) {
			got := string(AddSecretMounts([]byte(tc.in), tc.dests))
			if got != tc.want {
				t.Fatalf("got:\n%s\nwant:\n%s", got, tc.want)
			}
			checkParsesSame(t, tc.in, got, tc.dests)
		})
	}
}

// FuzzAddSecretMounts checks any Dockerfile BuildKit's parser takes: the
// rewritten one parses to the same instructions, every RUN with the mounts.
// Seeds: the table's Dockerfiles and testdata/fuzz.
func FuzzAddSecretMounts(f *testing.F) {
	for _, tc := range secretMountsCases {
		f.Add(tc.in)
	}
	dests := []string{"k", "app/token"}
	f.Fuzz(func(t *testing.T, dockerfile string) {
		checkParsesSame(t, dockerfile, string(AddSecretMounts([]byte(dockerfile), dests)), dests)
	})
}

var secretMountsCases = func() []secretMountsCase {
	both := []string{"app/token", "key"}
	return []secretMountsCase{
		{"no secrets", nil, "FROM busybox\nRUN echo hi\n", "FROM busybox\nRUN echo hi\n"},
		{"one secret", []string{"app/token"},
			"FROM busybox\nRUN echo hi\n",
			"FROM busybox\nRUN " + mTmp + " " + mTok + " echo hi\n"},
		{"two secrets, every RUN", both,
			"FROM busybox\nRUN a\nCOPY . /src\nRUN b\n",
			"FROM busybox\nRUN " + mTmp + " " + mTok + " " + mKey + " a\nCOPY . /src\nRUN " + mTmp + " " + mTok + " " + mKey + " b\n"},
		{"any case, leading whitespace", []string{"key"},
			"FROM busybox\nrun a\n  Run b\n\tRUN c\n",
			"FROM busybox\nrun " + mTmp + " " + mKey + " a\n  Run " + mTmp + " " + mKey + " b\n\tRUN " + mTmp + " " + mKey + " c\n"},
		{"no RUN look-alikes", []string{"key"},
			"FROM busybox AS run\nRUNNER x\nENV run=1\nCMD run\nRUN[\"x\"]\n",
			"FROM busybox AS run\nRUNNER x\nENV run=1\nCMD run\nRUN[\"x\"]\n"},
		{"continuation lines are no instructions", []string{"key"},
			"FROM busybox\nRUN echo a \\\n  && echo b \\\nrun c\nRUN d\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " echo a \\\n  && echo b \\\nrun c\nRUN " + mTmp + " " + mKey + " d\n"},
		{"continuation across comments and blank lines", []string{"key"},
			"FROM busybox\nRUN echo a \\\n# run not me\n\n   \n  run b\nRUN c\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " echo a \\\n# run not me\n\n   \n  run b\nRUN " + mTmp + " " + mKey + " c\n"},
		{"continuation right after the keyword", []string{"key"},
			"FROM busybox\nRUN \\\n  echo a\nRUN\\\n  echo b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " \\\n  echo a\nRUN " + mTmp + " " + mKey + " \\\n  echo b\n"},
		{"keyword split across lines", []string{"key"},
			"FROM busybox\nRU\\\nN echo a\n",
			"FROM busybox\nRU\\\nN " + mTmp + " " + mKey + " echo a\n"},
		{"blanks after the continuation", []string{"key"},
			"FROM busybox\nRUN echo a \\  \t\nrun b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " echo a \\  \t\nrun b\n"},
		{"escaped backslash at the end is no continuation", []string{"key"},
			"FROM busybox\nRUN echo \\\\\nRUN b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " echo \\\\\nRUN " + mTmp + " " + mKey + " b\n"},
		{"existing flags stay", []string{"key"},
			"FROM busybox\nRUN --mount=type=cache,target=/root/.cache --network=none make\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " --mount=type=cache,target=/root/.cache --network=none make\n"},
		{"an existing mount of the same target is kept", both,
			"FROM busybox\nRUN --mount=type=secret,id=app/token make\nRUN --mount=type=secret,id=other,dst=/run/secrets/key make\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " --mount=type=secret,id=app/token make\nRUN " + mTmp + " " + mTok + " --mount=type=secret,id=other,dst=/run/secrets/key make\n"},
		{"exec form", []string{"key"},
			"FROM busybox\nRUN [\"sh\", \"-c\", \"echo hi\"]\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " [\"sh\", \"-c\", \"echo hi\"]\n"},
		{"exec form with << is no heredoc", []string{"key"},
			"FROM busybox\nRUN [\"echo\", \"<<EOF\"]\nRUN b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " [\"echo\", \"<<EOF\"]\nRUN " + mTmp + " " + mKey + " b\n"},
		{"syntax directive stays", []string{"key"},
			"# syntax=docker/dockerfile:1\nFROM busybox\nRUN a\n",
			"# syntax=docker/dockerfile:1\nFROM busybox\nRUN " + mTmp + " " + mKey + " a\n"},
		{"escape directive: backtick continues", []string{"key"},
			"# escape=`\nFROM busybox\nRUN echo a `\n  run b\nRUN echo c \\\nRUN d\n",
			"# escape=`\nFROM busybox\nRUN " + mTmp + " " + mKey + " echo a `\n  run b\nRUN " + mTmp + " " + mKey + " echo c \\\nRUN " + mTmp + " " + mKey + " d\n"},
		{"escape directive after syntax, any case", []string{"key"},
			"#syntax=docker/dockerfile:1\n  # ESCAPE = `\nFROM busybox\nRUN `\n  echo a\n",
			"#syntax=docker/dockerfile:1\n  # ESCAPE = `\nFROM busybox\nRUN " + mTmp + " " + mKey + " `\n  echo a\n"},
		{"escape after a comment is no directive", []string{"key"},
			"# hello\n# escape=`\nFROM busybox\nRUN a `\nRUN b\n",
			"# hello\n# escape=`\nFROM busybox\nRUN " + mTmp + " " + mKey + " a `\nRUN " + mTmp + " " + mKey + " b\n"},
		{"heredoc", []string{"key"},
			"FROM busybox\nRUN <<EOF\nrun inside\nEOF\nRUN after\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " <<EOF\nrun inside\nEOF\nRUN " + mTmp + " " + mKey + " after\n"},
		{"heredoc with flags, quoted name, chomp", []string{"key"},
			"FROM busybox\nRUN --network=none <<-'END' sh\n\trun x\n\tEND\nRUN y\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " --network=none <<-'END' sh\n\trun x\n\tEND\nRUN " + mTmp + " " + mKey + " y\n"},
		{"heredoc in the shell command", []string{"key"},
			"FROM busybox\nRUN cat <<EOF > /f\nRUN not me\nEOF\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " cat <<EOF > /f\nRUN not me\nEOF\n"},
		{"two heredocs", []string{"key"},
			"FROM busybox\nRUN <<A cat - <<\"B\"\nrun 1\nA\nrun 2\nB\nRUN z\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " <<A cat - <<\"B\"\nrun 1\nA\nrun 2\nB\nRUN " + mTmp + " " + mKey + " z\n"},
		{"heredoc after a continuation", []string{"key"},
			"FROM busybox\nRUN \\\n  <<EOF\nrun 1\nEOF\nRUN z\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " \\\n  <<EOF\nrun 1\nEOF\nRUN " + mTmp + " " + mKey + " z\n"},
		{"COPY heredoc body is no instruction", []string{"key"},
			"FROM busybox\nCOPY <<EOF /a.sh\nRUN not me\nEOF\nRUN real\n",
			"FROM busybox\nCOPY <<EOF /a.sh\nRUN not me\nEOF\nRUN " + mTmp + " " + mKey + " real\n"},
		{"<< inside a word and <<< are no heredoc", []string{"key"},
			"FROM busybox\nRUN echo $((1<<2)) x<<y; cat <<<\"s\"\nRUN b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " echo $((1<<2)) x<<y; cat <<<\"s\"\nRUN " + mTmp + " " + mKey + " b\n"},
		{"<< EOF with a blank is a heredoc", []string{"key"},
			"FROM busybox\nRUN cat << EOF\nrun x\nEOF\nRUN b\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " cat << EOF\nrun x\nEOF\nRUN " + mTmp + " " + mKey + " b\n"},
		{"unterminated quote: no heredoc", []string{"key"},
			"FROM busybox\nONBUILD RUN <<-E\"0\nrun x\n",
			"FROM busybox\nONBUILD RUN <<-E\"0\nrun " + mTmp + " " + mKey + " x\n"},
		{"ONBUILD RUN is left alone, its heredoc skipped", []string{"key"},
			"FROM busybox\nONBUILD RUN <<EOF\nRUN no\nEOF\nRUN yes\n",
			"FROM busybox\nONBUILD RUN <<EOF\nRUN no\nEOF\nRUN " + mTmp + " " + mKey + " yes\n"},
		{"CRLF line endings", []string{"key"},
			"FROM busybox\r\nRUN a \\\r\n  run b\r\nRUN c\r\n",
			"FROM busybox\r\nRUN " + mTmp + " " + mKey + " a \\\r\n  run b\r\nRUN " + mTmp + " " + mKey + " c\r\n"},
		{"byte-order mark", []string{"key"},
			"\uFEFFRUN a\n",
			"\uFEFFRUN " + mTmp + " " + mKey + " a\n"},
		{"no final newline", []string{"key"},
			"FROM busybox\nRUN a",
			"FROM busybox\nRUN " + mTmp + " " + mKey + " a"},
		{"tab after the keyword", []string{"key"},
			"FROM busybox\nRUN\techo a\n",
			"FROM busybox\nRUN " + mTmp + " " + mKey + "\techo a\n"},
		{"comments and blank lines between", []string{"key"},
			"FROM busybox\n\n# RUN commented\n   # run also\nRUN a\n",
			"FROM busybox\n\n# RUN commented\n   # run also\nRUN " + mTmp + " " + mKey + " a\n"},
	}
}()

// checkParsesSame parses the original and the rewritten Dockerfile with
// BuildKit's parser: the instructions must be the same, each top-level RUN
// with the secret flags (those it did not mount itself) in front of its
// own.
func checkParsesSame(t *testing.T, orig, rewritten string, dests []string) {
	t.Helper()
	a, err := parser.Parse(strings.NewReader(orig))
	if err != nil {
		return // not a valid Dockerfile to begin with
	}
	b, err := parser.Parse(strings.NewReader(rewritten))
	if err != nil {
		t.Fatalf("the rewritten Dockerfile does not parse: %v", err)
	}
	if len(a.AST.Children) != len(b.AST.Children) {
		t.Fatalf("%d instructions, rewritten %d", len(a.AST.Children), len(b.AST.Children))
	}
	for i, na := range a.AST.Children {
		nb := b.AST.Children[i]
		wantFlags := na.Flags
		if strings.EqualFold(na.Value, "run") {
			var add []string
			for _, d := range dests {
				f := secretMountFlag(d)
				if !slices.ContainsFunc(na.Flags, func(g string) bool {
					v, ok := strings.CutPrefix(g, "--mount=")
					return ok && secretMountTarget(v) == SecretsDir+d
				}) {
					add = append(add, f)
				}
			}
			if len(add) > 0 {
				add = append([]string{secretsTmpfsFlag}, add...)
			}
			wantFlags = append(add, na.Flags...)
		}
		if !slices.Equal(nb.Flags, wantFlags) {
			t.Errorf("instruction %d (%s): flags %q, want %q", i, na.Value, nb.Flags, wantFlags)
		}
		na.Flags, nb.Flags = nil, nil
		na.Original, nb.Original = "", ""
		if da, db := na.Dump(), nb.Dump(); da != db || !slices.Equal(na.Heredocs, nb.Heredocs) {
			t.Errorf("instruction %d differs:\n%s %v\n%s %v", i, da, na.Heredocs, db, nb.Heredocs)
		}
	}
}

func TestSecretMountTarget(t *testing.T) {
	for v, want := range map[string]string{
		"type=secret,id=a":                    "/run/secrets/a",
		"type=secret,id=a,target=/etc/x":      "/etc/x",
		"type=SECRET,id=a,destination=/x/./y": "/x/y",
		"type=cache,target=/run/secrets/a":    "",
		"id=a":                                "",
		`"type=secret,id=a"`:                  "",
	} {
		if got := secretMountTarget(v); got != want {
			t.Errorf("secretMountTarget(%q) = %q, want %q", v, got, want)
		}
	}
}

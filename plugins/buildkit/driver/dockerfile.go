package driver

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/distribution/reference"
	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/buildkit/frontend/dockerfile/shell"

	"github.com/open-balena-builder/builder/plugins/engine"
	"github.com/open-balena-builder/builder/plugins/sdk"
)

// syntaxArg is the build arg that names a Dockerfile frontend image.
const syntaxArg = "BUILDKIT_SYNTAX"

// checkFrontend refuses a build that asks for a frontend other than
// Docker's own Dockerfile frontend (a "# syntax=" directive or the
// BUILDKIT_SYNTAX build arg): a custom frontend could build anything the
// plugin never sees. Docker's own is served by buildkitd's built-in
// dockerfile.v0 (no image is pulled); ok tells the caller to say so.
func checkFrontend(jobID string, dockerfile []byte, buildArgs map[string]string) (asked string, err error) {
	asked = buildArgs[syntaxArg]
	if asked == "" {
		if ref, _, _, ok := parser.DetectSyntax(dockerfile); ok {
			asked = ref
		}
	}
	if asked == "" || engine.OfficialFrontend(strings.Fields(asked + " ")[0]) {
		return asked, nil
	}
	return asked, fmt.Errorf("job %s: the Dockerfile frontend %q is refused: this host builds with buildkitd's built-in Dockerfile frontend only: %w",
		jobID, asked, sdk.ErrInvalidArgument)
}

// argEnv is the build args as the shell lexer's environment.
type argEnv map[string]string

func (e argEnv) Get(k string) (string, bool) { v, ok := e[k]; return v, ok }
func (e argEnv) Keys() []string {
	out := make([]string, 0, len(e))
	for k := range e {
		out = append(out, k)
	}
	return out
}

// imageRefs returns the images a Dockerfile takes from a registry: FROM
// images, COPY --from and RUN --mount from= images that are no stage, with
// the global ARGs and the build args expanded as the frontend does. An
// unparsable Dockerfile yields nil: the frontend then reports the error.
func imageRefs(dockerfile []byte, buildArgs map[string]string) []string {
	res, err := parser.Parse(bytes.NewReader(dockerfile))
	if err != nil {
		return nil
	}
	stages, metaArgs, err := instructions.Parse(res.AST, nil)
	if err != nil {
		return nil
	}
	env := argEnv{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			if v, ok := buildArgs[kv.Key]; ok {
				env[kv.Key] = v
			} else if kv.Value != nil {
				lex := shell.NewLex(res.EscapeToken)
				if x, _, err := lex.ProcessWord(*kv.Value, env); err == nil {
					env[kv.Key] = x
				} else {
					env[kv.Key] = *kv.Value
				}
			}
		}
	}
	lex := shell.NewLex(res.EscapeToken)
	expand := func(s string) string {
		if x, _, err := lex.ProcessWord(s, env); err == nil {
			return x
		}
		return s
	}
	var out []string
	seen := map[string]bool{}
	names := map[string]bool{}
	add := func(s string, stageIdx int) {
		s = strings.TrimSpace(s)
		if s == "" || strings.EqualFold(s, "scratch") || names[strings.ToLower(s)] {
			return
		}
		if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < stageIdx {
			return // a stage by index
		}
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	for i, st := range stages {
		add(expand(st.BaseName), i)
		for _, cmd := range st.Commands {
			switch c := cmd.(type) {
			case *instructions.CopyCommand:
				add(expand(c.From), i+1)
			case *instructions.RunCommand:
				for _, m := range instructions.GetMounts(c) {
					add(m.From, i+1)
				}
			}
		}
		if st.Name != "" {
			names[strings.ToLower(st.Name)] = true
		}
	}
	return out
}

// pinned returns the refs named by digest (name@sha256:...), normalized.
func pinned(refs []string) []reference.Canonical {
	var out []reference.Canonical
	for _, r := range refs {
		named, err := reference.ParseNormalizedNamed(r)
		if err != nil {
			continue
		}
		if c, ok := named.(reference.Canonical); ok {
			out = append(out, c)
		}
	}
	return out
}

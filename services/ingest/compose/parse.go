package compose

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
)

// MaxFileSize is the largest compose file Parse reads. The API stores the
// composition in a 1 MB text column; a larger compose file cannot fit.
const MaxFileSize = 1 << 20

// projectName is compose-go's project name. balena does not use it, but
// compose-go puts it into network and volume names (removed again) and
// into ${COMPOSE_PROJECT_NAME}.
const projectName = "balena"

// parser holds one Parse call.
type parser struct {
	root    string // absolute, symlinks resolved
	file    string // its name in the root, for messages
	path    string // absolute path of the compose file
	content []byte
	warn    []string
}

// Parse loads the compose file (file is its name, "docker-compose.yml" or
// "docker-compose.yaml") from the project in root and applies balena's
// rules.
//
// Nothing comes from the builder's own environment: variables are
// interpolated from an empty environment (so ${VAR:-default} gives the
// default and ${VAR} gives ""), root/.env is not read, and env_file and
// label_file must be files inside root. include and extends.file are
// rejected before anything but the compose file is read.
//
// A composition the user must fix gives an *Error; any other error is the
// caller's (root unreadable, file missing).
func Parse(root, file string) (*Composition, error) {
	p, err := newParser(root, file)
	if err != nil {
		return nil, err
	}
	ctx := context.Background()

	// 1. The file alone, before any other file is read: include and
	// extends.file are refused here, so that later loads read nothing from
	// outside the compose file but env_file and label_file, which are
	// checked before they are read.
	model, err := p.loadModel(ctx, false)
	if err != nil {
		return nil, err
	}
	if err := p.checkFile(model); err != nil {
		return nil, err
	}

	// 2. The model with extends applied, as the user wrote it (no
	// defaults): the keys balena denies, and whether build.dockerfile was
	// given.
	model, err = p.loadModel(ctx, true)
	if err != nil {
		return nil, err
	}
	given, err := p.checkServices(model)
	if err != nil {
		return nil, err
	}

	// 3. The project, then env_file and label_file once their paths are
	// known to be inside root.
	project, err := p.loadProject(ctx)
	if err != nil {
		return nil, err
	}
	raw, err := projectMap(project)
	if err != nil {
		return nil, err
	}
	return p.normalize(raw, given)
}

func newParser(root, file string) (*parser, error) {
	abs, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	abs, err = filepath.EvalSymlinks(abs)
	if err != nil {
		return nil, err
	}
	// The file is in the root: relative paths in it are relative to the root.
	name := file
	if name == "" || name != filepath.Base(name) || !filepath.IsLocal(name) {
		return nil, fmt.Errorf("compose: %q is not the name of a file in the project root", file)
	}
	p := &parser{root: abs, file: name, path: filepath.Join(abs, name)}

	r, err := os.OpenRoot(abs)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	// os.Root: a compose file that is a symlink out of the project is not read.
	f, err := r.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxFileSize {
		return nil, &Error{Msg: fmt.Sprintf("%s: larger than %d bytes", p.file, MaxFileSize)}
	}
	p.content = b
	return p, nil
}

func (p *parser) details() types.ConfigDetails {
	return types.ConfigDetails{
		WorkingDir:  p.root,
		ConfigFiles: []types.ConfigFile{{Filename: p.path, Content: p.content}},
		// Explicit and empty: no interpolation from the builder's environment.
		Environment: types.Mapping{},
	}
}

// options common to every load: the project name, every service whatever
// its profiles (as balena: profiles are not a device concept), and no
// secondary file read by compose-go itself.
func (p *parser) options(more func(*loader.Options)) func(*loader.Options) {
	return func(o *loader.Options) {
		o.SetProjectName(projectName, true)
		o.Profiles = []string{"*"}
		o.SkipInclude = true
		o.SkipResolveEnvironment = true
		o.SkipResolveLabels = true
		more(o)
	}
}

// loadModel loads the compose file as a canonical model (compose-go's
// long syntax everywhere, relative paths made absolute), without defaults,
// normalization or consistency checks; with extends applied or not.
func (p *parser) loadModel(ctx context.Context, extends bool) (map[string]any, error) {
	m, err := loader.LoadModelWithContext(ctx, p.details(), p.options(func(o *loader.Options) {
		o.SkipExtends = !extends
		o.SkipNormalization = true
		o.SkipConsistencyCheck = true
		o.SkipDefaultValues = true
	}))
	if err != nil {
		return nil, p.composeErr(err)
	}
	return m, nil
}

// loadProject loads the compose-go project and resolves env_file and
// label_file, each checked to be inside the root first.
func (p *parser) loadProject(ctx context.Context) (*types.Project, error) {
	project, err := loader.LoadWithContext(ctx, p.details(), p.options(func(*loader.Options) {}))
	if err != nil {
		return nil, p.composeErr(err)
	}
	for _, name := range project.ServiceNames() {
		s := project.Services[name]
		specs := []*types.ContainerSpec{&s.ContainerSpec}
		for i := range s.PreStart {
			specs = append(specs, &s.PreStart[i].ContainerSpec)
		}
		w := where{p.file, "service", name}
		for _, spec := range specs {
			for _, f := range spec.EnvFiles {
				if err := p.inside(f.Path); err != nil {
					return nil, w.errorf("%q %s: %s", "env_file", p.show(f.Path), err)
				}
			}
			for _, f := range spec.LabelFiles {
				if err := p.inside(f); err != nil {
					return nil, w.errorf("%q %s: %s", "label_file", p.show(f), err)
				}
			}
		}
	}
	if project, err = project.WithServicesEnvironmentResolved(true); err != nil {
		return nil, p.composeErr(err)
	}
	if project, err = project.WithServicesLabelsResolved(true); err != nil {
		return nil, p.composeErr(err)
	}
	return project, nil
}

// projectMap is the project as balena's parser sees it: compose-go's JSON.
func projectMap(project *types.Project) (map[string]any, error) {
	b, err := project.MarshalJSON()
	if err != nil {
		return nil, err
	}
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var m map[string]any
	if err := d.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// composeErr turns a compose-go error into an *Error: every such error is
// about the file's content. The project directory is removed from the
// message, which names files relative to it.
func (p *parser) composeErr(err error) error {
	msg := strings.ReplaceAll(err.Error(), p.root+string(filepath.Separator), "")
	msg = strings.ReplaceAll(msg, p.root, ".")
	// jsonschema's words for a key the compose specification does not have.
	msg = falseSchema.ReplaceAllString(msg, `$1: unknown key "$2"`)
	if !strings.Contains(msg, p.file) {
		msg = p.file + ": " + msg
	}
	return &Error{Msg: msg}
}

var falseSchema = regexp.MustCompile(`([^\s:]+)\.([^.\s]+) false schema`)

// inside checks that path (absolute) is inside the root, following
// symlinks when it exists.
func (p *parser) inside(path string) error {
	if !p.within(path) {
		return errors.New("outside the project")
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return nil // missing: compose-go reports it (or skips it when not required)
	}
	if !p.within(real) {
		return errors.New("a symlink that leads outside the project")
	}
	return nil
}

func (p *parser) within(path string) bool {
	rel, err := filepath.Rel(p.root, path)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// show is how a path compose-go made absolute appears in a message,
// quoted: see display.
func (p *parser) show(path string) string { return fmt.Sprintf("%q", p.display(path)) }

// display shows an absolute path as the user likely wrote it: relative to
// the project when inside it ("./app") or just above it ("../other",
// "../../other"), as it is otherwise ("/home"). Messages then never show
// where the builder keeps the project.
func (p *parser) display(path string) string {
	if !filepath.IsAbs(path) {
		return path
	}
	rel, err := filepath.Rel(p.root, path)
	if err != nil {
		return path
	}
	if rel == "." {
		return "."
	}
	if filepath.IsLocal(rel) {
		return "./" + filepath.ToSlash(rel)
	}
	up := 0
	for _, e := range strings.Split(rel, string(filepath.Separator)) {
		if e == ".." {
			up++
		}
	}
	if up > 2 {
		return path
	}
	return filepath.ToSlash(rel)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

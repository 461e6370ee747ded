// Package project turns an uploaded balena project into a build plan: the
// services to build, each one's Dockerfile (resolved and templated) and the
// release composition.
package project

import (
	"fmt"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/open-balena-builder/builder/platform/usererr"
	"github.com/open-balena-builder/builder/services/ingest/compose"
	"github.com/open-balena-builder/builder/services/ingest/metadata"
)

// Target is what the project is built for.
type Target struct {
	// Fleet's app name, device type slug and CPU architecture slug.
	AppName    string
	DeviceType string
	Arch       string
	// Commit of the release (for %%BALENA_RELEASE_HASH%%); may be empty
	// when the plan is made before the release exists.
	Commit string
}

// Service is one service to build.
type Service struct {
	Name string
	// Context is the build context directory, relative to the project root.
	Context string
	// Dockerfile is the path of the resolved Dockerfile inside the context.
	Dockerfile string
	// Source is the file the Dockerfile came from (Dockerfile.template, ...).
	Source string
	// Content is the resolved (templated) Dockerfile.
	Content []byte
	// ProjectType is open-balena-api's image.project_type value.
	ProjectType string
	// Templated: Content differs from the file in the context and must
	// replace it when the context is served.
	Templated bool

	// PullImage is set for a compose service with only image:: the image
	// is pulled on the host and pushed as the release's image, no build.
	PullImage string
	// Target is the Dockerfile stage to build (compose build.target).
	Target string
	// BuildArgs are compose build.args with .balena/balena.yml
	// build-variables on top.
	BuildArgs map[string]string
	// BuildLabels are compose build.labels (labels of the built image).
	BuildLabels map[string]string
	// Labels and Environment become the image's image_label and
	// image_environment_variable rows.
	Labels      map[string]string
	Environment map[string]string
	// Contract is the image's sw.container contract (nil: none).
	Contract map[string]any
	// Secrets are mounted at /run/secrets/<dest> during RUN.
	Secrets []metadata.Secret
}

// Plan is the whole build.
type Plan struct {
	Services    []Service
	Composition map[string]any
	// Contract is the root balena.yml (the release contract), Semver its
	// version; nil and "" without one.
	Contract map[string]any
	Semver   string
	// RegistryConfig is the X-Registry-Config JSON of
	// .balena/registry-secrets.* ("" when none).
	RegistryConfig string
	// Warnings are shown to the user; the build goes on.
	Warnings []string
}

// ProjectTypeExternal is the image.project_type of a pulled image:-only service.
const ProjectTypeExternal = "external service"

// Error is a problem with the project the user can fix.
type Error = usererr.Error

func userErr(format string, args ...any) error { return &Error{Msg: fmt.Sprintf(format, args...)} }

// Project types as open-balena-api spells them.
const (
	TypeStandard     = "Standard Dockerfile"
	TypeTemplate     = "Dockerfile.template"
	TypeArchSpecific = "Architecture-specific Dockerfile"
)

// Resolve plans the build of the project extracted at root. dockerfilePath
// is balena push's --dockerfile (relative to root), or "".
func Resolve(root, dockerfilePath string, t Target) (*Plan, error) {
	md, err := metadata.Load(root)
	if err != nil {
		if _, ok := usererr.As(err); ok {
			return nil, err
		}
		return nil, fmt.Errorf("read build metadata: %w", err)
	}
	plan := &Plan{Contract: md.Contract, Semver: md.Semver, RegistryConfig: md.RegistryConfigJSON()}
	file := composeFile(root)
	if file == "" {
		svc, err := resolveDockerfile(root, ".", dockerfilePath, t)
		if err != nil {
			return nil, err
		}
		svc.Name = "main"
		plan.Services = []Service{*svc}
		plan.Composition = DefaultComposition(dockerfilePath)
	} else {
		if dockerfilePath != "" {
			return nil, userErr("--dockerfile cannot be used with %s: set build.dockerfile on the service instead", file)
		}
		comp, err := compose.Parse(root, file)
		if err != nil {
			if _, ok := usererr.As(err); ok {
				return nil, err
			}
			return nil, fmt.Errorf("read %s: %w", file, err)
		}
		plan.Composition, plan.Warnings = comp.Raw, comp.Warnings
		for _, cs := range comp.Services {
			svc := &Service{PullImage: cs.Image, ProjectType: ProjectTypeExternal}
			if cs.Build != nil {
				if svc, err = resolveDockerfile(root, cs.Build.Context, cs.Build.Dockerfile, t); err != nil {
					return nil, &Error{Msg: fmt.Sprintf("%s: service %q: %v", file, cs.Name, err)}
				}
				svc.Target, svc.BuildLabels = cs.Build.Target, cs.Build.Labels
				svc.BuildArgs = maps.Clone(cs.Build.Args)
			}
			svc.Name, svc.Labels, svc.Environment, svc.Contract = cs.Name, cs.Labels, cs.Environment, cs.Contract
			plan.Services = append(plan.Services, *svc)
		}
	}
	known := map[string]bool{}
	for i := range plan.Services {
		svc := &plan.Services[i]
		known[svc.Name] = true
		if svc.PullImage != "" {
			continue
		}
		if svc.BuildArgs == nil {
			svc.BuildArgs = map[string]string{}
		}
		maps.Copy(svc.BuildArgs, md.Variables.For(svc.Name)) // balena.yml wins over compose build.args
		svc.Secrets = md.Secrets.For(svc.Name)
	}
	for _, name := range slices.Sorted(maps.Keys(md.Variables.Services)) {
		if !known[name] {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf(".balena/balena.yml: build-variables.services.%s: no such service in the project", name))
		}
	}
	for _, name := range slices.Sorted(maps.Keys(md.Secrets.Services)) {
		if !known[name] {
			plan.Warnings = append(plan.Warnings, fmt.Sprintf(".balena/balena.yml: build-secrets.services.%s: no such service in the project", name))
		}
	}
	return plan, nil
}

// composeFile names the project's compose file, or "".
func composeFile(root string) string {
	for _, name := range []string{"docker-compose.yml", "docker-compose.yaml"} {
		if isFile(filepath.Join(root, name)) {
			return name
		}
	}
	return ""
}

// resolveDockerfile finds a service's Dockerfile in this order:
// --dockerfile (or its .template), Dockerfile.<device-type>,
// Dockerfile.<arch>, Dockerfile.template, Dockerfile.
func resolveDockerfile(root, ctxDir, explicit string, t Target) (*Service, error) {
	dir := filepath.Join(root, filepath.FromSlash(ctxDir))
	if explicit != "" {
		clean := path.Clean(filepath.ToSlash(explicit))
		if path.IsAbs(clean) || clean == ".." || strings.HasPrefix(clean, "../") {
			return nil, userErr("--dockerfile %q must be a path inside the project", explicit)
		}
		switch {
		case isFile(filepath.Join(dir, clean)):
			typ := TypeStandard
			if strings.HasSuffix(clean, ".template") {
				typ = TypeTemplate
			}
			return &Service{Context: ctxDir, Dockerfile: clean, Source: clean, ProjectType: typ}, nil
		case isFile(filepath.Join(dir, clean+".template")):
			return &Service{Context: ctxDir, Dockerfile: clean, Source: clean + ".template", ProjectType: TypeTemplate}, nil
		}
		return nil, userErr("--dockerfile %q: no such file in the project", explicit)
	}
	candidates := []struct{ name, typ string }{
		{"Dockerfile." + t.DeviceType, TypeArchSpecific},
		{"Dockerfile." + t.Arch, TypeArchSpecific},
		{"Dockerfile.template", TypeTemplate},
		{"Dockerfile", TypeStandard},
	}
	for _, c := range candidates {
		if strings.HasSuffix(c.name, ".") || !isFile(filepath.Join(dir, c.name)) {
			continue
		}
		df := c.name
		if c.typ != TypeStandard {
			df = "Dockerfile"
		}
		return &Service{Context: ctxDir, Dockerfile: df, Source: c.name, ProjectType: c.typ}, nil
	}
	if isFile(filepath.Join(dir, "package.json")) {
		return nil, userErr("%s: package.json (NodeJS) projects without a Dockerfile are not supported: add a Dockerfile", where(ctxDir))
	}
	return nil, userErr("%s: no Dockerfile found (looked for Dockerfile.%s, Dockerfile.%s, Dockerfile.template, Dockerfile)", where(ctxDir), t.DeviceType, t.Arch)
}

func where(ctxDir string) string {
	if ctxDir == "." {
		return "project root"
	}
	return ctxDir
}

// Service returns the named service, or nil.
func (p *Plan) Service(name string) *Service {
	for i := range p.Services {
		if p.Services[i].Name == name {
			return &p.Services[i]
		}
	}
	return nil
}

// Render reads every service's Dockerfile and applies the template
// variables; call it once the release (and its commit) exists.
func (p *Plan) Render(root string, t Target) error {
	for i := range p.Services {
		if p.Services[i].PullImage != "" {
			continue
		}
		if err := p.Services[i].load(root, t); err != nil {
			return err
		}
	}
	return nil
}

// load reads the service's Dockerfile; every resolved file except a plain
// Dockerfile is a template (as in balena's resolvers).
func (s *Service) load(root string, t Target) error {
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(s.Context), filepath.FromSlash(s.Source)))
	if err != nil {
		return fmt.Errorf("read %s: %w", s.Source, err)
	}
	if s.ProjectType == TypeStandard {
		s.Content = b
		return nil
	}
	s.Content = []byte(Template(string(b), s.Name, t))
	s.Templated = true
	return nil
}

// Template replaces balena's Dockerfile template variables.
func Template(in, service string, t Target) string {
	vars := map[string]string{
		"ARCH":         t.Arch,
		"MACHINE_NAME": t.DeviceType,
		"SERVICE_NAME": service,
		"RELEASE_HASH": t.Commit,
		"APP_NAME":     t.AppName,
	}
	pairs := make([]string, 0, 4*len(vars))
	for k, v := range vars {
		pairs = append(pairs, "%%BALENA_"+k+"%%", v, "%%RESIN_"+k+"%%", v)
	}
	return strings.NewReplacer(pairs...).Replace(in)
}

// DefaultComposition is the composition balena uses for a project without
// a compose file (@balena/compose defaultComposition).
func DefaultComposition(dockerfile string) map[string]any {
	build := map[string]any{"context": "."}
	if dockerfile != "" {
		build["dockerfile"] = dockerfile
	}
	return map[string]any{
		"networks": map[string]any{},
		"volumes":  map[string]any{"resin-data": map[string]any{}},
		"services": map[string]any{
			"main": map[string]any{
				"build":        build,
				"privileged":   true,
				"tty":          true,
				"restart":      "always",
				"network_mode": "host",
				"volumes":      []any{"resin-data:/data"},
				"labels": map[string]any{
					"io.resin.features.kernel-modules": "1",
					"io.resin.features.firmware":       "1",
					"io.resin.features.dbus":           "1",
					"io.resin.features.supervisor-api": "1",
					"io.resin.features.resin-api":      "1",
				},
			},
		},
	}
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

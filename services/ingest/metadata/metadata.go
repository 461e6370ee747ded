// Package metadata reads the build metadata of an uploaded balena project:
// the .balena/ (or legacy .resin/) folder balena-cli always ships in the
// tar (balena.yml build variables and build secrets, registry-secrets.json)
// and the release contract in the project's root balena.yml.
//
// The rules follow @balena/compose's BuildMetadata (multibuild/
// build-metadata.ts) and balena-cli's getContractContent, validated more
// strictly: every problem the user can fix is an *Error naming the file and
// the key. Nothing here logs; String and the fmt/slog/JSON forms of the
// types that hold secrets never show a secret's content or a password.
package metadata

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strings"

	"github.com/open-balena-builder/builder/platform/usererr"
)

// Limits on what a project may carry.
const (
	// MaxSecretSize bounds one build secret file.
	MaxSecretSize = 1 << 20
	// MaxSecrets bounds the number of build-secrets entries (global and
	// all services together).
	MaxSecrets = 100
	// MaxFileSize bounds balena.yml, registry-secrets.* and the root
	// contract.
	MaxFileSize = 1 << 20
)

// Metadata is what Load found. The zero value means "no metadata".
type Metadata struct {
	// Variables are the build-variables of .balena/balena.yml: build
	// args, overriding compose build.args.
	Variables Variables
	// Secrets are the build-secrets of .balena/balena.yml with their
	// contents, to mount at /run/secrets/<Dest> during RUN only.
	Secrets SecretSet
	// RegistryAuth holds the registry-secrets by registry host; Docker
	// Hub is under DockerHubKey. Nil without registry secrets.
	RegistryAuth map[string]RegistryCredential
	// Contract is the project-root balena.yml as a JSON-compatible
	// object (numbers as json.Number), for release.contract; nil without
	// one.
	Contract map[string]any
	// Semver is the contract's version in canonical form (no "v"
	// prefix), for the release's semver; "" when there is none.
	Semver string
}

// Error is a problem with the project's metadata that the user must fix.
// Msg names the file and the key; several problems are on separate lines.
type Error = usererr.Error

func userErr(format string, args ...any) *Error {
	return &Error{Msg: fmt.Sprintf(format, args...)}
}

// maxProblems caps how many problems one Error lists.
const maxProblems = 20

// problems collects the user errors of one file, in a stable order.
type problems struct{ list []string }

func (p *problems) add(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !slices.Contains(p.list, msg) { // a global conflict is seen once per service
		p.list = append(p.list, msg)
	}
}

func (p *problems) err() error {
	switch n := len(p.list); {
	case n == 0:
		return nil
	case n > maxProblems:
		return &Error{Msg: strings.Join(p.list[:maxProblems], "\n") + fmt.Sprintf("\n… and %d more problems", n-maxProblems)}
	default:
		return &Error{Msg: strings.Join(p.list, "\n")}
	}
}

// Load reads the build metadata of the project extracted at root.
//
// The metadata folder is .balena/ or .resin/ (both → error). In it, at most
// one of balena.yml, balena.yaml, balena.json, resin.yml, resin.yaml,
// resin.json (either folder accepts all six names, as @balena/compose does)
// gives build-variables and build-secrets; unknown top-level keys are
// ignored. Secrets are read from <folder>/secrets/. Registry secrets come
// from registry-secrets.json, .yml or .yaml in the folder (when several
// exist the last of that list wins, as in @balena/compose: balena-cli
// appends its own registry-secrets.json to the tar). The release contract
// is the project root's balena.yml, balena.yaml or balena.json.
//
// Problems the user can fix are returned as *Error; anything else (an I/O
// error on our own disk) as a plain error.
func Load(root string) (*Metadata, error) {
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("open project: %w", err)
	}
	defer r.Close()

	m := &Metadata{}
	dir, err := metadataDir(r)
	if err != nil {
		return nil, err
	}
	if dir != "" {
		mr, err := r.OpenRoot(dir)
		if err != nil {
			return nil, userErr("%s/: cannot be opened: %v", dir, unwrapPath(err))
		}
		defer mr.Close()
		if err := loadBuildFile(m, mr, dir); err != nil {
			return nil, err
		}
		if err := loadRegistrySecrets(m, mr, dir); err != nil {
			return nil, err
		}
	}
	if err := loadContract(m, r); err != nil {
		return nil, err
	}
	return m, nil
}

// metadataDir returns ".balena", ".resin" or "" (none).
func metadataDir(r *os.Root) (string, error) {
	var found []string
	for _, d := range []string{".balena", ".resin"} {
		st, err := r.Stat(d)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			return "", userErr("%s/: cannot be read: %v", d, unwrapPath(err))
		case !st.IsDir():
			return "", userErr("%s must be a folder", d)
		}
		found = append(found, d)
	}
	switch len(found) {
	case 0:
		return "", nil
	case 1:
		return found[0], nil
	}
	msg := "the project has both .balena/ and .resin/ folders: keep only .balena/"
	if onlyRegistrySecrets(r) {
		// balena-cli adds .balena/registry-secrets.json to the tar of any
		// project when registry secrets are configured; balena's builder
		// rejects this combination too.
		msg += " (balena push added .balena/registry-secrets.json because registry secrets are configured: rename .resin/ to .balena/)"
	}
	return "", &Error{Msg: msg}
}

// onlyRegistrySecrets tells whether .balena/ holds nothing but
// registry-secrets.json.
func onlyRegistrySecrets(r *os.Root) bool {
	f, err := r.Open(".balena")
	if err != nil {
		return false
	}
	defer f.Close()
	names, err := f.Readdirnames(3)
	return err == nil && len(names) == 1 && names[0] == "registry-secrets.json"
}

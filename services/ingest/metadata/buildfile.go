package metadata

import (
	"os"
	"strings"
)

// buildFileNames are the names of the build metadata file, in either
// metadata folder (@balena/compose accepts all six in both).
var buildFileNames = []string{"balena.yml", "balena.yaml", "balena.json", "resin.yml", "resin.yaml", "resin.json"}

// loadBuildFile reads build-variables and build-secrets from the folder's
// balena.yml (or one of its other names), if any.
func loadBuildFile(m *Metadata, mr *os.Root, dir string) error {
	found := present(mr, buildFileNames...)
	switch len(found) {
	case 0:
		return nil
	case 1:
	default:
		for i := range found {
			found[i] = dir + "/" + found[i]
		}
		return userErr("several build metadata files: %s; keep only one", strings.Join(found, ", "))
	}
	shown := dir + "/" + found[0]
	data, err := readFile(mr, found[0], shown, MaxFileSize)
	if err != nil {
		return err
	}
	v, err := decode(data, shown, isJSONName(found[0]), false)
	if err != nil {
		return err
	}
	var top map[string]any
	switch x := v.(type) {
	case nil:
		return nil // an empty file
	case map[string]any:
		top = x
	default:
		return userErr("%s: must be a mapping (build-variables, build-secrets), not %s", shown, describe(v))
	}
	// Other top-level keys are balena's or the user's: ignored.
	var p problems
	m.Variables = parseVariables(top["build-variables"], "build-variables", &p, shown)
	refs := parseSecrets(top["build-secrets"], "build-secrets", &p, shown)
	if err := p.err(); err != nil {
		return err
	}
	m.Secrets, err = readSecrets(refs, mr, dir, shown)
	return err
}

package metadata

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// contractFileNames are the release contract's names at the project root.
var contractFileNames = []string{"balena.yml", "balena.yaml", "balena.json"}

// ContractTypes are the release contract types balena-cli accepts.
var ContractTypes = []string{"sw.application", "sw.block"}

// loadContract reads the project-root balena.yml (the release contract,
// not .balena/balena.yml): its type must be one of ContractTypes and its
// version, if any, a valid semver.
func loadContract(m *Metadata, r *os.Root) error {
	found := present(r, contractFileNames...)
	switch len(found) {
	case 0:
		return nil
	case 1:
	default:
		return userErr("several release contract files at the project root: %s; keep only one", strings.Join(found, ", "))
	}
	shown := found[0]
	data, err := readFile(r, shown, shown, MaxFileSize)
	if err != nil {
		return err
	}
	v, err := decode(data, shown, isJSONName(shown), false)
	if err != nil {
		return err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return userErr("%s: the release contract must be a mapping with a type (%s), not %s", shown, strings.Join(ContractTypes, " or "), describe(v))
	}
	switch t, ok := top["type"].(string); {
	case top["type"] == nil:
		return userErr("%s: type: missing; the release contract needs a top-level type: %s", shown, strings.Join(ContractTypes, " or "))
	case !ok:
		return userErr("%s: type: must be a string (%s), not %s", shown, strings.Join(ContractTypes, " or "), describe(top["type"]))
	case !slices.Contains(ContractTypes, t):
		return userErr("%s: type: %q is not an allowed release type (%s)", shown, t, strings.Join(ContractTypes, ", "))
	}
	if raw, present := top["version"]; present && raw != nil {
		s, ok := raw.(string)
		if !ok {
			return userErr("%s: version: must be a semver string such as \"1.2.3\", not %s (quote it)", shown, describe(raw))
		}
		if m.Semver, err = parseSemver(s); err != nil {
			return userErr("%s: version: %q is not a valid semver: %v", shown, s, err)
		}
	}
	// One shape for YAML and JSON: numbers as json.Number, timestamps as
	// RFC 3339 strings.
	b, err := json.Marshal(top)
	if err != nil {
		return userErr("%s: cannot be stored as JSON: %v", shown, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m.Contract); err != nil {
		return fmt.Errorf("%s: %w", shown, err)
	}
	return nil
}

// maxSemverLen is node-semver's MAX_LENGTH.
const maxSemverLen = 256

// maxSemverPart: open-balena-api stores major, minor and patch in integer
// columns.
const maxSemverPart = 1<<31 - 1

// parseSemver checks a SemVer 2.0.0 version as node-semver's valid() does
// (surrounding spaces and one leading "v" allowed) and returns it in
// canonical form.
func parseSemver(s string) (string, error) {
	v := strings.TrimSpace(s)
	if len(v) > maxSemverLen {
		return "", fmt.Errorf("longer than %d characters", maxSemverLen)
	}
	v = strings.TrimPrefix(v, "v")
	rest, build, hasBuild := strings.Cut(v, "+")
	core, pre, hasPre := strings.Cut(rest, "-")
	nums := strings.Split(core, ".")
	if len(nums) != 3 {
		return "", fmt.Errorf("expected MAJOR.MINOR.PATCH")
	}
	for i, n := range nums {
		if err := numericID(n); err != nil {
			return "", fmt.Errorf("%s: %v", [...]string{"major", "minor", "patch"}[i], err)
		}
		if x, err := strconv.ParseUint(n, 10, 64); err != nil || x > maxSemverPart {
			return "", fmt.Errorf("%s is over %d", [...]string{"major", "minor", "patch"}[i], maxSemverPart)
		}
	}
	if hasPre {
		for id := range strings.SplitSeq(pre, ".") {
			if !alnumID(id) {
				return "", fmt.Errorf("pre-release identifier %q must be [0-9A-Za-z-]+", id)
			}
			if allDigits(id) {
				if err := numericID(id); err != nil {
					return "", fmt.Errorf("pre-release identifier %q: %v", id, err)
				}
			}
		}
	}
	if hasBuild {
		for id := range strings.SplitSeq(build, ".") {
			if !alnumID(id) {
				return "", fmt.Errorf("build identifier %q must be [0-9A-Za-z-]+", id)
			}
		}
	}
	return v, nil
}

func numericID(s string) error {
	switch {
	case s == "" || !allDigits(s):
		return fmt.Errorf("%q is not a number", s)
	case len(s) > 1 && s[0] == '0':
		return fmt.Errorf("%q has a leading zero", s)
	}
	return nil
}

func allDigits(s string) bool {
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

func alnumID(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '-') {
			return false
		}
	}
	return true
}

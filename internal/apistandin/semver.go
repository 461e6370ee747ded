package apistandin

import (
	"regexp"
	"strconv"
	"strings"
)

// semverValue is a parsed version, as node-semver's parse() returns it.
type semverValue struct {
	major, minor, patch int64
	prerelease          []string
	build               []string
}

// semverPattern is node-semver's strict FULL regexp.
func semverPattern() *regexp.Regexp {
	const (
		num     = `0|[1-9]\d*`
		nonNum  = `\d*[a-zA-Z-][a-zA-Z0-9-]*`
		preID   = `(?:` + num + `|` + nonNum + `)`
		buildID = `[0-9A-Za-z-]+`
	)
	return regexp.MustCompile(`^v?(` + num + `)\.(` + num + `)\.(` + num + `)` +
		`(?:-(` + preID + `(?:\.` + preID + `)*))?` +
		`(?:\+(` + buildID + `(?:\.` + buildID + `)*))?$`)
}

// parseSemver mirrors node-semver's parse(v) (not loose): nil for anything
// that is not a valid version string.
func (s *Server) parseSemver(v any) *semverValue {
	str, ok := v.(string)
	if !ok || len(str) > 256 {
		return nil
	}
	m := s.semverRE.FindStringSubmatch(strings.TrimSpace(str))
	if m == nil {
		return nil
	}
	const maxSafe = 1<<53 - 1
	var parts [3]int64
	for i := 0; i < 3; i++ {
		n, err := strconv.ParseInt(m[i+1], 10, 64)
		if err != nil || n > maxSafe {
			return nil
		}
		parts[i] = n
	}
	sv := &semverValue{major: parts[0], minor: parts[1], patch: parts[2]}
	if m[4] != "" {
		sv.prerelease = strings.Split(m[4], ".")
	}
	if m[5] != "" {
		sv.build = strings.Split(m[5], ".")
	}
	return sv
}
